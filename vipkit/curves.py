"""Training curves: metrics.jsonl read back, one step count across stages, and ``curves.png`` for the report.

metrics.jsonl numbers each stage's optimizer steps from 0. The *global step* puts the stages end to end:
the optimizer steps of the stages before (each stage's highest step + 1) plus the stage's own step. The
plot's x axis and the trackers of ``train.log_with`` (``vipkit.training``) use it, so a point in
TensorBoard is a line of metrics.jsonl, and a resumed run logs the steps it redoes under the same numbers.
matplotlib is imported only to draw, and only its Agg canvas is used (no pyplot, no global backend change).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

COUNTERS = ("stage", "step", "epoch")  # metrics.jsonl keys that number a line rather than measure something
PANEL_COLUMNS = 4


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's lines in (stage, step) order; a torn line or one without integer stage and step is skipped,
    and a repeated (stage, step) keeps its last line. No file: no lines."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    found: dict[tuple[int, int], dict[str, Any]] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and all(type(record.get(key)) is int for key in ("stage", "step")):
            found[(record["stage"], record["step"])] = record
    return [found[key] for key in sorted(found)]


def first_global_step(records: list[dict[str, Any]], stage: int) -> int:
    """The global step of ``stage``'s step 0: the optimizer steps of the stages before it (highest step + 1 each)."""
    ends: dict[int, int] = {}
    for record in records:
        if record["stage"] < stage:
            ends[record["stage"]] = max(ends.get(record["stage"], 0), record["step"] + 1)
    return sum(ends.values())


def global_steps(records: list[dict[str, Any]]) -> list[int]:
    """The global step of every line of ``records`` (as ``read_metrics`` returns them)."""
    firsts = {stage: first_global_step(records, stage) for stage in {r["stage"] for r in records}}
    return [firsts[r["stage"]] + r["step"] for r in records]


def metric_names(records: list[dict[str, Any]]) -> list[str]:
    """The measured numbers of the lines (the loss and its terms, grad_norm, ...) in the order they first appear,
    the learning rate last."""
    names: dict[str, None] = {}
    for record in records:
        for key, value in record.items():
            if key not in COUNTERS and isinstance(value, int | float) and not isinstance(value, bool):
                names[key] = None
    return sorted(names, key=lambda name: name == "lr")


def reward_points(results: dict[str, Any]) -> tuple[list[str], dict[str, list[float]]]:
    """x labels (teacher, then each stage pruned and distilled) and, per reward dimension and the objective, the
    value at each."""
    entries = [("teacher", results["teacher"])]
    for stage in results["stages"]:
        entries += [(f"{stage['stage']} pruned", stage["pruned"]), (f"{stage['stage']} distilled", stage["distilled"])]
    series = {"objective": [entry["objective"] for _, entry in entries]}
    for dimension in results["teacher"]["scores"]:
        series[dimension] = [entry["scores"][dimension] for _, entry in entries]
    return [label for label, _ in entries], series


def write_curves(results: dict[str, Any], metrics: Path, path: Path) -> None:
    """Draw every metric of ``metrics`` (metrics.jsonl) per global step and every reward dimension of ``results``
    per stage into the PNG ``path``, written whole or not at all."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = read_metrics(metrics)
    names = metric_names(records)
    labels, rewards = reward_points(results)
    rows = [-(-len(names) // PANEL_COLUMNS), -(-len(rewards) // PANEL_COLUMNS)]
    rows = [count for count in rows if count]
    figure = Figure(figsize=(3.6 * PANEL_COLUMNS, 0.7 + 2.8 * sum(rows)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    parts = list(figure.subfigures(len(rows), 1, height_ratios=rows)) if len(rows) > 1 else [figure]
    if names:
        _training_panels(parts[0], records, names)
    _reward_panels(parts[-1], labels, rewards)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    figure.savefig(temporary, format="png")
    os.replace(temporary, path)


def _panels(part: Any, count: int) -> list[Any]:
    rows = -(-count // PANEL_COLUMNS)
    axes = part.subplots(rows, PANEL_COLUMNS, squeeze=False).flatten()
    for unused in axes[count:]:
        unused.set_visible(False)
    return list(axes[:count])


def _training_panels(part: Any, records: list[dict[str, Any]], names: list[str]) -> None:
    from matplotlib.ticker import MaxNLocator

    steps = global_steps(records)
    starts = {r["stage"]: step - r["step"] for r, step in zip(records, steps, strict=True)}
    part.suptitle("training, per optimizer step (the stages end to end; dotted: a stage starts)")
    for axis, name in zip(_panels(part, len(names)), names, strict=True):
        for stage, start in starts.items():
            points = [(s, r[name]) for r, s in zip(records, steps, strict=True) if r["stage"] == stage and name in r]
            marker = "." if len(points) <= 100 else None
            axis.plot([x for x, _ in points], [y for _, y in points], color="tab:blue", marker=marker, linewidth=1)
            if start:
                axis.axvline(start - 0.5, color="grey", linestyle=":", linewidth=1)
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("step", fontsize=8)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.tick_params(labelsize=8)


def _reward_panels(part: Any, labels: list[str], rewards: dict[str, list[float]]) -> None:
    part.suptitle("rewards on the evaluation prompts, per stage (red: pruned, green: distilled, dashed: the teacher)")
    positions = list(range(len(labels)))
    colors = ["black"] + ["tab:red" if label.endswith("pruned") else "tab:green" for label in labels[1:]]
    for axis, (name, values) in zip(_panels(part, len(rewards)), rewards.items(), strict=True):
        axis.plot(positions, values, color="grey", linewidth=1)
        axis.scatter(positions, values, c=colors, s=18, zorder=3)
        axis.axhline(values[0], color="black", linestyle="--", linewidth=0.8)
        axis.set_title(name, fontsize=10)
        axis.set_xticks(positions, labels, rotation=45, ha="right", fontsize=7)
        axis.tick_params(axis="y", labelsize=8)
