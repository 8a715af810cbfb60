"""``vipkit bench``: several models on the same prompts and seeds, scored by the same rewards; one table, one plot.

Typical use: the teacher next to the models that ``vipkit compress`` made under different rewards or
recipes. Each model's row is stored in ``OUT/models/`` as soon as it is scored, keyed by what made its
videos (options, or the saved folder's manifest digest), so a killed bench resumes with the models it
finished and a changed model is measured again. Scores go through the same checks and score cache as
in ``compress``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from vipkit.atomic import write_json, write_text
from vipkit.bench_matrix import BenchMatrix
from vipkit.errors import VipkitError
from vipkit.interfaces import Objective, mean_scores
from vipkit.media import eight_bit, save_samples
from vipkit.plugins import load_plugins
from vipkit.report import markdown_table
from vipkit.reward_stack import reward_stack
from vipkit.seeds import video_seeds
from vipkit.timing import seconds_per_video

Log = Callable[[str], None]
FORMAT = 2  # 2: videos scored on the 8-bit grid, seconds per video timed after a warm-up (1: neither)
SAMPLE_VIDEOS = 4


def _stored_row(path: Path, log: Log) -> dict[str, Any] | None:
    """A row an earlier bench stored; a damaged one (a torn write, an edit) is measured again, not a traceback."""
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(stored, dict) and isinstance(stored.get("row"), dict):
            return stored
    except (OSError, ValueError):
        pass
    log(f"{path} is damaged: measuring that model again")
    return None


def run_bench(matrix: BenchMatrix, out: Path, log: Log) -> dict[str, Any]:
    """Render and score every model of ``matrix`` into ``out`` (reusing rows stored there); returns ``bench.json``."""
    if out.exists() and not out.is_dir():
        raise VipkitError(f"--out {out} is a file, not a folder; choose a folder for the bench")
    if out.exists() and any(out.iterdir()) and not (out / "models").is_dir():
        raise VipkitError(
            f"{out} exists, is not empty and holds no vipkit bench (no models/ folder); choose another --out folder"
        )
    for sub in ("models", "samples", "cache/scores"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    plugins = load_plugins()
    reward = reward_stack(matrix.reward.build(plugins), plugins, out / "cache" / "scores", matrix.reward_timeout_s)
    objective = Objective(dict(matrix.objective.weights))
    seeds = video_seeds(matrix.seed, "eval", len(matrix.prompts))
    rows = []
    for index, model in enumerate(matrix.models):
        stored = out / "models" / f"{index:03d}-{_slug(model.label)}.json"
        identity = {"format": FORMAT, "seed": matrix.seed, "prompts": matrix.prompts, **model.identity()}
        old = _stored_row(stored, log)
        if old is not None and old.get("identity") == identity:
            rows.append(_rescored(old["row"], objective))
            log(f"{model.label}: reusing its stored videos' scores ({stored})")
            continue
        log(f"{model.label}: building")
        built = model.build(plugins)
        videos = eight_bit(built.generate(matrix.prompts, seeds).videos)  # what a run scores (vipkit.sharded.generate)
        seconds = seconds_per_video(built, matrix.prompts[0], seeds[0])
        try:
            scores = reward.score(videos, matrix.prompts)
        except VipkitError as exc:
            raise VipkitError(f"models[{index}] ({model.label!r}): {exc}") from exc
        save_samples(videos[:SAMPLE_VIDEOS], out / "samples" / f"{index:03d}-{_slug(model.label)}", warn=log)
        row = {
            "label": model.label,
            "parameters": built.num_parameters(),
            "seconds_per_video": seconds,
            "scores": mean_scores(scores),
        }
        write_json(stored, {"identity": identity, "row": row})
        rows.append(_rescored(row, objective))
        log(
            f"{model.label}: objective {rows[-1]['objective']:.4f} · "
            + " · ".join(f"{k} {v:.4f}" for k, v in row["scores"].items())
        )
    results = {"matrix": matrix.source, "seed": matrix.seed, "prompts": len(matrix.prompts), "models": rows}
    write_json(out / "bench.json", results)
    header, table = bench_table(results)
    write_text(
        out / "bench.md",
        f"# vipkit bench: {matrix.source}\n\n{markdown_table(header, table)}\n\n![scores](bench.svg)\n",
    )
    write_text(out / "bench.svg", bar_chart_svg(results))
    return results


def _rescored(row: dict[str, Any], objective: Objective) -> dict[str, Any]:
    """The stored row with the objective of this matrix's weights (they may change without re-rendering)."""
    import torch

    return {**row, "objective": objective({dim: torch.tensor([value]) for dim, value in row["scores"].items()})}


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()[:40] or "model"


def bench_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per model: size relative to the first model, speed, every dimension, objective."""
    rows = results["models"]
    dims = list(rows[0]["scores"])
    first = rows[0]["parameters"]
    header = ["model", "parameters", f"% of {rows[0]['label']}", "s/video", *dims, "objective"]
    body = [
        [
            row["label"],
            f"{row['parameters']:,}",
            f"{100 * row['parameters'] / first:.1f}",
            f"{row['seconds_per_video']:.2f}",
            *(f"{row['scores'][d]:.4f}" for d in dims),
            f"{row['objective']:.4f}",
        ]
        for row in rows
    ]
    return header, body


PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")


def bar_chart_svg(results: dict[str, Any], bar: int = 14, width: int = 360) -> str:
    """Grouped horizontal bars: one group per dimension (and the objective), one bar per model, scores to scale.

    Plain SVG, so the plot needs no plotting library and opens in any browser.
    """
    rows = results["models"]
    groups = [*rows[0]["scores"], "objective"]
    values = [[row["objective"] if g == "objective" else row["scores"][g] for row in rows] for g in groups]
    top = max(1.0, *(v for group in values for v in group))
    left, gap, legend = 190, 12, 22 * len(rows) + 10
    height = legend + len(groups) * (len(rows) * bar + gap) + gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 70}" height="{height}" font-family="sans-serif" font-size="12">'
    ]
    for i, row in enumerate(rows):
        colour = PALETTE[i % len(PALETTE)]
        parts.append(f'<rect class="legend" x="{left}" y="{8 + 22 * i}" width="14" height="14" fill="{colour}"/>')
        parts.append(f'<text x="{left + 20}" y="{19 + 22 * i}">{escape(row["label"])}</text>')
    y = legend
    for group, group_values in zip(groups, values, strict=True):
        parts.append(f'<text x="{left - 8}" y="{y + len(rows) * bar / 2 + 4}" text-anchor="end">{escape(group)}</text>')
        for i, value in enumerate(group_values):
            length = width * max(value, 0.0) / top
            parts.append(
                f'<rect class="bar" data-group="{escape(group)}" data-value="{value:.6g}" x="{left}" y="{y + i * bar}" '
                f'width="{length:.1f}" height="{bar - 2}" fill="{PALETTE[i % len(PALETTE)]}"/>'
            )
            parts.append(
                f'<text x="{left + length + 4:.1f}" y="{y + i * bar + bar - 4}" font-size="10">{value:.3f}</text>'
            )
        y += len(rows) * bar + gap
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
