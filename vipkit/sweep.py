"""``vipkit sweep``: every run of a sweep (``vipkit.sweep_plan``) as an ordinary run folder, one after another in this
process (or ``--jobs N`` at a time, each in a process of its own: ``vipkit.sweep_jobs``), then the statistics
(``vipkit.sweep_summary``), tables (``vipkit.sweep_report``) and plots (``vipkit.sweep_plots``).

Layout of ``OUT``::

    runs/VARIANT/seed-N/   a run folder of ``vipkit compress`` (its recipe.toml names the --set options that made it)
    sweep.json             the plan, every run (finished, failed or pending) with its measures, the statistics
    sweep.md, sweep.csv    tables; one row per run with every measure
    sweep.png, curve.png   bars with intervals; the objective over the swept key (with a [curve])
    .vipkit.lock           one process per sweep folder (vipkit.run_lock)

A run whose results.json holds its recipe's fingerprint is finished: it is read, never run again. Any other run goes
through the engine, which resumes it from its last finished stage or checkpoint, so a killed sweep loses at most the
work since the last checkpoint of the run it was in. A run that fails keeps its one-paragraph error in sweep.json
and sweep.md while the others go on; the command then exits ``SOME_RUNS_FAILED``, as ``vipkit bench`` does.
"""

from __future__ import annotations

import gc
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vipkit.atomic import write_json, write_text
from vipkit.errors import VipkitError
from vipkit.run_lock import LOCK_NAME, FolderLock
from vipkit.rundir import RunDirectory, finished_results
from vipkit.sweep_plan import SweepPlan, SweepRun
from vipkit.sweep_stats import CONFIDENCE
from vipkit.sweep_summary import OF_TEACHER, run_measures, summarize

Log = Callable[[str], None]
FORMAT = 1
SOME_RUNS_FAILED = 3
"""Exit code of ``vipkit sweep`` when it finished but some runs failed (their errors are in sweep.md and sweep.json;
the statistics cover the others): the same as ``vipkit bench``'s for failed rows."""


def run_sweep(plan: SweepPlan, out: Path, log: Log, debug: bool = False, jobs: int = 1) -> dict[str, Any]:
    """Run (or reuse, or resume) every run of ``plan`` into ``out``, ``jobs`` at a time (``vipkit.sweep_jobs``);
    returns what sweep.json holds."""
    from vipkit.distributed import launched_world_size

    if launched_world_size() > 1:
        raise VipkitError(
            "vipkit sweep starts its runs itself (one after another, or --jobs N at a time); start it without "
            "torchrun or accelerate launch (to spread one run over several processes, run `vipkit compress` on a run "
            "folder under them)"
        )
    check_folder(plan, out)
    with FolderLock.acquire(out, "sweep"):
        check_folder(plan, out)  # again, holding the lock: another sweep may have written meanwhile
        (out / "runs").mkdir(exist_ok=True)
        records = [pending_record(run, out) for run in plan.runs]
        finished = {run.label: finished_results(run.folder(out), run.recipe.fingerprint()) for run in plan.runs}
        todo = sum(results is None for results in finished.values())
        log(
            f"sweep: {len(plan.runs)} runs ({len(plan.variants)} variants × {len(plan.seeds)} seeds) in {out}; "
            f"{len(plan.runs) - todo} finished earlier (reused), {todo} to run or resume"
        )
        spent: list[float] = []

        wheres = [f"run {index + 1}/{len(plan.runs)}: {run.label}" for index, run in enumerate(plan.runs)]

        def finished_run(index: int, record: dict[str, Any], seconds: float) -> None:
            records[index] |= record
            spent.append(seconds)
            left = todo - len(spent)
            eta = f"; about {_minutes(left * sum(spent) / len(spent) / min(jobs, left))} left" if left > 0 else ""
            if record["status"] == "failed":
                log(f"{wheres[index]}: failed after {_minutes(seconds)}: {record['error']}{eta}")
            elif record["status"] == "finished":
                log(f"{wheres[index]}: done in {_minutes(seconds)}: {_headline(records[index])}{eta}")
            write_outputs(plan, records, out, plots=False)  # sweep.md grows as the runs finish

        try:
            waiting = []
            for index, run in enumerate(plan.runs):
                if finished[run.label] is not None:
                    records[index] |= _finished_record(finished[run.label], reused=True)
                    log(f"{wheres[index]}: finished earlier, reused: {_headline(records[index])}")
                else:
                    waiting.append((index, wheres[index], run))
            if jobs > 1 and len(waiting) > 1:
                from vipkit.sweep_jobs import run_in_processes, threads_per_job

                log(
                    f"sweep: {min(jobs, len(waiting))} runs at a time, each in a process of its own with "
                    f"{threads_per_job(jobs)} torch thread(s)"
                )
                run_in_processes(waiting, out, jobs, log, debug, finished_run)
            else:
                for index, where, run in waiting:
                    started = time.perf_counter()
                    finished_run(index, run_one(run, out, where, log, debug), time.perf_counter() - started)
        finally:
            sweep = write_outputs(plan, records, out, plots=not any(r["status"] == "pending" for r in records))
    return sweep


def check_folder(plan: SweepPlan, out: Path) -> None:
    """Refuse ``out`` before anything is built: a file, a folder of other things, or run folders that cannot be
    resumed as the sweep's runs (another recipe, damaged records), each named with its fix."""
    if out.exists() and not out.is_dir():
        raise VipkitError(f"--out {out} is a file, not a folder; choose a folder for the sweep")
    if out.exists() and any(p.name != LOCK_NAME for p in out.iterdir()) and not (out / "runs").is_dir():
        raise VipkitError(
            f"{out} exists, is not empty and holds no vipkit sweep (no runs/ folder); choose another --out folder"
        )
    problems = []
    for run in plan.runs:
        try:
            RunDirectory.check(run.folder(out), run.recipe)
        except VipkitError as exc:
            problems.append(f"{run.label}: {exc}")
    if problems:
        raise VipkitError(
            f"{len(problems)} of the sweep's run folders cannot be used; nothing was run. A run folder holding another "
            "recipe usually means the sweep file changed since the run was made: give the changed variant a new "
            "name, or use another --out.\n" + "\n".join(f"  - {problem}" for problem in problems)
        )


def run_status(plan: SweepPlan, out: Path) -> list[tuple[SweepRun, str]]:
    """Each run and what the sweep would do with it: reuse it, resume it, or start it (``--dry-run``)."""
    found = []
    for run in plan.runs:
        if finished_results(run.folder(out), run.recipe.fingerprint()) is not None:
            found.append((run, "finished: reused"))
        elif (run.folder(out) / "resolved.json").exists():
            found.append((run, "started: resumed"))
        else:
            found.append((run, "to run"))
    return found


def sweep_kept(out: Path) -> str:
    """What ``out`` keeps, in words, for a message about a failure or an interruption."""
    done = len(list((out / "runs").glob("*/seed-*/results.json"))) if (out / "runs").is_dir() else 0
    if not done:
        return f"No run of the sweep finished in {out} yet (a started run resumes from its last checkpoint)"
    return (
        f"Kept in {out}: {done} finished run(s), each a whole run folder that the next sweep reuses; a run that was "
        "under way resumes from its last checkpoint"
    )


def write_outputs(plan: SweepPlan, records: list[dict[str, Any]], out: Path, plots: bool) -> dict[str, Any]:
    """sweep.json, sweep.md and sweep.csv of the runs so far; the plots too when ``plots``. Returns sweep.json."""
    from vipkit.sweep_plots import write_plots
    from vipkit.sweep_report import sweep_csv, sweep_markdown

    sweep = {
        "format": FORMAT,
        **plan.describe(),
        "confidence": CONFIDENCE,
        "runs": records,
        "failed": [f"{r['variant']} seed {r['seed']}" for r in records if r["status"] == "failed"],
        **summarize(plan, records),
        "plots": [],
    }
    if plots and any(record["status"] == "finished" for record in records):
        sweep["plots"] = write_plots(sweep, out)
    write_json(out / "sweep.json", sweep)
    write_text(out / "sweep.md", sweep_markdown(sweep))
    write_text(out / "sweep.csv", sweep_csv(sweep))
    return sweep


def pending_record(run: SweepRun, out: Path) -> dict[str, Any]:
    """A run's record before it has run (what sweep.json lists for it until it finishes or fails)."""
    return {
        "variant": run.variant.name,
        "seed": run.seed,
        "folder": str(run.folder(out).relative_to(out)),
        "fingerprint": run.recipe.fingerprint(),
        "status": "pending",
        "error": None,
        "reused": False,
        "seconds": None,
        "measures": None,
        "teacher": None,
    }


def _finished_record(results: dict[str, Any], reused: bool) -> dict[str, Any]:
    measures, teacher = run_measures(results)
    return {
        "status": "finished",
        "reused": reused,
        "seconds": sum(results["seconds"].values()),  # the run's own phases, however many sessions it took
        "measures": measures,
        "teacher": teacher,
    }


def run_one(run: SweepRun, out: Path, where: str, log: Log, debug: bool) -> dict[str, Any]:
    """Run (or resume) one run in this process; any failure but Ctrl-C becomes its one-paragraph error."""
    from vipkit.engine import compress

    folder = run.folder(out)
    resumed = (folder / "resolved.json").exists()
    log(f"{where}: {'resuming' if resumed else 'starting'} in {folder}")
    try:
        results = compress(run.recipe, run.recipe_text, folder, log=lambda line: log(f"  [{run.label}] {line}"))
        record = _finished_record(results, reused=False)
    except Exception as exc:  # noqa: BLE001 (a run's failure is kept in its record; the other runs go on)
        if debug:
            log("".join(traceback.format_exception(exc)).rstrip())
        record = {"status": "failed", "error": _paragraph(exc)}
    finally:
        gc.collect()  # the run's models are gone before the next one builds its own
    return record


def _paragraph(exc: BaseException) -> str:
    """An exception in the words the CLI uses, on one line: a user error as it is, a file-system error with its path
    and what fixes it, any other as a bug with where it was raised."""
    from vipkit.failures import advice, describe, os_error_of, raised_at

    if isinstance(exc, VipkitError):
        text = str(exc)
    elif (os_error := os_error_of(exc)) is not None:
        text = f"{describe(os_error)}; {advice(os_error)}"
    else:
        text = (
            f"internal error: {type(exc).__name__}: {exc} (raised at {raised_at(exc)}); a bug in vipkit or in a "
            "plugin it loaded (vipkit --debug sweep ... shows the traceback)"
        )
    return " ".join(text.split())


def _headline(record: dict[str, Any]) -> str:
    """The run's objectives and their share of its teacher's, held out first."""
    measures = record["measures"]
    parts = []
    for key, label in (("heldout:objective", "held-out objective"), ("eval:objective", "in-run objective")):
        if key in measures:
            share = measures.get(key + OF_TEACHER)
            parts.append(f"{label} {measures[key]:.4f}" + (f" ({100 * share:.1f} % of the teacher's)" if share else ""))
    return ", ".join(parts)


def _minutes(seconds: float) -> str:
    """``42 s`` or ``2 min 05 s``, rounded to the second first (179.6 s is 3 min 00 s, not 2 min 60 s)."""
    whole = round(seconds)
    return f"{whole} s" if whole < 60 else f"{whole // 60} min {whole % 60:02d} s"
