"""sweep.json → sweep.md (tables a person reads) and sweep.csv (one row per run, every measure, to analyse further)."""

from __future__ import annotations

import csv
import io
from typing import Any

from vipkit.report import markdown_table
from vipkit.sweep_stats import CONFIDENCE
from vipkit.sweep_summary import OF_TEACHER, baselines, compared_with

SECTIONS = {  # prompt set -> the heading of its tables
    "heldout": "Final model on the held-out prompts",
    "eval": "Final model on the run's evaluation prompts",
}
PLOTS = {"sweep.png": "scores per variant with their intervals", "curve.png": "objective over the swept key"}


def sweep_markdown(sweep: dict[str, Any]) -> str:
    """The whole sweep.md: what ran, per prompt set the scores, their share of the teacher's and the differences
    from the baseline with intervals, every run, the failures."""
    finished = sum(run["status"] == "finished" for run in sweep["runs"])
    lines = [
        f"# vipkit sweep: {sweep['sweep']}",
        "",
        f"Recipe `{sweep['recipe']}`; seeds {', '.join(map(str, sweep['seeds']))}; {len(sweep['runs'])} runs, "
        f"{finished} finished, {len(sweep['failed'])} failed; baseline `{sweep['baseline']}`"
        + (f"; every run: {_overrides(sweep['set'])}" if sweep["set"] else "")
        + ".",
        "",
        f"A cell: mean ± standard deviation over the seeds [{100 * CONFIDENCE:.0f} % t-interval of the mean] (runs). "
        "A difference from the baseline is taken seed by seed (the same seed renders the same prompts with the same "
        "video seeds) unless marked unpaired (Welch); where its interval holds 0 the difference is within noise.",
        "",
        markdown_table(["variant", "--set"], [[v["name"], _overrides(v["overrides"])] for v in sweep["variants"]]),
        "",
    ]
    for prompts in SECTIONS:
        if any(key.startswith(f"{prompts}:") for key in sweep["measures"]):
            lines += [section_markdown(sweep, prompts), ""]
    lines += [*(f"![{what}]({name})\n" for name, what in PLOTS.items() if name in sweep["plots"]), "## Runs", ""]
    lines += [markdown_table(*runs_table(sweep)), ""]
    failed = [run for run in sweep["runs"] if run["status"] == "failed"]
    if failed:
        lines += ["## Failed runs", ""]
        lines += [f"- **{run['variant']} seed {run['seed']}**: {run['error']}" for run in failed]
        lines += ["", "Re-running the same command retries them; the finished runs are reused.", ""]
    return "\n".join(lines)


def _overrides(items: list[str]) -> str:
    return ", ".join(f"`{item}`" for item in items) or "the recipe as it is"


def section_markdown(sweep: dict[str, Any], prompts: str) -> str:
    """The tables of one prompt set (a ``SECTIONS`` key): the scores of the teacher and of each variant, their share
    of the teacher's, and each variant's difference from the baseline."""
    keys = [k for k in sweep["measures"] if k.split(":")[0].startswith(prompts) and not k.endswith(OF_TEACHER)]
    names = [v["name"] for v in sweep["variants"]]
    stats, teacher = sweep["statistics"], sweep["teacher"]
    values = [[_label(key), _cell(teacher.get(key)), *(_cell(stats[name].get(key)) for name in names)] for key in keys]
    shares = [
        [_label(key), *(_cell(stats[name].get(key + OF_TEACHER), percent=True) for name in names)] for key in keys
    ]
    bases = baselines(sweep)
    others = list(bases)
    differences = [
        [_label(key), *(_difference(sweep["differences"].get(name, {}).get(key)) for name in others)] for key in keys
    ]
    if prompts == "eval":  # variants may prune other blocks once their students differ: compare at what size
        shares.insert(0, ["parameters", *(_cell(stats[name].get("parameter_ratio"), percent=True) for name in names)])
        ratio = [_difference(sweep["differences"].get(name, {}).get("parameter_ratio")) for name in others]
        differences.insert(0, ["parameters ÷ teacher's", *ratio])
    count = next(v for v in sweep["variants"] if not v["baseline"])["prompts"][prompts]
    part = [f"## {SECTIONS[prompts]} ({count} prompts, one video each per seed)", ""]
    part += [markdown_table(["", "teacher", *names], values), ""]
    part += ["### As a share of the teacher's", "", markdown_table(["", *names], shares)]
    if others:
        header = ["", *(f"{name} − {bases[name]}" for name in others)]
        part += ["", f"### Difference from {compared_with(sweep)}", "", markdown_table(header, differences)]
    return "\n".join(part)


def _label(key: str) -> str:
    prompts, _, name = key.partition(":")
    return f"{name}*" if prompts == "heldout_reward" else name


def _cell(interval: dict[str, Any] | None, percent: bool = False) -> str:
    if interval is None:
        return "—"
    scale, form, unit = (100, ".1f", " %") if percent else (1, ".4f", "")

    def number(value: float) -> str:
        return format(scale * value, form)

    text = number(interval["mean"]) + unit
    if interval["std"] is not None:
        text += f" ± {number(interval['std'])}"
    if interval["low"] is not None:
        text += f" [{number(interval['low'])}, {number(interval['high'])}]"
    return f"{text} ({interval['n']})"


def _difference(interval: dict[str, Any] | None) -> str:
    if interval is None:
        return "—"
    paired = interval["paired"]
    count = f"{interval['n']} {'pair' if paired else 'run'}{'s' if interval['n'] != 1 else ''}"
    text = f"{interval['mean']:+.4f}"
    if interval["low"] is None:
        return f"{text}, {count}: no interval"
    within = interval["low"] <= 0 <= interval["high"]
    return f"{text} [{interval['low']:+.4f}, {interval['high']:+.4f}], {count}{'' if paired else ' (unpaired)'}: " + (
        "within noise" if within else "beyond noise"
    )


def runs_table(sweep: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per run: its objectives and their share of its teacher's, parameters, minutes, folder or error."""
    header = ["variant", "seed", "held-out objective", "% of teacher", "objective", "% of teacher", "parameters"]
    header += ["minutes", "run"]
    rows = []
    for run in sweep["runs"]:
        measures = run.get("measures") or {}

        def value(key: str, percent: bool = False, measures: dict[str, float] = measures) -> str:
            if key not in measures:
                return ""
            return f"{100 * measures[key]:.1f}" if percent else f"{measures[key]:.4f}"

        status = {"failed": "failed: see below", "pending": "not run yet"}.get(run["status"], f"`{run['folder']}`")
        rows.append(
            [
                run["variant"],
                str(run["seed"]),
                value("heldout:objective"),
                value("heldout:objective" + OF_TEACHER, True),
                value("eval:objective"),
                value("eval:objective" + OF_TEACHER, True),
                value("parameter_ratio", True) + (" %" if "parameter_ratio" in measures else ""),
                f"{run['seconds'] / 60:.1f}" if run.get("seconds") is not None else "",
                status,
            ]
        )
    return header, rows


def sweep_csv(sweep: dict[str, Any]) -> str:
    """One row per run: variant, swept value, seed, status, error, seconds, folder, every measure of the final
    model, then the teacher's (``teacher KEY``)."""
    measures = sweep["measures"]
    teacher = [key for key in measures if not key.endswith(OF_TEACHER) and key != "parameter_ratio"]
    curve = {v["name"]: v["curve_value"] for v in sweep["variants"]}
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(
        ["variant", "curve_value", "seed", "status", "error", "seconds", "folder"]
        + measures
        + [f"teacher {key}" for key in teacher]
    )
    for run in sweep["runs"]:
        ours, theirs = run.get("measures") or {}, run.get("teacher") or {}
        writer.writerow(
            [run["variant"], curve.get(run["variant"]), run["seed"], run["status"], run["error"] or ""]
            + [run.get("seconds"), run["folder"]]
            + [ours.get(key, "") for key in measures]
            + [theirs.get(key, "") for key in teacher]
        )
    return text.getvalue()
