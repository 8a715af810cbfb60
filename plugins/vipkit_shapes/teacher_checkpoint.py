"""A teacher training's checkpoint: what one call hands the next (GPU calls are limited in time).

``CHECKPOINT/`` holds the trained denoiser (``unet`` or ``transformer``), text encoder and VAE, the EMA denoiser
(``ema_<component>``: what is exported), AdamW's moments (safetensors, float32) and ``state.json`` (step, evaluation
history, the VAE's latent scale, the architecture). The sampling generator is reseeded from the step, so nothing
else is needed to go on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from vipkit.atomic import staged_directory
from vipkit_shapes.teacher_architectures import TEACHERS
from vipkit_shapes.teacher_kind import TeacherKind, TeacherParts

STATE = "state.json"


def _float_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Float32 copies on the CPU; tied tensors (UMT5's embedding) become separate copies, as safetensors needs."""
    return {
        k: v.detach().float().cpu().clone(memory_format=torch.contiguous_format) for k, v in module.state_dict().items()
    }


def save_checkpoint(
    path: Path,
    kind: TeacherKind,
    parts: TeacherParts,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    history: list[dict[str, float]],
) -> None:
    """Write ``path`` whole or not at all (it is rewritten during a call: a killed call keeps the last one)."""
    with staged_directory(path) as staging:
        for name, module in _trained(kind, parts).items():
            save_file(_float_state(module), str(staging / f"{name}.safetensors"))
        save_file(_float_state(ema), str(staging / f"ema_{kind.component}.safetensors"))
        opt_state = {
            f"{i}.{k}": v.detach().cpu().contiguous()
            for i, s in optimizer.state_dict()["state"].items()
            for k, v in s.items()
            if torch.is_tensor(v) and v.ndim > 0
        }
        save_file(opt_state, str(staging / "optimizer.safetensors"))
        state = {
            "step": step,
            "history": history,
            "latent_scale": {key: parts.vae.config[key] for key in kind.latent_scale_keys},
            "architecture": kind.name,
            "vae_config": vae_config(parts.vae),
        }
        (staging / STATE).write_text(json.dumps(state))


def vae_config(vae: torch.nn.Module) -> dict[str, Any]:
    """The VAE's config as its constructor takes it (``TeacherKind.build``'s ``vae_config``)."""
    return {key: value for key, value in vae.config.items() if not key.startswith("_")}


def _trained(kind: TeacherKind, parts: TeacherParts) -> dict[str, torch.nn.Module]:
    """The checkpoint's modules by file name: the denoiser under its pipeline component's name."""
    return {kind.component: parts.denoiser, "text_encoder": parts.text_encoder, "vae": parts.vae}


def read_state(path: Path) -> dict[str, Any]:
    """The checkpoint's ``state.json``."""
    return json.loads((path / STATE).read_text())


def architecture(state: dict[str, Any]) -> str:
    """The checkpoint's architecture, a key of ``TEACHERS`` (checkpoints from before the Wan teacher name their UNet
    ``unet``, and those from before ``--unet`` existed are the shipped one)."""
    return state.get("architecture", state.get("unet", "shipped"))


def latent_scale(state: dict[str, Any]) -> dict[str, Any]:
    """The VAE config entries that scale its latents (checkpoints from before the Wan teacher hold one factor)."""
    return state.get("latent_scale") or {"scaling_factor": state["vae_scaling_factor"]}


def load_trained(kind: TeacherKind, parts: TeacherParts, path: Path, state: dict[str, Any], ema: bool = False) -> None:
    """Load the checkpoint's text encoder, VAE (with its latent scale) and denoiser (the EMA one with ``ema``)."""
    for name, module in _trained(kind, parts).items():
        file = f"ema_{name}" if ema and module is parts.denoiser else name
        module.load_state_dict(load_file(str(path / f"{file}.safetensors")))
    parts.vae.register_to_config(**latent_scale(state))


def load_ema(kind: TeacherKind, ema: torch.nn.Module, path: Path) -> None:
    """The checkpoint's EMA denoiser into ``ema``."""
    ema.load_state_dict(load_file(str(path / f"ema_{kind.component}.safetensors")))


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


def exported_parts(path: Path) -> tuple[TeacherKind, TeacherParts]:
    """The teacher a checkpoint is exported as: its architecture, and its parts with the EMA denoiser in place of
    the trained one."""
    state = read_state(path)
    kind = TEACHERS[architecture(state)]
    parts = kind.build(vae_config=state.get("vae_config"))  # checkpoints from before --vae-config: the default
    load_trained(kind, parts, path, state, ema=True)
    return kind, parts
