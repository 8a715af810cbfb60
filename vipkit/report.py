"""results.json → a markdown report a person can read: one row per model state, one column per dimension (a second
table for the held-out prompts, when the recipe has them); the curves plot beside it (`vipkit.curves`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CURVES = "curves.png"  # the training curves and rewards per stage, beside report.md (vipkit.curves)


def results_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: teacher, then per stage the pruned and the distilled student; with held-out prompts, their
    objective and its share of the teacher's in the last two columns (``heldout_table`` has every dimension)."""
    teacher = results["teacher"]
    dims = list(teacher["scores"])
    heldout = ["held-out objective", "% of teacher's held-out"] if "heldout" in teacher else []
    header = ["model", "parameters", "% of teacher", "GFLOPs/step", "s/video", "speed-up", *dims, "objective", *heldout]

    def row(label: str, entry: dict[str, Any]) -> list[str]:
        share = 100 * entry["parameters"] / teacher["parameters"]
        return [
            label,
            f"{entry['parameters']:,}",
            f"{share:.1f}",
            f"{entry['denoiser_flops'] / 1e9:.3f}",
            f"{entry['seconds_per_video']:.3g}",
            f"{teacher['seconds_per_video'] / entry['seconds_per_video']:.2f}×",
            *(f"{entry['scores'][d]:.4f}" for d in dims),
            f"{entry['objective']:.4f}",
            *(_heldout_objective(entry, teacher) if heldout else []),
        ]

    return header, [row(label, entry) for label, entry in _model_states(results)]


def _heldout_objective(entry: dict[str, Any], teacher: dict[str, Any]) -> list[str]:
    """A model state's held-out objective, and its share of the teacher's (in %)."""
    objective, reference = entry["heldout"]["objective"], teacher["heldout"]["objective"]
    return [f"{objective:.4f}", f"{100 * objective / reference:.1f}" if reference else ""]


def _model_states(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, summary): the teacher, then per stage the pruned and the distilled student."""
    states = [("teacher", results["teacher"])]
    for stage in results["stages"]:
        states += [
            (f"stage {stage['stage']} pruned", stage["pruned"]),
            (f"stage {stage['stage']} distilled", stage["distilled"]),
        ]
    return states


def heldout_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The same model states on the held-out prompts: the run's reward per dimension, its objective and that
    objective's share of the teacher's, then the held-out reward's dimensions (marked *)."""
    teacher = results["teacher"]["heldout"]
    dims, extra = list(teacher["scores"]), list(teacher.get("reward", {}))
    header = ["model", *dims, "objective", "% of teacher's objective", *(f"{d}*" for d in extra)]

    def row(label: str, entry: dict[str, Any]) -> list[str]:
        heldout = entry["heldout"]
        return [
            label,
            *(f"{heldout['scores'][d]:.4f}" for d in dims),
            *_heldout_objective(entry, results["teacher"]),
            *(f"{heldout['reward'][d]:.4f}" for d in extra),
        ]

    return header, [row(label, entry) for label, entry in _model_states(results)]


def timing_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Seconds per phase: one row per stage, one for the run's own phases (loading, the teacher's videos, the final
    save), and the total; the last column is each row's share of the whole."""
    from vipkit.timing import PHASES

    total = sum(results["seconds"].values()) or 1.0
    header = ["", *PHASES, "total", "% of run"]

    def row(label: str, seconds: dict[str, float]) -> list[str]:
        return [
            label,
            *(f"{seconds[p]:.1f}" if p in seconds else "" for p in PHASES),
            f"{sum(seconds.values()):.1f}",
            f"{100 * sum(seconds.values()) / total:.0f}",
        ]

    stages = [row(f"stage {stage['stage']}", stage["seconds"]) for stage in results["stages"]]
    return header, [
        *stages,
        row("run (load, teacher, final save)", results["run_seconds"]),
        row("all", results["seconds"]),
    ]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _heldout_part(results: dict[str, Any]) -> list[str]:
    extra = results["teacher"]["heldout"].get("reward")
    return [
        f"## Held-out prompts ({results['heldout_prompts']} videos)",
        "",
        "Prompts and seeds the run never trains, probes or evaluates on; the same model states as above.",
        "",
        markdown_table(*heldout_table(results)),
        "",
        *(
            ["\\* the held-out reward: scored on these videos only, never used for ranking or curation.", ""]
            if extra
            else []
        ),
    ]


def write_report(results: dict[str, Any], path: Path) -> None:
    """``report.md`` at ``path``, and beside it the plot ``curves.png`` of the metrics.jsonl there and ``results``."""
    from vipkit.atomic import write_text
    from vipkit.curves import write_curves

    write_curves(results, path.parent / "metrics.jsonl", path.parent / CURVES)
    header, rows = results_table(results)
    parts = [
        f"# vipkit run: {results['recipe']}",
        "",
        f"seed {results['seed']} · recipe fingerprint `{results['fingerprint']}`",
        "",
        markdown_table(header, rows),
        "",
        "s/video: seconds to generate one video, timed after a warm-up call; speed-up: the teacher's s/video over the row's.",
        "",
        *(_heldout_part(results) if "heldout_prompts" in results else []),
        "## Where the time went (seconds)",
        "",
        markdown_table(*timing_table(results)),
        "",
        *(
            [
                f"Peak GPU memory of the main process (GiB): {', '.join(f'{p} {gib:.1f}' for p, gib in results['peak_gpu_gib'].items())}.",
                "",
            ]
            if results["peak_gpu_gib"]
            else []
        ),
        "## Curves",
        "",
        f"![training curves and rewards per stage]({CURVES})",
        "",
        "Every number of metrics.jsonl per optimizer step, the stages end to end (the step numbers of "
        "`train.log_with`'s trackers), and every reward dimension per stage.",
        "",
        "## Stages",
    ]
    for stage in results["stages"]:
        train = stage["train"]
        parts += [
            "",
            f"### Stage {stage['stage']}",
            f"- removed: {', '.join(f'`{b}`' for b in stage['removed_blocks']) or 'nothing'}",
            f"- degraded dimensions: {', '.join(stage['degraded_dimensions']) or 'none'}; preference pairs: {stage['pairs']}",
            f"- training: {train['steps']} steps"
            + (f", loss {train['first_loss']:.4g} → {train['last_loss']:.4g}" if train["steps"] else ""),
            f"- samples: `samples/stage-{stage['stage']:03d}-pruned.gif`, `samples/stage-{stage['stage']:03d}-distilled.gif` (and an `.mp4` beside each)",
        ]
    parts += ["", f"Final model: `{results['final']['model']}` — load it with `vipkit.load(path)`.", ""]
    write_text(path, "\n".join(parts))
