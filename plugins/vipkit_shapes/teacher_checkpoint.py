"""A teacher training's checkpoint: what one call hands the next (GPU calls are limited in time).

``CHECKPOINT/`` holds the trained UNet, text encoder and VAE, the EMA UNet (what is exported), AdamW's
moments (safetensors, float32) and ``state.json`` (step, evaluation history, the VAE's latent scale, the
UNet architecture). The sampling generator is reseeded from the step, so nothing else is needed to go on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vipkit_shapes.teacher_model import TeacherParts, build_parts

STATE = "state.json"


def _float_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().contiguous().cpu() for k, v in module.state_dict().items()}


def save_checkpoint(
    path: Path,
    parts: TeacherParts,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    history: list[dict[str, float]],
    unet: str,
) -> None:
    """Write ``path`` (``unet`` names the architecture, a key of ``UNET_SPECS``)."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("unet", "text_encoder", "vae"):
        save_file(_float_state(getattr(parts, name)), str(path / f"{name}.safetensors"))
    save_file(_float_state(ema), str(path / "ema_unet.safetensors"))
    opt_state = {
        f"{i}.{k}": v.detach().cpu().contiguous()
        for i, s in optimizer.state_dict()["state"].items()
        for k, v in s.items()
        if torch.is_tensor(v) and v.ndim > 0
    }
    save_file(opt_state, str(path / "optimizer.safetensors"))
    state = {"step": step, "history": history, "vae_scaling_factor": parts.vae.config.scaling_factor, "unet": unet}
    (path / STATE).write_text(json.dumps(state))


def read_state(path: Path) -> dict[str, Any]:
    """The checkpoint's ``state.json``."""
    return json.loads((path / STATE).read_text())


def architecture(state: dict[str, Any]) -> str:
    """The checkpoint's UNet architecture (checkpoints from before ``--unet`` existed are the shipped one)."""
    return state.get("unet", "shipped")


def load_trained(parts: TeacherParts, path: Path, state: dict[str, Any], unet_file: str = "unet") -> None:
    """Load the checkpoint's text encoder, VAE (with its latent scale) and UNet (``unet_file``) into ``parts``."""
    for name in ("text_encoder", "vae"):
        getattr(parts, name).load_state_dict(load_file(str(path / f"{name}.safetensors")))
    parts.vae.register_to_config(scaling_factor=state["vae_scaling_factor"])
    parts.unet.load_state_dict(load_file(str(path / f"{unet_file}.safetensors")))


def load_ema(ema: torch.nn.Module, path: Path) -> None:
    """The checkpoint's EMA UNet into ``ema``."""
    ema.load_state_dict(load_file(str(path / "ema_unet.safetensors")))


def restore_optimizer(
    optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], path: Path, step: int
) -> None:
    """AdamW's moments from the checkpoint; its step counts are the global step (all parameters step together)."""
    saved = load_file(str(path / "optimizer.safetensors"))
    for i, p in enumerate(params):
        if f"{i}.exp_avg" in saved:
            optimizer.state[p] = {
                "step": torch.tensor(float(step)),
                "exp_avg": saved[f"{i}.exp_avg"].to(p.device),
                "exp_avg_sq": saved[f"{i}.exp_avg_sq"].to(p.device),
            }


def exported_parts(path: Path) -> TeacherParts:
    """The parts a teacher folder is exported from: the checkpoint's EMA UNet in place of the trained one."""
    state = read_state(path)
    parts = build_parts(unet=architecture(state))
    load_trained(parts, path, state, unet_file="ema_unet")
    return parts
