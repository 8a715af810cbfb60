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
    def open(cls, root: Path, recipe: Recipe, recipe_text: str, plugins: Plugins) -> RunDirectory:
        run = cls(root)
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
            return run
        if root.exists() and any(root.iterdir()):
            raise VipkitError(
                f"{root} exists, is not empty and holds no vipkit run (no resolved.json); choose another --out folder"
            )
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


def _redone(line: str, stage: Any, step: Any) -> bool:
    """Whether a metrics line is torn, or is of ``stage`` at ``step`` or later (about to be logged again)."""
    try:
        old = json.loads(line)
    except json.JSONDecodeError:
        return True
    return isinstance(old, dict) and old.get("stage") == stage and isinstance(step, int) and old.get("step", -1) >= step
