"""sweep.json → sweep.png (bars per dimension and variant with their intervals; the differences from the baseline)
and, for a sweep with a ``[curve]``, curve.png (the objective over the swept key, one line per variant).

Error bars are the 95 % t-intervals of the means (none where a variant has one finished run). matplotlib is imported
only to draw, and only its Agg canvas is used (as ``vipkit.curves`` does).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from vipkit.sweep_summary import baselines, compared_with, primary

GREY = "#9a9a9a"
PROMPTS = {"heldout": "held-out prompts", "eval": "run's evaluation prompts"}  # the panels, per prompt set


def write_plots(sweep: dict[str, Any], out: Path) -> list[str]:
    """Write the plots of ``sweep`` into ``out``, each whole or not at all; returns their file names."""
    figures = {"sweep.png": bars_figure(sweep)}
    if sweep["curve"] is not None:
        figures["curve.png"] = curve_figure(sweep)
    for name, figure in figures.items():
        temporary = out / f".{name}.{os.getpid()}.tmp"
        figure.savefig(temporary, format="png")
        os.replace(temporary, out / name)
    return list(figures)


def _dimensions(sweep: dict[str, Any], prompts: str) -> list[str]:
    return [key for key in sweep["measures"] if key.startswith(f"{prompts}:") and "/" not in key]


def bars_figure(sweep: dict[str, Any]) -> Any:
    """One panel per prompt set: per measure (objective, then each dimension) a bar for the teacher and one per
    variant; then the differences from the baseline on the primary prompt set, with a line at 0."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sets = [prompts for prompts in PROMPTS if _dimensions(sweep, prompts)]
    bases = baselines(sweep)
    others = list(bases)
    panels = len(sets) + bool(others)
    names = [v["name"] for v in sweep["variants"]]
    width = max(6.0, 1.2 + 0.35 * (len(names) + 1) * len(_dimensions(sweep, primary(sweep))))
    figure = Figure(figsize=(width, 3.4 * panels), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = list(figure.subplots(panels, 1, squeeze=False)[:, 0])
    colours = {name: f"C{i}" for i, name in enumerate(names)}  # a variant keeps its colour in every panel
    for axis, prompts in zip(axes, sets, strict=False):
        series = [("teacher", sweep["teacher"], GREY)]
        series += [(name, sweep["statistics"][name], colours[name]) for name in names]
        _grouped_bars(axis, _dimensions(sweep, prompts), series)
        axis.set_title(f"final model on the {PROMPTS[prompts]}: mean over the seeds, 95 % interval", fontsize=10)
    if others:
        axis = axes[-1]
        series = [(f"{name} − {bases[name]}", sweep["differences"].get(name, {}), colours[name]) for name in others]
        _grouped_bars(axis, _dimensions(sweep, primary(sweep)), series)
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_title(
            f"difference from {compared_with(sweep)} on the {PROMPTS[primary(sweep)]}, 95 % interval", fontsize=10
        )
    return figure


def _grouped_bars(axis: Any, keys: list[str], series: list[tuple[str, dict[str, Any], str]]) -> None:
    """Per key a group of bars, one per series (label, intervals by key, colour): its mean, and its interval as an
    error bar where there is one."""
    width = 0.8 / len(series)
    for index, (label, intervals, colour) in enumerate(series):
        shown = [(position, intervals[key]) for position, key in enumerate(keys) if key in intervals]
        if not shown:
            continue
        xs = [position - 0.4 + width * (index + 0.5) for position, _ in shown]
        intervals_shown = [interval for _, interval in shown]
        axis.bar(
            xs,
            [interval["mean"] for interval in intervals_shown],
            width * 0.95,
            yerr=_error_bars(intervals_shown),
            capsize=3,
            color=colour,
            label=label,
        )
    axis.set_xticks(range(len(keys)), [key.partition(":")[2] for key in keys], fontsize=8)
    axis.tick_params(axis="y", labelsize=8)
    axis.legend(fontsize=8, loc="best")


def curve_figure(sweep: dict[str, Any]) -> Any:
    """The primary objective (mean and 95 % interval over the seeds) over the swept key's values, one line per named
    variant, the teacher's mean dashed; a logarithmic axis when the values are positive and span 100× or more."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    key = f"{primary(sweep)}:objective"
    figure = Figure(figsize=(6.4, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    groups: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for variant in sweep["variants"]:
        interval = sweep["statistics"].get(variant["name"], {}).get(key)
        if interval is not None:
            groups.setdefault(variant["group"], []).append((variant["curve_value"], interval))
    for group, points in groups.items():
        points.sort(key=lambda point: point[0])
        axis.errorbar(
            [x for x, _ in points],
            [interval["mean"] for _, interval in points],
            yerr=_error_bars([interval for _, interval in points]),
            marker="o",
            capsize=3,
            label=group,
        )
    if key in sweep["teacher"]:
        axis.axhline(sweep["teacher"][key]["mean"], color=GREY, linestyle="--", linewidth=1, label="teacher")
    values = [v["curve_value"] for v in sweep["variants"]]
    if min(values) > 0 and max(values) >= 100 * min(values):
        axis.set_xscale("log")
    axis.set_xlabel(sweep["curve"])
    axis.set_ylabel(f"{'held-out' if primary(sweep) == 'heldout' else 'in-run'} objective")
    axis.set_title("objective over the swept key: mean over the seeds, 95 % interval", fontsize=10)
    axis.legend(fontsize=8)
    return figure


def _error_bars(intervals: list[dict[str, Any]]) -> list[list[float]]:
    """matplotlib's asymmetric ``yerr`` (distances below and above the means); NaN (no bar) without an interval."""
    below = [i["mean"] - i["low"] if i["low"] is not None else math.nan for i in intervals]
    above = [i["high"] - i["mean"] if i["high"] is not None else math.nan for i in intervals]
    return [below, above]
