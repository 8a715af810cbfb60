"""The cross-reward grid: each ``[[recipes]]`` guide of a bench matrix against each of its judging rewards.

The one way to see a compression that only games its guiding reward is to judge it by others. ``vipkit bench``
compresses what the matrix's ``[[recipes]]`` ask for (``vipkit.bench_recipes``), scores those models and their
teacher like any row, then this module reads the rows into a table "guided by × judged by":

- a row per guide (its ``label``), a column per judging dimension (``alias.dimension``), the mean of each judging
  reward part with several dimensions, and the matrix's objective when it has several parts;
- each cell: the compressed model's score minus its teacher's, on the bench's prompts and seeds; with several
  compression seeds, the mean and the standard deviation over those whose row scored (``n``), each seed's value kept;
- a cell whose compressions (or teacher) all failed says so, with their one-paragraph errors.

It lands in ``bench.json`` (``grid``), ``bench.md`` (above the rows), ``grid.csv`` (one line per cell) and
``grid.png`` (a heatmap). Only the Agg canvas of matplotlib is used, imported when it draws.
"""

from __future__ import annotations

import csv
import io
import os
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vipkit.atomic import write_text
from vipkit.report import markdown_table

if TYPE_CHECKING:
    from vipkit.bench_matrix import BenchMatrix

HEATMAP = "grid.png"
TABLE_CSV = "grid.csv"


def judged_columns(parts: list[tuple[str, list[str]]]) -> list[str]:
    """The grid's columns from the judging reward parts (label, columns): every dimension, each part's mean when it
    has several, and the objective when there are several parts."""
    columns = [column for _, part_columns in parts for column in part_columns]
    columns += [f"{label} mean" for label, part_columns in parts if len(part_columns) > 1]
    return columns + (["objective"] if len(parts) > 1 else [])


def row_values(row: dict[str, Any], parts: list[tuple[str, list[str]]]) -> dict[str, float]:
    """A bench row's value in every grid column it scored (a part's mean only when all its dimensions scored)."""
    values = dict(row["scores"])
    for label, part_columns in parts:
        if len(part_columns) > 1 and all(column in values for column in part_columns):
            values[f"{label} mean"] = statistics.fmean(values[column] for column in part_columns)
    if len(parts) > 1 and row.get("objective") is not None:
        values["objective"] = row["objective"]
    return values


def grid(matrix: BenchMatrix, rows: list[dict[str, Any]], parts: list[tuple[str, list[str]]]) -> dict[str, Any]:
    """``bench.json``'s ``grid``: the teachers' scores and, per guide, every cell (see the module)."""
    by_label = {row["label"]: row for row in rows}
    columns = judged_columns(parts)
    teachers = {label: row_values(by_label[label], parts) for label in dict.fromkeys(matrix.teachers.values())}
    guides = []
    for recipe in matrix.recipes:
        teacher_label = matrix.teachers[recipe.label]
        teacher, teacher_row = teachers[teacher_label], by_label[teacher_label]
        models = [by_label[compression.label] for compression in recipe.compressions]
        cells = {}
        for column in columns:
            changes, errors = {}, []
            for compression, row in zip(recipe.compressions, models, strict=True):
                value = row_values(row, parts).get(column)
                if value is not None and column in teacher:
                    changes[compression.seed] = value - teacher[column]
                elif row.get("error") or teacher_row.get("error"):
                    errors.append(row.get("error") or teacher_row["error"])
            values = list(changes.values())
            cells[column] = {
                "mean": statistics.fmean(values) if values else None,
                "sd": statistics.stdev(values) if len(values) > 1 else None,
                "n": len(values),
                "change_per_seed": {str(seed): change for seed, change in changes.items()},
                "error": " ".join(dict.fromkeys(errors)) or None,
            }
        guides.append(
            {
                "guided_by": recipe.label,
                "teacher": teacher_label,
                "seeds": [compression.seed for compression in recipe.compressions],
                "models": [compression.label for compression in recipe.compressions],
                "cells": cells,
            }
        )
    return {"columns": columns, "teachers": teachers, "guides": guides}


def grid_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: each teacher's own scores, then one row per guide of ``change ± sd`` cells."""
    table = results["grid"]
    columns = table["columns"]
    rows = [
        [f"{label} (its score)", *(_number(scores.get(column), ".4f") for column in columns)]
        for label, scores in table["teachers"].items()
    ]
    for guide in table["guides"]:
        cells = [guide["cells"][column] for column in columns]
        rows.append([guide["guided_by"], *(_cell(cell, len(guide["seeds"])) for cell in cells)])
    return ["guided by ↓ · judged by →", *columns], rows


def grid_markdown(results: dict[str, Any]) -> str:
    """The grid's part of bench.md: what a cell is, the table, the heatmap, the failed cells' errors."""
    table = results["grid"]
    seeds = sorted({len(guide["seeds"]) for guide in table["guides"]})
    several = any(count > 1 for count in seeds)
    text = (
        "## Guided by × judged by\n\n"
        "Each cell: the score of a model compressed under the row's guide, judged by the column's reward, minus its "
        "teacher's score on the same prompts and seeds"
        + (
            f"; mean ± standard deviation over the guide's {' or '.join(map(str, seeds))} compression seeds (a "
            "cell with fewer says `n = k`)"
            if several
            else ""
        )
        + ". The first line(s): the teacher's own scores.\n\n"
        + markdown_table(*grid_table(results))
        + f"\n\n![guided by × judged by]({HEATMAP})\n"
    )
    failed = [
        (guide["guided_by"], column, cell["error"])
        for guide in table["guides"]
        for column, cell in guide["cells"].items()
        if cell["error"]
    ]
    if failed:
        errors = dict.fromkeys(error for _, _, error in failed)
        text += "\nCells with a failed compression or score: " + "; ".join(
            dict.fromkeys(f"{guide} × {column}" for guide, column, _ in failed)
        )
        text += ".\n\n" + "".join(f"- {error}\n" for error in errors)
    return text


def write_grid_csv(results: dict[str, Any], path: Path) -> None:
    """grid.csv: one line per cell (guided by, judged by, the teacher's score, the change's mean, sd, n, per seed)."""
    table = results["grid"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "guided_by",
            "judged_by",
            "teacher",
            "teacher_score",
            "change_mean",
            "change_sd",
            "n",
            "change_per_seed",
            "error",
        ]
    )
    for guide in table["guides"]:
        teacher = table["teachers"][guide["teacher"]]
        for column in table["columns"]:
            cell = guide["cells"][column]
            per_seed = " ".join(f"{seed}:{value:.6g}" for seed, value in cell["change_per_seed"].items())
            writer.writerow(
                [
                    guide["guided_by"],
                    column,
                    guide["teacher"],
                    _csv_number(teacher.get(column)),
                    _csv_number(cell["mean"]),
                    _csv_number(cell["sd"]),
                    cell["n"],
                    per_seed,
                    cell["error"] or "",
                ]
            )
    write_text(path, buffer.getvalue())


def write_heatmap(results: dict[str, Any], path: Path) -> None:
    """grid.png: the mean changes as colours (red: worse than the teacher, blue: better; one scale centred on 0),
    each cell annotated with its mean and sd; a failed cell grey, "failed". Written whole or not at all."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    table = results["grid"]
    columns, guides = table["columns"], table["guides"]
    means = [[guide["cells"][column]["mean"] for column in columns] for guide in guides]
    largest = max([abs(v) for row in means for v in row if v is not None], default=0.0) or 1.0
    figure = Figure(figsize=(2.0 + 1.15 * len(columns), 1.6 + 0.62 * len(guides)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    image = axis.imshow(
        [[float("nan") if v is None else v for v in row] for row in means],
        cmap=colormaps["RdBu"].with_extremes(bad="lightgrey"),
        norm=TwoSlopeNorm(0.0, -largest, largest),
        aspect="auto",
    )
    for y, guide in enumerate(guides):
        for x, column in enumerate(columns):
            cell = guide["cells"][column]
            label = "failed" if cell["mean"] is None else f"{cell['mean']:+.3f}"
            if cell["sd"] is not None:
                label += f"\n±{cell['sd']:.3f}"
            dark = cell["mean"] is not None and abs(cell["mean"]) > 0.6 * largest
            axis.text(x, y, label, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    axis.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    axis.set_yticks(range(len(guides)), [guide["guided_by"] for guide in guides], fontsize=8)
    axis.set_xlabel("judged by")
    axis.set_ylabel("guided by")
    several = any(len(guide["seeds"]) > 1 for guide in guides)
    axis.set_title("change vs the teacher" + (" (mean ± sd over seeds)" if several else ""), fontsize=10)
    figure.colorbar(image, ax=axis, shrink=0.8)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    figure.savefig(temporary, format="png")
    os.replace(temporary, path)


def _cell(cell: dict[str, Any], seeds: int) -> str:
    if cell["mean"] is None:
        return "failed"
    text = f"{cell['mean']:+.3f}" + (f" ± {cell['sd']:.3f}" if cell["sd"] is not None else "")
    return text + (f" (n = {cell['n']})" if cell["n"] < seeds else "")


def _number(value: float | None, form: str) -> str:
    return "—" if value is None else format(value, form)


def _csv_number(value: float | None) -> str:
    return "" if value is None else repr(value)
