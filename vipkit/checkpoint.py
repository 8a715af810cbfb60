"""Training checkpoints inside a stage: written whole or not at all, found again after a kill.

A checkpoint is ``checkpoints/stage-NNN-step-XXXXXXXX/``, written into a staging folder and made
visible by one rename; its ``manifest.json`` (a SHA-256 per file) is written last, so a folder
counts only when the manifest is there and every file matches it. The newest ``keep`` complete
checkpoints stay; older ones are deleted after a newer one is complete.

What is stored: the trained parameters (the frozen rest is the stage's starting model, rebuilt
from ``stages/``), the removed blocks (checked on load), optimizer and LR-scheduler state, the
torch RNG state of every rank, the optimizer steps done (the data position: the shuffle order and
the noise are functions of seed and step), the stage index, the hash of the stage's pair store,
and the losses so far. safetensors + JSON only: nothing is unpickled.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vipkit.atomic import staged_directory, write_json
from vipkit.faults import fault_point
from vipkit.weights import file_sha256

if TYPE_CHECKING:
    from torch import Tensor

MANIFEST = "manifest.json"
FORMAT = 1


@dataclass
class TrainingState:
    """Everything needed to continue a stage's training exactly where it stopped."""

    stage: int
    step: int  # optimizer steps done in this stage
    removed_blocks: list[str]
    pairs_hash: str
    parameters: list[Tensor]  # the trained parameters, in the trainer's order
    optimizer: dict[str, Any]  # torch optimizer state_dict
    scheduler: dict[str, Any]  # torch LR-scheduler state_dict (plain numbers)
    rng: list[Tensor] = field(default_factory=list)  # torch CPU RNG state per rank
    losses: list[float] = field(default_factory=list)


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimizer state_dict → (tensors for safetensors, everything else for JSON)."""
    import torch

    tensors: dict[str, Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.contiguous()
            else:
                plain.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def _join_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(index): dict(values) for index, values in meta["plain"].items()}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    return {"state": state, "param_groups": meta["param_groups"]}


class CheckpointStore:
    """The ``checkpoints/`` folder of a run."""

    def __init__(self, root: Path, keep: int = 2) -> None:
        self.root = root
        self.keep = keep

    def path(self, stage: int, step: int) -> Path:
        return self.root / f"stage-{stage:03d}-step-{step:08d}"

    def write(self, state: TrainingState) -> Path:
        """Write ``state`` atomically (call on the main process only), then drop old checkpoints."""
        from safetensors.torch import save_file

        final = self.path(state.stage, state.step)
        with staged_directory(final) as staging:
            save_file(
                {f"param.{i}": p.detach().contiguous().cpu() for i, p in enumerate(state.parameters)},
                str(staging / "parameters.safetensors"),
            )
            fault_point("checkpoint_write")
            optimizer_tensors, optimizer_meta = _split_optimizer(state.optimizer)
            save_file({k: v.cpu() for k, v in optimizer_tensors.items()}, str(staging / "optimizer.safetensors"))
            save_file({f"rank.{r}": t for r, t in enumerate(state.rng)}, str(staging / "rng.safetensors"))
            write_json(
                staging / "state.json",
                {
                    "stage": state.stage,
                    "step": state.step,
                    "removed_blocks": state.removed_blocks,
                    "pairs_hash": state.pairs_hash,
                    "world_size": len(state.rng),
                    "losses": state.losses,
                    "optimizer": optimizer_meta,
                    "scheduler": state.scheduler,
                },
            )
            files = sorted(p.name for p in staging.iterdir())
            write_json(
                staging / MANIFEST, {"format": FORMAT, "files": {name: file_sha256(staging / name) for name in files}}
            )
        self._drop_old()
        return final

    def complete(self) -> list[Path]:
        """Checkpoint folders whose manifest is present and matches every file, oldest first."""
        return [path for path in sorted(self.root.glob("stage-*-step-*")) if self._is_complete(path)]

    def newest(self, stage: int, pairs_hash: str) -> TrainingState | None:
        """The newest complete checkpoint of ``stage`` trained on the pairs with ``pairs_hash``."""
        for path in reversed(self.complete()):
            meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
            if meta["stage"] == stage and meta["pairs_hash"] == pairs_hash:
                return self._read(path, meta)
        return None

    def _read(self, path: Path, meta: dict[str, Any]) -> TrainingState:
        from safetensors.torch import load_file

        params = load_file(str(path / "parameters.safetensors"))
        rng = load_file(str(path / "rng.safetensors"))
        return TrainingState(
            stage=meta["stage"],
            step=meta["step"],
            removed_blocks=meta["removed_blocks"],
            pairs_hash=meta["pairs_hash"],
            parameters=[params[f"param.{i}"] for i in range(len(params))],
            optimizer=_join_optimizer(load_file(str(path / "optimizer.safetensors")), meta["optimizer"]),
            scheduler=meta["scheduler"],
            rng=[rng[f"rank.{r}"] for r in range(meta["world_size"])],
            losses=meta["losses"],
        )

    @staticmethod
    def _is_complete(path: Path) -> bool:
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            files = manifest["files"]
            present = {p.name for p in path.iterdir()} - {MANIFEST}
            return present == set(files) and all(file_sha256(path / name) == digest for name, digest in files.items())
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def _drop_old(self) -> None:
        complete = self.complete()
        keep = set(complete[-self.keep :])
        for path in sorted(self.root.glob("stage-*-step-*")):
            if path not in keep and (path in complete or path < complete[-1]):
                shutil.rmtree(path, ignore_errors=True)
