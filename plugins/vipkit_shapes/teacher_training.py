"""A teacher's training loops: the VAE on frames, then the UNet and text encoder on latents.

The UNet learns v-prediction on the cosine schedule with 10 % empty prompts (for classifier-free
guidance), optionally also regressing to a frozen teacher's prediction (distillation), and keeps an EMA
copy (what is exported). Prompt following is measured while training with the ``shapes`` reward on
freshly sampled prompts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNetMotionModel
from transformers import CLIPTextModel

from vipkit_shapes.reward import ShapesReward
from vipkit_shapes.teacher_data import token_ids, world_videos
from vipkit_shapes.teacher_model import (
    FRAMES,
    GENERATION_SETTINGS,
    TeacherParts,
    teacher_pipeline,
)

Log = Callable[[dict[str, Any]], None]
"""Where progress records go (one JSON line each)."""


@dataclass(frozen=True)
class UnetTraining:
    """One call's UNet training options (the command line's)."""

    minutes: float  # wall-clock budget
    batch: int
    lr: float  # after a 500-step linear warm-up
    lr_final: float | None  # cosine-decay the learning rate to this by the end of the call
    eval_every: int  # steps
    eval_count: int  # freshly sampled prompts scored at each evaluation
    distill_weight: float  # weight of the regression to the frozen teacher's prediction


@dataclass
class FrozenTeacher:
    """The model a smaller UNet learns from, with its own copy of the (trained-on) text encoder."""

    unet: UNetMotionModel
    text_encoder: CLIPTextModel


def train_vae(vae: AutoencoderKL, videos: torch.Tensor, steps: int, log: Log) -> None:
    """Reconstruction + a tiny KL term on random frames of the training set."""
    vae.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    frames_all = videos.flatten(0, 1)
    generator = torch.Generator(videos.device).manual_seed(0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=1e-5)
    for step in range(steps):
        index = torch.randint(0, frames_all.shape[0], (512,), device=videos.device, generator=generator)
        frames = frames_all[index].float()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=videos.device.type == "cuda"):
            posterior = vae.encode(frames).latent_dist
            recon = vae.decode(posterior.sample(generator=generator)).sample
        loss = F.mse_loss(recon.float(), frames) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 500 == 0 or step == steps - 1:
            log({"phase": "vae", "step": step, "loss": loss.item()})
    vae.eval().requires_grad_(False)


@torch.no_grad()
def evaluate(
    parts: TeacherParts, unet: UNetMotionModel, device: torch.device, count: int = 64, seed: int = 999
) -> dict[str, float]:
    """Mean ``shapes`` scores of ``count`` videos sampled by ``unet`` for fresh prompts, as the teacher samples."""
    _, prompts = world_videos(count, seed=seed)
    generators = [torch.Generator(device).manual_seed(i) for i in range(count)]
    settings = GENERATION_SETTINGS
    out = teacher_pipeline(parts, unet)(
        prompts,
        num_frames=settings["num_frames"],
        height=settings["height"],
        width=settings["width"],
        num_inference_steps=settings["num_inference_steps"],
        guidance_scale=settings["guidance_scale"],
        generator=generators,
        output_type="pt",
    ).frames
    scores = ShapesReward().score(out.float().cpu(), prompts)
    return {dim: float(values.mean()) for dim, values in scores.items()}


def compiled_or_eager(
    unet: UNetMotionModel, latents: torch.Tensor, ids: torch.Tensor, text_encoder: CLIPTextModel, log: Log
) -> torch.nn.Module:
    """``torch.compile(unet)`` if a training step through it works here, else the eager UNet."""
    compiled = torch.compile(unet)
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            text = text_encoder(ids[:8]).last_hidden_state
            out = compiled(
                latents[:8].float(),
                torch.full((8,), 500, device=latents.device),
                encoder_hidden_states=text.repeat_interleave(FRAMES, 0),
            ).sample
        out.float().pow(2).mean().backward()
        unet.zero_grad(set_to_none=True), text_encoder.zero_grad(set_to_none=True)
        log({"phase": "compile", "ok": True})
        return compiled
    except Exception as exc:  # compile support varies across torch builds: training must go on regardless
        log({"phase": "compile", "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]})
        return unet


def train_unet(
    parts: TeacherParts,
    model: torch.nn.Module,
    ema: UNetMotionModel,
    optimizer: torch.optim.Optimizer,
    latents: torch.Tensor,
    ids: torch.Tensor,
    options: UnetTraining,
    step: int,
    history: list[dict[str, Any]],
    log: Log,
    teacher: FrozenTeacher | None = None,
) -> int:
    """Train ``parts.unet`` (run through ``model``, compiled or not) and the text encoder until the call's
    minutes are spent, evaluating the EMA copy every ``eval_every`` steps and once at the end (into
    ``history``); the batches are drawn from a generator seeded by ``step``. Returns the step reached."""
    unet, text_encoder = parts.unet, parts.text_encoder
    device = latents.device
    params = [p for group in optimizer.param_groups for p in group["params"]]
    empty_ids = token_ids(parts.tokenizer, [""]).to(device)
    alphas = parts.scheduler.alphas_cumprod.to(device)
    unet.train(), text_encoder.train()
    deadline = time.time() + options.minutes * 60
    generator = torch.Generator(device).manual_seed(step)
    while time.time() < deadline:
        index = torch.randint(0, latents.shape[0], (options.batch,), device=device, generator=generator)
        x0 = latents[index].float()
        prompt_ids = ids[index]
        drop = torch.rand(options.batch, device=device, generator=generator) < 0.1
        prompt_ids = torch.where(drop[:, None], empty_ids.expand_as(prompt_ids), prompt_ids)
        t = torch.randint(0, 1000, (options.batch,), device=device, generator=generator)
        noise = torch.randn(x0.shape, device=device, generator=generator)
        a = alphas[t].view(-1, 1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0
        lr = options.lr * min(1.0, (step + 1) / 500)
        if options.lr_final is not None:
            done = 1 - (deadline - time.time()) / (options.minutes * 60)
            lr = options.lr_final + (lr - options.lr_final) * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            text = text_encoder(prompt_ids).last_hidden_state
            pred = model(noisy, t, encoder_hidden_states=text.repeat_interleave(FRAMES, 0)).sample
            if teacher is not None:
                with torch.no_grad():
                    teacher_text = teacher.text_encoder(prompt_ids).last_hidden_state.repeat_interleave(FRAMES, 0)
                    teacher_pred = teacher.unet(noisy, t, encoder_hidden_states=teacher_text).sample
        loss = F.mse_loss(pred.float(), target)
        if teacher is not None:
            loss = loss + options.distill_weight * F.mse_loss(pred.float(), teacher_pred.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), unet.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        step += 1
        if step % 100 == 0:
            log({"phase": "unet", "step": step, "loss": loss.item(), "lr": lr})
        if step % options.eval_every == 0:
            unet.eval(), text_encoder.eval()
            scores = evaluate(parts, ema, device, count=options.eval_count)
            unet.train(), text_encoder.train()
            history.append({"step": step, **scores})
            log({"phase": "eval", "step": step, **scores})
    unet.eval(), text_encoder.eval()
    scores = evaluate(parts, ema, device, count=options.eval_count)
    history.append({"step": step, **scores})
    log({"phase": "eval", "step": step, **scores})
    return step
