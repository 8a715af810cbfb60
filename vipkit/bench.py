"""``vipkit bench``: several models on the same prompts and seeds, scored by the same rewards; one table, one plot.

Typical use: the teacher next to the models that ``vipkit compress`` made under different rewards or recipes.

What is kept in ``OUT`` and reused, so a bench never shows a score its matrix would not compute now:

- ``videos/KEY.safetensors``: each model's videos as uint8 (what a run scores: ``vipkit.media.eight_bit``), and
  ``models/KEY.json``: its parameters, seconds per video and mean scores **per reward part**. ``KEY`` hashes
  everything that made the videos: the model's content (``BenchModel.identity``: a saved or exported folder's file
  digests and generation settings; a ``[model]`` table's options and the content of the folder or the hub
  revision they name; the family plugin's version), the prompts and the seeds. The label is not in it: renaming or
  reordering rows measures nothing again, and a changed model is a new key.
- Each reward part's scores are kept under its own identity (name, validated config, plugin and version, as in
  ``vipkit.score_cache``): a matrix whose rewards change scores only the parts it lacks, on the stored videos
  (the model is neither built nor run), and shows exactly its own parts' columns, its objective over those.
  Videos are kept rather than generated again because they are cheap beside a render (measured: 25 KB per shapes
  video against 0.7-7 s of CPU; 12.6 MB per 512² 16-frame AnimateDiff video against 4.3 s of an H200) and a
  regenerated video need not be bit-identical on a GPU. Deleting ``videos/`` only costs a re-render when a new
  reward part needs them; re-rendered videos that differ from the stored ones are scored by every part again.
- A model whose build, generation or scoring fails becomes a row marked with its one-paragraph error; the others
  complete, ``bench.md`` lists the errors under the table, and ``vipkit bench`` exits ``SOME_ROWS_FAILED``.
  Whatever a failed row did finish (its videos, the parts that scored) is kept, so re-running redoes only the rest.

Rows that are vipkit models show their provenance (``vipkit.provenance``): "guided by" and "budget".
Scores go through the same checks and score cache as in ``compress`` (``vipkit.reward_stack``).

A matrix with ``[[recipes]]`` (``vipkit.bench_recipes``) first runs the compressions the folder lacks, each a normal
run folder ``OUT/runs/FINGERPRINT`` (``Recipe.fingerprint``): a finished one is reused, a killed one resumes, a
failed one becomes a row marked with its error. Their models and teachers are rows like the others, and
``vipkit.bench_grid`` reads the rows into the grid "guided by × judged by" (``grid.csv``, ``grid.png``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from vipkit.atomic import write_json, write_text
from vipkit.bench_grid import HEATMAP, TABLE_CSV, grid, grid_markdown, write_grid_csv, write_heatmap
from vipkit.bench_matrix import BenchMatrix, BenchModel
from vipkit.bench_recipes import Compression
from vipkit.errors import VipkitError
from vipkit.interfaces import Objective, mean_scores
from vipkit.media import from_uint8, save_samples, to_uint8
from vipkit.plugins import Plugins, load_plugins
from vipkit.provenance import budget, guided_by, recipe_record, reward_part_identity
from vipkit.report import markdown_table
from vipkit.reward_stack import reward_stack
from vipkit.rundir import finished_results
from vipkit.seeds import video_seeds
from vipkit.timing import seconds_per_video
from vipkit.validation import CombinedRewardSpec, ComponentSpec

if TYPE_CHECKING:
    from torch import Tensor

Log = Callable[[str], None]
FORMAT = 3  # 3: rows keyed by content, scores per reward part, videos kept (2: one identity per row and index)
SAMPLE_VIDEOS = 4
RUNS = "runs"  # OUT/runs/FINGERPRINT: the run folder of each compression a matrix's [[recipes]] ask for
SOME_ROWS_FAILED = 3
"""Exit code of ``vipkit bench`` when it finished but some rows failed (the table and bench.json are written, the
errors listed); 2 stays "nothing was benched" (a bad matrix, a busy or foreign --out), 1 a bug outside any row."""


@dataclass(frozen=True)
class RewardPart:
    """One part of the matrix's reward: its columns (``alias.dimension``; a single ``[reward]`` keeps plain
    dimension names) and the identity its scores are kept under."""

    alias: str | None
    spec: ComponentSpec
    identity: dict[str, Any]
    dimensions: tuple[str, ...]

    @property
    def key(self) -> str:
        return _digest(self.identity)[:16]

    @property
    def columns(self) -> list[str]:
        return [f"{self.alias}.{dim}" if self.alias else dim for dim in self.dimensions]

    @property
    def label(self) -> str:
        return f"{self.alias or self.spec.name} ({self.spec.name!r})"


def reward_parts(reward: ComponentSpec | CombinedRewardSpec, plugins: Plugins) -> list[RewardPart]:
    """The matrix's reward as parts, in file order, known without building any reward model."""
    parts = reward.parts.items() if isinstance(reward, CombinedRewardSpec) else [(None, reward)]
    return [
        RewardPart(
            alias,
            spec,
            reward_part_identity(spec, plugins.provider("rewards", spec.name)),
            spec.dimensions(plugins),
        )
        for alias, spec in parts
    ]


class _Scorers:
    """Each reward part built when a row first needs it (a bench reusing every score loads no reward model),
    checked and cached as in a run; a part that fails to build fails every row that needs it, built once."""

    def __init__(self, plugins: Plugins, cache: Path, timeout_s: float) -> None:
        self.plugins, self.cache, self.timeout_s = plugins, cache, timeout_s
        self.built: dict[str, Any] = {}

    def score(self, part: RewardPart, videos: Tensor, prompts: list[str]) -> dict[str, float]:
        if part.key not in self.built:
            try:
                self.built[part.key] = reward_stack(
                    part.spec.build(self.plugins), self.plugins, self.cache, self.timeout_s
                )
            except Exception as exc:  # noqa: BLE001 (reported in every row that needs the part)
                self.built[part.key] = exc
        reward = self.built[part.key]
        if isinstance(reward, Exception):
            raise reward
        return mean_scores(reward.score(videos, prompts))


class _RowFailed(Exception):
    """A row's one-paragraph error (``_Bench._step``), shown in its row."""


class _Bench:
    def __init__(self, matrix: BenchMatrix, out: Path, log: Log, debug: bool, plugins: Plugins) -> None:
        self.matrix, self.out, self.log, self.debug, self.plugins = matrix, out, log, debug, plugins
        self.parts = reward_parts(matrix.reward, self.plugins)
        self.scorers = _Scorers(self.plugins, out / "cache" / "scores", matrix.reward_timeout_s)
        self.seeds = video_seeds(matrix.seed, "eval", len(matrix.prompts))
        self.objective = Objective(dict(matrix.objective.weights))

    def row(self, index: int, model: BenchModel) -> dict[str, Any]:
        """The row of ``model`` as bench.json shows it: its measures, this matrix's columns, provenance, error."""
        where = f"{model.where} ({model.label!r})".lstrip()
        shown: dict[str, Any] = {"label": model.label, "guided_by": "—", "budget": "—", "provenance": None}
        measured: dict[str, Any] = {}
        done: dict[str, Any] = {}
        errors: list[str] = []
        try:
            provenance, stage = self._step(where, "reading the model", model.provenance)
            if provenance is None:
                shown["guided_by"] = "teacher"
            else:
                shown.update(provenance=provenance, guided_by=guided_by(provenance), budget=budget(provenance, stage))
            identity = {
                "format": FORMAT,
                "model": self._step(where, "reading the model", lambda: model.identity(self.plugins)),
                "prompts": self.matrix.prompts,
                "seeds": self.seeds,
            }
            measured, done, errors = self.measure(index, model, identity, where)
        except _RowFailed as failed:
            errors.append(str(failed))
        scores = {
            column: done[part.key]["scores"][dim]
            for part in self.parts
            if part.key in done
            for column, dim in zip(part.columns, part.dimensions, strict=True)
        }
        complete = len(scores) == sum(len(part.columns) for part in self.parts)
        objective = self.objective({dim: _tensor(value) for dim, value in scores.items()}) if complete else None
        return {
            **shown,
            "parameters": measured.get("parameters"),
            "seconds_per_video": measured.get("seconds_per_video"),
            "scores": scores,
            "objective": objective,
            "error": " ".join(errors) or None,
        }

    def measure(
        self, index: int, model: BenchModel, identity: dict[str, Any], where: str
    ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        """The model's stored or new measures and per-part scores (by part key), and the errors of the parts that
        failed to score; a failure to build or render raises ``_RowFailed``."""
        key = _digest(identity)[:32]
        row_path, videos_path = self.out / "models" / f"{key}.json", self.out / "videos" / f"{key}.safetensors"
        stem = self.out / "samples" / f"{index:03d}-{_slug(model.label)}"
        stored = _stored_row(row_path, identity, self.log)
        measured, done = (stored["measured"], dict(stored["parts"])) if stored else ({}, {})
        missing = [part for part in self.parts if part.key not in done]
        sample = stem.with_suffix(".gif")
        kept = None  # the stored videos, read only when scoring or a missing sample (a renamed row) needs them
        if stored and (missing or not sample.exists()):
            kept = _stored_videos(videos_path, measured["videos_sha256"])
        rendered = bool(missing) and kept is None
        if not missing:
            self.log(f"{model.label}: reusing its stored videos' scores ({row_path})")
        elif rendered:
            kept, measured = self.render(model, where)
            _store_videos(videos_path, kept)
            if stored and stored["measured"]["videos_sha256"] != measured["videos_sha256"]:
                self.log(f"{model.label}: its videos differ from the stored ones: scoring them with every reward again")
                done, missing = {}, list(self.parts)
            write_json(row_path, {"identity": identity, "measured": measured, "parts": done})
        if kept is not None and (rendered or not sample.exists()):
            save_samples(from_uint8(kept[:SAMPLE_VIDEOS]), stem, warn=self.log)
        if stored and missing and len(missing) < len(self.parts):
            self.log(
                f"{model.label}: reusing the stored scores of {len(self.parts) - len(missing)} reward part(s), "
                f"scoring {', '.join(part.label for part in missing)}"
            )
        errors = []
        videos = from_uint8(kept) if missing and kept is not None else None  # what a run scores: the 8-bit grid
        for part in missing:
            try:
                scores = self._step(
                    where, f"scoring with reward {part.label}", self.scorers.score, part, videos, self.matrix.prompts
                )
            except _RowFailed as failed:
                errors.append(str(failed))
                continue
            done[part.key] = {"reward": part.identity, "scores": scores}
            write_json(row_path, {"identity": identity, "measured": measured, "parts": done})
        return measured, done, errors

    def render(self, model: BenchModel, where: str) -> tuple[Tensor, dict[str, Any]]:
        """Build ``model``, render the matrix's videos as uint8 (``vipkit.media.to_uint8``), time one video."""
        self.log(f"{model.label}: building")
        built = self._step(where, "building the model", model.build, self.plugins)
        prompts = self.matrix.prompts
        videos = self._step(
            where, "generating its videos", lambda: to_uint8(built.generate(prompts, self.seeds).videos)
        )
        seconds = self._step(where, "timing it", seconds_per_video, built, prompts[0], self.seeds[0])
        return videos, {
            "parameters": built.num_parameters(),
            "seconds_per_video": seconds,
            "generation_settings": built.generation_settings,
            "videos_sha256": _videos_sha256(videos),
        }

    def compressed(self, compression: Compression, where: str) -> BenchModel | dict[str, Any]:
        """The row model of ``compression``'s final model, compressing first unless its run folder holds a finished
        run of that recipe (a killed one resumes); a failed compression is a row with its error."""
        from vipkit.engine import compress

        run = self.out / RUNS / compression.fingerprint
        if finished_results(run, compression.fingerprint) is not None:
            self.log(f"{compression.label}: reusing its finished compression ({run})")
            return BenchModel(compression.label, path=run / "model", where=where)
        started = (run / "resolved.json").exists()
        self.log(f"{compression.label}: {'resuming' if started else 'running'} its compression in {run}")
        try:
            self._step(
                f"{where} ({compression.label!r})",
                "compressing",
                compress,
                compression.recipe,
                compression.text,
                run,
                lambda line: self.log(f"{compression.label}: {line}"),
            )
        except _RowFailed as failed:
            record = recipe_record(compression.recipe)
            return {
                "label": compression.label,
                "guided_by": guided_by(record),
                "budget": budget(record),
                "provenance": record,
                "parameters": None,
                "seconds_per_video": None,
                "scores": {},
                "objective": None,
                "error": str(failed),
            }
        return BenchModel(compression.label, path=run / "model", where=where)

    def _step(self, where: str, what: str, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)``; any exception (not Ctrl-C) becomes this row's one-paragraph error."""
        try:
            return call(*args)
        except Exception as exc:  # noqa: BLE001 (a row's failure is reported in its row, the others go on)
            if self.debug:
                self.log("".join(traceback.format_exception(exc)).rstrip())
            text = re.sub(r"^models\[\d+\] \('[^']*'\): ", "", _paragraph(exc))  # the [model] table's own prefix
            message = f"{where}: {what}: {text}"
            self.log(f"failed: {message}")
            raise _RowFailed(message) from exc


def run_bench(
    matrix: BenchMatrix, out: Path, log: Log, debug: bool = False, plugins: Plugins | None = None
) -> dict[str, Any]:
    """Render and score every model of ``matrix`` into ``out`` (reusing what is stored there); returns ``bench.json``.

    Rows that fail carry their ``error`` and leave the rest to complete; ``debug`` logs their tracebacks.
    ``plugins``: the components to build from (default: every installed plugin).
    """
    if out.exists() and not out.is_dir():
        raise VipkitError(f"--out {out} is a file, not a folder; choose a folder for the bench")
    if out.exists() and any(out.iterdir()) and not (out / "models").is_dir():
        raise VipkitError(
            f"{out} exists, is not empty and holds no vipkit bench (no models/ folder); choose another --out folder"
        )
    for sub in ("models", "videos", "samples", "cache/scores"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    bench = _Bench(matrix, out, log, debug, plugins or load_plugins())
    entries: list[BenchModel | dict[str, Any]] = list(matrix.models)
    entries += [
        bench.compressed(compression, f"{recipe.key} seed {compression.seed}")
        for recipe in matrix.recipes
        for compression in recipe.compressions
    ]
    rows = []
    for index, entry in enumerate(entries):
        rows.append(bench.row(index, entry) if isinstance(entry, BenchModel) else entry)
        row = rows[-1]
        if row["objective"] is not None:
            log(
                f"{row['label']}: objective {row['objective']:.4f} · "
                + " · ".join(f"{k} {v:.4f}" for k, v in row["scores"].items())
            )
    results = {
        "format": FORMAT,
        "matrix": matrix.source,
        "seed": matrix.seed,
        "prompts": len(matrix.prompts),
        "rewards": [{"as": part.alias, **part.identity, "columns": part.columns} for part in bench.parts],
        "columns": [column for part in bench.parts for column in part.columns],
        "models": rows,
        "failed": [row["label"] for row in rows if row["error"]],
    }
    if matrix.recipes:
        results["compressions"] = {
            compression.label: str(out / RUNS / compression.fingerprint)
            for recipe in matrix.recipes
            for compression in recipe.compressions
        }
        results["grid"] = grid(matrix, rows, [(part.alias or part.spec.name, part.columns) for part in bench.parts])
        write_grid_csv(results, out / TABLE_CSV)
        write_heatmap(results, out / HEATMAP)
    write_json(out / "bench.json", results)
    write_text(out / "bench.md", bench_markdown(results))
    write_text(out / "bench.svg", bar_chart_svg(results))
    return results


def bench_markdown(results: dict[str, Any]) -> str:
    """bench.md: the grid (when the matrix has [[recipes]]), the table, the plot, and each failed row's error with what
    re-running does."""
    text = f"# vipkit bench: {results['matrix']}\n\n"
    if "grid" in results:
        text += grid_markdown(results) + "\n## Every model\n\n"
    text += f"{markdown_table(*bench_table(results))}\n\n![scores](bench.svg)\n"
    failed = [row for row in results["models"] if row.get("error")]
    if failed:
        text += "\n## Failed rows\n\n" + "".join(f"- **{row['label']}**: {row['error']}\n" for row in failed)
        text += "\nRe-running the same command retries them; what the other rows measured is reused.\n"
    return text


def _stored_row(path: Path, identity: dict[str, Any], log: Log) -> dict[str, Any] | None:
    """A row an earlier bench stored for these videos; a damaged one (a torn write, an edit) is measured again,
    not a traceback."""
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if (
            isinstance(stored, dict)
            and stored.get("identity") == identity
            and isinstance(stored.get("measured"), dict)
            and isinstance(stored.get("parts"), dict)
            and "videos_sha256" in stored["measured"]
        ):
            return stored
    except (OSError, ValueError):
        pass
    log(f"{path} is damaged: measuring that model again")
    return None


def _store_videos(path: Path, videos: Tensor) -> None:
    """uint8 videos in one safetensors file, written whole or not at all."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({"videos": videos.contiguous()}, str(tmp))
    os.replace(tmp, path)


def _stored_videos(path: Path, sha256: str) -> Tensor | None:
    """The stored uint8 videos; None when missing, damaged or not the videos the row's scores were computed on."""
    from safetensors.torch import load_file

    from vipkit.weights import check_safetensors

    try:
        check_safetensors(path)
        videos = load_file(str(path))["videos"]
    except Exception:  # noqa: BLE001 (missing or damaged: rendered again)
        return None
    return videos if _videos_sha256(videos) == sha256 else None


def _videos_sha256(videos: Tensor) -> str:
    digest = hashlib.sha256(f"{tuple(videos.shape)}|".encode())
    digest.update(videos.contiguous().view(-1).numpy())
    return digest.hexdigest()


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _tensor(value: float) -> Tensor:
    import torch

    return torch.tensor([value])


def _paragraph(exc: BaseException) -> str:
    """An exception in the words the CLI would use: a user error as it is, a file-system error with its path, any
    other as a bug with where it was raised; on one line."""
    from vipkit.failures import describe, os_error_of, raised_at

    if isinstance(exc, VipkitError):
        text = str(exc)
    elif (os_error := os_error_of(exc)) is not None:
        text = describe(os_error)
    else:
        text = (
            f"internal error: {type(exc).__name__}: {exc} (raised at {raised_at(exc)}); a bug in vipkit or in a "
            "plugin it loaded (vipkit --debug bench ... shows the traceback)"
        )
    return " ".join(text.split())


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()[:40] or "model"


def bench_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per model: provenance, size relative to the first measured model, speed, every dimension
    of the matrix's rewards, objective; a failed row shows what it measured, "—" elsewhere, and "failed".
    Reads bench.json files of every format (a model card may quote an old one)."""
    rows = results["models"]
    columns = results.get("columns") or list(rows[0]["scores"])
    first = next((row for row in rows if row.get("parameters")), None)
    header = [
        "model",
        "guided by",
        "budget",
        "parameters",
        f"% of {first['label'] if first else 'first'}",
        "s/video",
        *columns,
        "objective",
    ]

    def number(value: float | None, form: str) -> str:
        return "—" if value is None else format(value, form)

    body = [
        [
            row["label"],
            row.get("guided_by", "—"),
            row.get("budget", "—"),
            number(row.get("parameters"), ","),
            number(100 * row["parameters"] / first["parameters"] if first and row.get("parameters") else None, ".1f"),
            number(row.get("seconds_per_video"), ".2f"),
            *(number(row["scores"].get(column), ".4f") for column in columns),
            "failed" if row.get("error") else number(row.get("objective"), ".4f"),
        ]
        for row in rows
    ]
    return header, body


PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")


def bar_chart_svg(results: dict[str, Any], bar: int = 14, width: int = 360) -> str:
    """Grouped horizontal bars: one group per dimension (and the objective), one bar per model with every score
    (a failed row has no bars), scores to scale.

    Plain SVG, so the plot needs no plotting library and opens in any browser.
    """
    rows = [row for row in results["models"] if row.get("objective") is not None]
    groups = [*results["columns"], "objective"]
    values = [[row["objective"] if g == "objective" else row["scores"][g] for row in rows] for g in groups]
    top = max([1.0, *(v for group in values for v in group)])
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
