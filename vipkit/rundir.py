"""The run directory: what a run wrote, how to find the newest finished work, and resume checks.

Layout::

    recipe.toml          the recipe as given          resolved.json   the resolved recipe + fingerprint
    environment.json     versions, plugins, seed      metrics.jsonl   one JSON object per training step
    cache/teacher/       teacher videos by (prompt, seed, settings)
    cache/scores/        reward results by (video, prompt, reward, config)
    stages/stage-NNN.pairs/   pruning decision + preference pairs of a stage (written before training)
    stages/stage-NNN/    a finished stage: model/ + stage.json (written last)
    checkpoints/stage-NNN-step-XXXXXXXX/   training checkpoints inside a stage (vipkit.checkpoint)
    samples/             NAME.gif + NAME.mp4 (H.264): evaluation videos side by side, to look at
    model/               the final compressed model      results.json, report.md
    .vipkit.lock         held (flock) by the one process running in the folder (vipkit.run_lock)
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from vipkit.atomic import write_json, write_text
from vipkit.errors import VipkitError
from vipkit.plugins import Plugins
from vipkit.recipe import Recipe
from vipkit.run_lock import LOCK_NAME

_VERSIONED = ("vipkit", "torch", "diffusers", "transformers", "safetensors", "pluggy", "pydantic")


def _versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object the run wrote; damage becomes a ``VipkitError`` naming the file, not a traceback."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VipkitError(
            f"cannot read {path} ({exc}); the run folder is damaged: delete that file's folder to redo it, or use another --out"
        ) from None
    if not isinstance(data, dict):
        raise VipkitError(
            f"{path} is damaged: it holds no JSON object; delete that file's folder to redo it, or use another --out"
        )
    return data


class RunDirectory:
    """One run's folder; opening an existing one checks it was made by the same recipe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._metric_stages: set[Any] = set()  # stages whose earlier metric lines this process has reconciled

    @classmethod
    def check(cls, root: Path, recipe: Recipe) -> None:
        """Refuse ``root`` as this recipe's run folder before anything is built or written: a file, a folder of
        other things, a run of another recipe, or damaged records the resume would read (named with the fix)."""
        resolved = root / "resolved.json"
        if root.exists() and not root.is_dir():
            raise VipkitError(f"--out {root} is a file, not a folder; choose a folder for the run")
        if resolved.exists():
            stored = _read_json(resolved).get("fingerprint")
            if stored != recipe.fingerprint():
                raise VipkitError(
                    f"{root} holds a run of a different recipe (fingerprint {stored}, this recipe "
                    f"{recipe.fingerprint()}); resuming it would mix two runs. Resume it with the recipe and --set "
                    f"options it was started with (see {root / 'recipe.toml'}), use another --out folder, or delete "
                    "that one to start over."
                )
            cls(root).check_records()
            return
        if root.exists() and any(path.name != LOCK_NAME for path in root.iterdir()):
            raise VipkitError(
                f"{root} exists, is not empty and holds no vipkit run (no resolved.json); choose another --out folder"
            )

    @classmethod
    def open(cls, root: Path, recipe: Recipe, recipe_text: str, plugins: Plugins) -> RunDirectory:
        run = cls(root)
        resolved = root / "resolved.json"
        cls.check(root, recipe)
        if resolved.exists():
            return run
        for sub in ("cache/teacher", "stages", "samples", "checkpoints"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        write_text(root / "recipe.toml", recipe_text)
        write_json(
            root / "environment.json",
            {
                "seed": recipe.seed,
                "versions": _versions(),
                "plugins": [
                    {
                        "name": p.name,
                        "source": p.source,
                        "version": p.version,
                        "components": p.components,
                        "error": p.error,
                    }
                    for p in plugins.infos
                ],
            },
        )
        write_json(
            resolved, {"fingerprint": recipe.fingerprint(), "recipe": recipe.dump()}
        )  # last: marks the run as started
        return run

    # -- places -------------------------------------------------------------------------------
    @property
    def teacher_cache(self) -> Path:
        return self.root / "cache" / "teacher"

    @property
    def score_cache(self) -> Path:
        return self.root / "cache" / "scores"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def final_model(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def stage_dir(self, stage: int) -> Path:
        return self.root / "stages" / f"stage-{stage:03d}"

    def pairs_dir(self, stage: int) -> Path:
        return self.root / "stages" / f"stage-{stage:03d}.pairs"

    # -- state --------------------------------------------------------------------------------
    def finished_stages(self) -> list[dict[str, Any]]:
        """Records of the finished stages 1..k, in order (a stage counts once its stage.json exists)."""
        records = []
        stage = 1
        while (self.stage_dir(stage) / "stage.json").exists():
            records.append(_read_json(self.stage_dir(stage) / "stage.json"))
            stage += 1
        return records

    def check_records(self) -> None:
        """Read every record a resume reads (each finished stage's ``stage.json``; the stored pruning decision and
        pairs of the stages still to do): damage is refused now, naming the file and the folder to delete."""
        stage = 1
        while (self.stage_dir(stage) / "stage.json").exists():
            record = self.stage_dir(stage) / "stage.json"
            _read_record(record, ("removed_blocks", "train", "distilled"), self.stage_dir(stage), f"redo stage {stage}")
            stage += 1
        for pairs in sorted((self.root / "stages").glob("stage-*.pairs")):
            number = pairs.name.removeprefix("stage-").removesuffix(".pairs")
            if not number.isdigit() or int(number) < stage:
                continue  # a finished stage never reads its pairs again
            redo = f"prune and curate stage {int(number)} anew"
            if (pairs / "prune.json").exists():
                _read_record(
                    pairs / "prune.json", ("removed_blocks", "pruned", "degraded_dimensions", "pairs"), pairs, redo
                )
            if (pairs / "pairs.json").exists():
                _read_record(pairs / "pairs.json", ("prompts", "seeds", "target_dimensions"), pairs, redo)

    def kept(self) -> str:
        """What this run folder keeps, in words, for a message about a failure: "Kept in RUN: stage 1, ..."."""
        if not (self.root / "resolved.json").exists():
            return f"Nothing of a run was written to {self.root} yet"
        finished = 0
        while (self.stage_dir(finished + 1) / "stage.json").exists():
            finished += 1
        parts = [f"stages 1-{finished}" if finished > 1 else "stage 1"] if finished else []
        if (self.root / "results.json").exists() and (self.final_model / "vipkit_model.json").exists():
            parts.append("the finished run's results and model")
        nxt = finished + 1
        if (self.pairs_dir(nxt) / "prune.json").exists():
            parts.append(f"stage {nxt}'s pruning decision and pairs")
        steps = sorted(
            int(path.name.rsplit("-", 1)[1])
            for path in self.checkpoints.glob(f"stage-{nxt:03d}-step-*")
            if (path / "manifest.json").exists()
        )
        if steps:
            parts.append(f"stage {nxt}'s training checkpoint at step {steps[-1]}")
        what = ", ".join(parts) if parts else "the run's recipe and caches (no stage finished yet)"
        return (
            f"Kept in {self.root}: {what}; every file and folder vipkit writes appears whole or not at all, so nothing "
            "finished is damaged (half-written staging folders are removed on resume)"
        )

    def discard_unfinished(self) -> None:
        """Remove staging leftovers of a killed run (never anything finished)."""
        for leftover in self.root.rglob(".*.staging"):
            shutil.rmtree(leftover, ignore_errors=True)

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one training step's metrics to ``metrics.jsonl``, one line per (stage, step).

        A resumed run redoes the steps after its last checkpoint: before its first line of a stage, the
        lines that stage's killed run wrote from that step on (and a line torn by the kill) are dropped.
        """
        path = self.root / "metrics.jsonl"
        stage = record.get("stage")
        if stage not in self._metric_stages and path.exists():
            lines = path.read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if not _redone(line, stage, record.get("step"))]
            if len(kept) != len(lines):
                write_text(path, "".join(line + "\n" for line in kept))
        self._metric_stages.add(stage)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _read_record(path: Path, keys: tuple[str, ...], folder: Path, redo: str) -> None:
    """A record of the run with ``keys``; damage is a ``VipkitError`` naming the file and the folder to delete."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        problem = None if isinstance(data, dict) else "it holds no JSON object"
    except (OSError, ValueError) as exc:
        data, problem = None, str(exc)
    missing = [key for key in keys if isinstance(data, dict) and key not in data]
    if missing:
        problem = f"it lacks {', '.join(missing)}"
    if problem:
        raise VipkitError(
            f"{path} is damaged ({problem}); nothing was changed. Delete the folder {folder} to {redo} (the stages "
            f"before it are kept), then run the same command again; or start over with another --out."
        )


def _redone(line: str, stage: Any, step: Any) -> bool:
    """Whether a metrics line is torn, or is of ``stage`` at ``step`` or later (about to be logged again)."""
    try:
        old = json.loads(line)
    except json.JSONDecodeError:
        return True
    return isinstance(old, dict) and old.get("stage") == stage and isinstance(step, int) and old.get("step", -1) >= step


FINISHED_KEYS = ("teacher", "stages", "final", "seconds")


def finished_results(folder: Path, fingerprint: str) -> dict[str, Any] | None:
    """What ``folder/results.json`` holds when the folder is a finished run of the recipe with ``fingerprint`` (its
    results whole and its final model saved); None when it is to be run or resumed (absent, torn, another recipe's)."""
    from vipkit.saved_model import MANIFEST

    try:
        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict) or results.get("fingerprint") != fingerprint:
        return None
    if not all(key in results for key in FINISHED_KEYS) or not (folder / "model" / MANIFEST).is_file():
        return None
    return results
