"""The ``vipkit`` command. Heavy imports (torch, diffusers) happen inside commands, never at start-up."""

from __future__ import annotations

import json
import logging
import signal
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vipkit.stopping import request_stop

app = typer.Typer(
    help="Compress text-to-video diffusion models: prune blocks, find what degraded, distil with ReDPO.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
USER_ERROR = 2  # bad input or environment (a recipe, a file, a full or read-only disk, a busy run folder)
INTERNAL_ERROR = 1  # a bug in vipkit or a plugin: reported as one paragraph, the traceback with --debug
INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal, as shells report it
_debug = False


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the process is, exactly like Ctrl-C's KeyboardInterrupt: the same clean stop."""


def _stop_on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    request_stop()
    raise Terminated


def _stop_on_sigint(signum: int, frame: object) -> None:
    request_stop()
    raise KeyboardInterrupt


def _fail(message: str, code: int = USER_ERROR) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # messages hold [tables]
    return typer.Exit(code)


@app.callback()
def _options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="VIPKIT_DEBUG",
            help="on a failure, print the traceback above the one-paragraph message (also VIPKIT_DEBUG=1)",
        ),
    ] = False,
) -> None:
    global _debug
    _debug = debug


@contextmanager
def _reported(kept: Callable[[], str] | None = None, again: str = "run the same command again") -> Iterator[None]:
    """Every failure of a command as one paragraph and an exit code, never a bare traceback.

    ``kept()`` says what the output folder keeps (asked only after a failure); ``again`` what re-running does.
    Bad input and environment (``VipkitError``, a file-system error) exit 2; Ctrl-C and SIGTERM stop cleanly with
    130 and 143; anything else is a bug: exit 1, with where it was raised.
    """
    from vipkit.errors import VipkitError
    from vipkit.failures import advice, describe, os_error_of, raised_at

    def keeps() -> str:
        try:
            return f" {kept().rstrip('.')}." if kept else ""
        except Exception:  # noqa: BLE001 (the folder may be unreadable: the message still goes out)
            return ""

    try:
        yield
    except (click.exceptions.Exit, click.ClickException, click.Abort):
        raise
    except KeyboardInterrupt as exc:
        if _debug:
            traceback.print_exc()
        name = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C (SIGINT)"
        console.print(
            escape(f"interrupted by {name}: stopped cleanly.{keeps()} {again[:1].upper()}{again[1:]}."),
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(INTERRUPTED[signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT]) from None
    except Exception as exc:
        if _debug:
            traceback.print_exc()
        if isinstance(exc, VipkitError):
            raise _fail(str(exc)) from None
        if (os_error := os_error_of(exc)) is not None:
            fix = advice(os_error)
            raise _fail(f"{describe(os_error)}.{keeps()} {fix[:1].upper()}{fix[1:]}, then {again}.") from None
        raise _fail(
            f"internal error: {type(exc).__name__}: {_one_line(exc)} (raised at {raised_at(exc)}). "
            f"This is a bug in vipkit or in a plugin it loaded: please report it with the command and this message; "
            f"run again with --debug (or VIPKIT_DEBUG=1) to see the traceback.{keeps()}",
            INTERNAL_ERROR,
        ) from None


def _one_line(exc: BaseException, limit: int = 500) -> str:
    text = " ".join(str(exc).split()).rstrip(".") or "no message"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plan_table(recipe) -> Table:  # noqa: ANN001 (Recipe, imported lazily)
    from vipkit.distributed import launched_world_size
    from vipkit.training import describe_split

    table = Table(title=f"plan for {recipe.source}", show_header=False)
    train = recipe.train
    n_train = len(recipe.prompts_train) * recipe.videos_per_prompt
    table.add_row("seed", str(recipe.seed))
    for key in ("model", "reward", "scorer", "pruner", "curator"):
        spec = getattr(recipe, key)
        table.add_row(key, json.dumps(spec.dump()))
    for i, loss in enumerate(recipe.losses):
        table.add_row(f"losses[{i}]", json.dumps(loss.dump()))
    table.add_row(
        "stages",
        f"{recipe.schedule.stages} × prune blocks of kinds {', '.join(recipe.schedule.block_kinds)} (each stage's "
        "parameter and FLOPs budget: the 'stage N prunes' lines below)",
    )
    probe = (
        f"{len(recipe.prompts_probe)} probe videos"
        if recipe.prompts_probe
        else "blocks ranked on the evaluation videos"
    )
    table.add_row("prompts", f"{n_train} training videos, {len(recipe.prompts_eval)} evaluation videos, {probe}")
    table.add_row(
        "training per stage",
        f"≤ {train.epochs * -(-n_train // train.batch_size)} steps ({train.epochs} epochs × batch {train.batch_size}), "
        f"lr {train.learning_rate} {train.optimizer} {train.lr_schedule}, scope {train.trainable!r}"
        + (f" (LoRA rank {train.lora.rank})" if train.lora else "")
        + (", bf16 autocast" if train.mixed_precision == "bf16" else "")
        + f"; checkpoint {'every ' + str(train.checkpoint_every) + ' steps' if train.checkpoint_every else 'at the end'}",
    )
    table.add_row(
        "trained weights",
        "float32 master copies (a bf16/fp16 model computes under autocast in its dtype and gets them back rounded "
        "when a stage ends)"
        if train.trainable_dtype == "float32"
        else 'trained in place in the model\'s dtype (train.trainable_dtype = "model"): updates below its resolution '
        "are rounded away",
    )
    world = launched_world_size()
    table.add_row(
        "training batches",
        "\n".join(
            describe_split(train.batch_size, train.gradient_accumulation_steps, n)
            for n in sorted({world, 2, 8} if world == 1 else {world})
        ),
    )
    table.add_row(
        "objective",
        json.dumps(recipe.objective.weights) if recipe.objective.weights else "mean of all reward dimensions",
    )
    return table


SET_HELP = (
    "KEY=VALUE: change one recipe value for this command, e.g. --set model.preset=random --set train.epochs=1 "
    "(VALUE is read as TOML, else as text; repeat --set for several)"
)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="recipe or bench matrix files to check")],
    overrides: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
) -> None:
    """Check recipes and bench matrices (files with \\[\\[models]] or \\[\\[recipes]]) without loading any model; every problem is listed with its key."""
    from vipkit.bench_matrix import is_matrix, load_matrix
    from vipkit.errors import VipkitError
    from vipkit.recipe import load_recipe

    failed = 0
    for path in files:
        try:
            with _reported():
                if not is_matrix(path):
                    load_recipe(path, overrides=overrides or ())
                    console.print(f"[green]ok[/] {path}", soft_wrap=True)
                elif overrides:
                    raise VipkitError(f"{path} is a bench matrix: --set changes recipes only; edit the matrix instead")
                else:
                    load_matrix(path)
                    console.print(f"[green]ok[/] {path} (bench matrix)", soft_wrap=True)
        except typer.Exit as exc:
            if exc.exit_code != USER_ERROR:
                raise
            failed += 1
    if failed:
        raise typer.Exit(USER_ERROR)


@app.command()
def compress(
    recipe: Annotated[Path, typer.Option("--recipe", "-r", help="the recipe (TOML)")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="run directory (default runs/<recipe name>)")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="build the components, check the plan against them, show it and stop")
    ] = False,
    overrides: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
) -> None:
    """Run a recipe: prune, curate pairs, distil, per stage. Re-run on the same --out (and --set) to resume."""
    out = out or Path("runs") / recipe.stem

    def kept() -> str:
        from vipkit.rundir import RunDirectory

        return RunDirectory(out).kept()

    with _reported(None if dry_run else kept, "run the same command again to resume"):
        _compress(recipe, out, dry_run, overrides or [])


def _compress(recipe: Path, out: Path, dry_run: bool, overrides: list[str]) -> None:
    from vipkit.distributed import launched_as_main
    from vipkit.recipe import load_recipe

    resolved = load_recipe(recipe, overrides=overrides)
    main = launched_as_main()  # under torchrun / accelerate launch, rank 0 speaks for the run
    if main:
        console.print(_plan_table(resolved))
    if dry_run:
        from vipkit.engine import prepare
        from vipkit.plugins import load_plugins

        parts = prepare(resolved, load_plugins(), log=lambda line: console.print(line, highlight=False, markup=False))
        candidates, kinds = parts.plan.candidates, parts.plan.block_kinds
        console.print(
            f"model: {parts.teacher.num_parameters():,} denoiser parameters, {len(candidates)} prunable blocks of kinds "
            f"{', '.join(sorted(kinds))} ({sum(b.params for b in candidates):,} parameters); reward dimensions: "
            f"{', '.join(parts.reward.dimensions)}",
            highlight=False,
        )
        from vipkit.measure import cpu_estimate

        if (estimate := cpu_estimate(parts.teacher)) is not None:
            seconds = estimate.seconds_per_video
            console.print(
                f"model on the CPU: at least {seconds:,.1f} s per video{f' ({seconds / 3600:,.1f} h)' if seconds >= 3600 else ''}: "
                f"{estimate.steps} steps × {estimate.flops_per_call / 1e9:,.1f} GFLOP per denoiser call (guidance batch "
                f"included) at the {estimate.flops_per_second / 1e9:,.0f} GFLOP/s this CPU multiplies matrices at",
                highlight=False,
            )
        console.print(f"dry run: the plan checks out, nothing was run; the run directory would be {out}")
        return
    from vipkit import distributed, progress
    from vipkit.engine import compress as run_compress
    from vipkit.report import markdown_table, results_table

    with progress.display() if main else nullcontext() as bars:
        log = (
            (lambda line: bars.console.print(line, highlight=False, markup=False, soft_wrap=True))
            if main
            else (lambda line: None)
        )
        given = "".join(f"# applied on the command line: --set {item}\n" for item in overrides) + recipe.read_text(
            encoding="utf-8"
        )
        results = run_compress(resolved, given, out, log=log)
    distributed.finish()
    if not main:
        return
    header, rows = results_table(results)
    print(markdown_table(header, rows))
    done = f"[green]done[/]: model in {results['final']['model']}, results in {out / 'results.json'}, report in {out / 'report.md'}"
    console.print(done, soft_wrap=True)


@app.command()
def bench(
    matrix: Annotated[
        Path,
        typer.Option(
            "--matrix",
            "-m",
            help="the bench matrix (TOML): labelled models and recipes to compress, rewards and evaluation prompts "
            "(README: vipkit bench)",
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="bench folder (default runs/bench-<matrix name>)")
    ] = None,
) -> None:
    """Score several models (e.g. the teacher and compressed ones) with the same rewards, prompts and seeds: one table,
    one plot. A matrix with \\[\\[recipes]] first runs the compressions it lacks, then adds the grid "guided by × judged
    by". A row that fails is shown with its error while the others complete (exit code 3); re-running retries it.
    """
    from vipkit import progress
    from vipkit.bench import RUNS, SOME_ROWS_FAILED, bench_table, run_bench
    from vipkit.bench_grid import HEATMAP, TABLE_CSV, grid_table
    from vipkit.bench_matrix import load_matrix
    from vipkit.report import markdown_table

    out = out or Path("runs") / f"bench-{matrix.stem}"

    def kept() -> str:
        measured = len(list((out / "models").glob("*.json"))) if (out / "models").is_dir() else 0
        runs = len(list((out / RUNS).glob("*/resolved.json"))) if (out / RUNS).is_dir() else 0
        compressions = (
            f" and {runs} compression run folder(s) in {out / RUNS} (a finished one is reused, another resumes)"
        )
        if not measured and not runs:
            return f"No model was measured in {out} yet"
        return f"Kept in {out}: the videos and scores of the {measured} model(s) measured so far, each file whole" + (
            compressions if runs else ""
        )

    with _reported(kept, "run the same command again: it reuses the videos and scores already measured"):
        resolved = load_matrix(matrix)
        with _bench_lock(out), progress.display() as bars:
            results = run_bench(  # lines hold [tables] and paths: printed as they are, never read as markup
                resolved,
                out,
                log=lambda line: bars.console.print(escape(line), highlight=False, soft_wrap=True),
                debug=_debug,
            )
    if "grid" in results:
        print(markdown_table(*grid_table(results)) + "\n")
    print(markdown_table(*bench_table(results)))
    where = escape(
        f"table in {out / 'bench.md'}, plot in {out / 'bench.svg'}, scores in {out / 'bench.json'}"
        + (f", grid in {out / TABLE_CSV} and {out / HEATMAP}" if "grid" in results else "")
    )
    failed = [row for row in results["models"] if row["error"]]
    if not failed:
        console.print(f"[green]done[/]: {where}", soft_wrap=True)
        return
    for row in failed:
        console.print(f"[bold red]failed:[/] {escape(row['error'])}", highlight=False, soft_wrap=True)
    console.print(
        f"{len(failed)} of {len(results['models'])} rows failed (above, and in bench.md); the others are in the "
        f"{where}. Run the same command again to retry the failed rows: the others are reused.",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(SOME_ROWS_FAILED)


@contextmanager
def _bench_lock(out: Path) -> Iterator[None]:
    """Hold the bench folder's lock (one ``vipkit bench`` per folder); a folder that is no bench is left untouched,
    for ``run_bench`` to refuse with its own message."""
    from vipkit.run_lock import LOCK_NAME, FolderLock

    if out.exists() and (
        not out.is_dir() or (any(p.name != LOCK_NAME for p in out.iterdir()) and not (out / "models").is_dir())
    ):
        yield
        return
    with FolderLock.acquire(out, "bench"):
        (out / "models").mkdir(exist_ok=True)  # what run_bench makes first: a folder with only the lock is no bench
        yield


@app.command()
def sweep(
    file: Annotated[
        Path | None,
        typer.Argument(help="the sweep file (TOML): recipe, seeds, variants, optional \\[curve] (README: sweep)"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="sweep folder (default runs/sweep-<file or recipe name>)")
    ] = None,
    recipe: Annotated[
        Path | None, typer.Option("--recipe", "-r", help="without a sweep file: the recipe every run starts from")
    ] = None,
    seeds: Annotated[
        int | None, typer.Option("--seeds", help="run seeds 0 to N-1 (replaces the sweep file's seeds)")
    ] = None,
    variants: Annotated[
        list[str] | None,
        typer.Option(
            "--variant",
            help="without a sweep file: NAME or NAME:KEY=VALUE (repeat for more keys or variants; the first is the "
            "baseline)",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="validate every run's recipe, show what would run, run nothing")
    ] = False,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            help="runs at a time, each in a process of its own (on CPU with an equal share of the cores)",
        ),
    ] = 1,
) -> None:
    """Run a recipe under several seeds and variants: mean, spread and 95 % t-intervals per dimension, differences
    from the baseline seed by seed; sweep.md, sweep.json, sweep.csv, plots. Re-running reuses finished runs and resumes
    the others; a run that fails shows its error while the others complete (exit code 3)."""
    from vipkit import progress
    from vipkit.errors import VipkitError
    from vipkit.sweep import SOME_RUNS_FAILED, check_folder, run_status, run_sweep, sweep_kept
    from vipkit.sweep_plan import load_sweep, sweep_from_options
    from vipkit.sweep_report import section_markdown
    from vipkit.sweep_summary import primary

    given = file or recipe
    out = out or Path("runs") / f"sweep-{given.stem if given else 'sweep'}"
    kept = None if dry_run else lambda: sweep_kept(out)
    with _reported(kept, "run the same command again: finished runs are reused, the others resume"):
        if (file is None) == (recipe is None) or (file is not None and variants):
            raise VipkitError(
                "give a sweep file (`vipkit sweep FILE`), or a recipe with --recipe and its variants with --variant "
                "(and --seeds); not both"
            )
        if file is not None:
            plan = load_sweep(file, seeds)
        else:
            plan = sweep_from_options(recipe, 3 if seeds is None else seeds, variants or [])
        if dry_run:
            check_folder(plan, out)
            for run, status in run_status(plan, out):
                console.print(escape(f"{run.label}: {status} ({run.folder(out)})"), highlight=False, soft_wrap=True)
            console.print(f"dry run: {len(plan.runs)} runs check out, nothing was run", highlight=False)
            return
        with progress.display() as bars:
            results = run_sweep(
                plan,
                out,
                log=lambda line: bars.console.print(escape(line), highlight=False, soft_wrap=True),
                debug=_debug,
                jobs=jobs,
            )
    if any(run["status"] == "finished" for run in results["runs"]):
        print(section_markdown(results, primary(results)))
    where = escape(f"tables in {out / 'sweep.md'}, every run in {out / 'sweep.csv'}, plots beside them")
    if not results["failed"]:
        console.print(f"[green]done[/]: {where}", soft_wrap=True)
        return
    console.print(
        escape(
            f"{len(results['failed'])} of {len(results['runs'])} runs failed ({', '.join(results['failed'])}; their "
            f"errors are in sweep.md); the statistics cover the runs that finished; {where}. Run the same command "
            "again to retry them: the finished runs are reused."
        ),
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(SOME_RUNS_FAILED)


@app.command()
def export(
    source: Annotated[
        Path, typer.Argument(help="a finished run folder (its model/), a stage folder or a model folder vipkit wrote")
    ],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="the model family's format, e.g. diffusers or motion-adapter (AnimateDiff), official (VideoCrafter2)",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="the folder to write (must not exist or be empty)")],
    dtype: Annotated[
        str | None, typer.Option("--dtype", help="float32, bfloat16 or float16 (default: the model's own)")
    ] = None,
    bench: Annotated[
        Path | None,
        typer.Option(
            "--bench", help="a `vipkit bench` folder that scored this model: its table goes into the model card"
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace a non-empty --out folder")] = False,
) -> None:
    """Write a compressed model in a format other tools load (diffusers, a motion adapter, the official checkpoint
    layout), with a model card (README.md) and samples; removed blocks are written as exact zeros."""
    from vipkit.export import export_model

    def kept() -> str:
        return f"Nothing half-written is left in {out}: an export appears by one rename once it is whole"

    with _reported(kept), console.status(f"exporting {source} as {format}"):
        record = export_model(source, format, out, dtype=dtype, bench=bench, overwrite=overwrite)
    zeroed = len(record["zeroed_blocks"])
    console.print(
        f"[green]done[/]: {record['family']} model as {format} ({record['dtype']}) in {out}"
        + (f"; {zeroed} removed blocks written as zeros (exact; vipkit skips them again on loading)" if zeroed else "")
        + f"; model card in {out / 'README.md'}",
        soft_wrap=True,
    )


@app.command()
def plugins(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List every plugin with its source, version and components; broken plugins show their error."""
    from vipkit.plugins import load_plugins

    with _reported():
        infos = load_plugins().infos
    if as_json:
        print(json.dumps([info.__dict__ for info in infos], indent=2))
        return
    table = Table(title="vipkit plugins")
    for column in ("plugin", "source", "version", "components"):
        table.add_column(column)
    for info in infos:
        components = "\n".join(f"{kind}: {', '.join(names)}" for kind, names in info.components.items())
        if info.error:
            components = f"[red]failed to load: {info.error}[/]"
        table.add_row(info.name, info.source, info.version, components)
    Console().print(table)


class _KnownLibraryNoise(logging.Filter):
    """Drops transformers' notice that torchvision is absent: vipkit never uses its image backend."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


def main() -> None:
    logging.getLogger("transformers.utils.import_utils").addFilter(_KnownLibraryNoise())
    # diffusers passes huggingface_hub a retired argument on every hub load: nothing a user can change
    warnings.filterwarnings(
        "ignore", message="The `local_dir_use_symlinks` argument is deprecated", category=UserWarning
    )
    # SIGTERM (kill, a scheduler, torchrun stopping its workers) stops like Ctrl-C, on every rank: each command's
    # _reported turns it into the same clean stop and message, exit code 143 (Ctrl-C: 130)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where the shell made it ignored
        signal.signal(signal.SIGINT, _stop_on_sigint)
    app()
