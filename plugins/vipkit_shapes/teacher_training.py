"""A teacher's training loops: the VAE on the world's videos, then the denoiser and text encoder on latents.

Written once for every ``TeacherKind`` (AnimateDiff, Wan), which says what the VAE reconstructs, the forward
process and its target, and how the denoiser is called. The denoiser learns with 10 % empty prompts (for
classifier-free guidance), optionally also regressing to a frozen teacher's prediction (distillation), and keeps
an EMA copy (what is exported). Prompt following is measured while training with the ``shapes`` reward on
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

from vipkit_shapes.reward import ShapesReward
from vipkit_shapes.teacher_data import tokenize, world_prompts
from vipkit_shapes.teacher_kind import TeacherKind, TeacherParts, Tokens

Log = Callable[[dict[str, Any]], None]
"""Where progress records go (one JSON line each)."""


@dataclass(frozen=True)
class DenoiserTraining:
    """One call's denoiser training options (the command line's)."""

    minutes: float  # wall-clock budget
    batch: int
    lr: float  # after a 500-step linear warm-up
    lr_final: float | None  # cosine-decay the learning rate to this by the end of the call
    eval_every: int  # steps
    eval_count: int  # freshly sampled prompts scored at each evaluation
    distill_weight: float  # weight of the regression to the frozen teacher's prediction


@dataclass
class FrozenTeacher:
    """The model a smaller denoiser learns from, with its own copy of the (trained-on) text encoder."""

    denoiser: torch.nn.Module
    text_encoder: torch.nn.Module


def train_vae(
    kind: TeacherKind,
    vae: torch.nn.Module,
    videos: torch.Tensor,
    steps: int,
    log: Log,
    minutes: float | None = None,
    batch: int | None = None,
) -> None:
    """Reconstruction + a tiny KL term on random batches of the training set (frames or whole clips, as ``kind``
    says; ``batch`` of them, by default the kind's), for ``steps`` or until ``minutes`` are spent; the learning
    rate decays along whichever ends first."""
    vae.train().requires_grad_(True)
    lr, lr_final = 1e-3, 1e-5
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator(videos.device).manual_seed(0)
    started, step = time.time(), 0
    while (done := _done(step, steps, started, minutes)) < 1:
        for group in optimizer.param_groups:
            group["lr"] = lr_final + (lr - lr_final) * 0.5 * (1 + math.cos(math.pi * done))
        original = kind.vae_batch(videos, generator, batch or kind.vae_batch_size).float()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=videos.device.type == "cuda"):
            posterior = vae.encode(original).latent_dist
            recon = vae.decode(posterior.sample(generator=generator)).sample
        loss = F.mse_loss(recon.float(), original) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 500 == 0 or _done(step + 1, steps, started, minutes) >= 1:
            log({"phase": "vae", "step": step, "loss": loss.item()})
        step += 1
    vae.eval().requires_grad_(False)
    log({"phase": "vae_check", **reconstruction_check(kind, vae, videos, batch or kind.vae_batch_size)})


@torch.no_grad()
def reconstruction_check(kind: TeacherKind, vae: torch.nn.Module, videos: torch.Tensor, size: int) -> dict[str, float]:
    """The VAE's reconstruction error (from the posterior mean) on a fixed batch of ``size``, beside the error of
    each item's mean colour: a VAE that has learnt the backgrounds and not the shapes scores about the same (the Wan
    teacher's first call, benchmarks/RESULTS.md §14), and its teacher can only ever draw empty backgrounds."""
    original = kind.vae_batch(videos, torch.Generator(videos.device).manual_seed(1), size).float()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=videos.device.type == "cuda"):
        recon = vae.decode(vae.encode(original).latent_dist.mean).sample
    colour = original.mean(dim=tuple(range(2, original.ndim)), keepdim=True)
    return {
        "mse": F.mse_loss(recon.float(), original).item(),
        "mean_colour_mse": F.mse_loss(colour.expand_as(original), original).item(),
    }


def _done(step: int, steps: int, started: float, minutes: float | None) -> float:
    """How much of the VAE's training is done: by steps, or by time when that is further along."""
    by_time = (time.time() - started) / (minutes * 60) if minutes else 0.0
    return max(step / steps, by_time)


@torch.no_grad()
def evaluate(
    kind: TeacherKind,
    parts: TeacherParts,
    denoiser: torch.nn.Module,
    device: torch.device,
    count: int = 64,
    seed: int = 999,
) -> dict[str, float]:
    """Mean ``shapes`` scores of ``count`` videos sampled with ``denoiser`` for fresh prompts, as the teacher samples."""
    prompts = world_prompts(count, seed=seed)
    generators = [torch.Generator(device).manual_seed(i) for i in range(count)]
    videos = kind.sample(parts, denoiser, prompts, generators)
    scores = ShapesReward().score(videos.float().cpu(), prompts)
    return {dim: float(values.mean()) for dim, values in scores.items()}


def compiled_or_eager(
    kind: TeacherKind, parts: TeacherParts, latents: torch.Tensor, tokens: Tokens, log: Log
) -> torch.nn.Module:
    """``torch.compile`` of the denoiser if a training step through it works here, else the eager denoiser."""
    denoiser, text_encoder = parts.denoiser, parts.text_encoder
    compiled = torch.compile(denoiser)
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            text = kind.condition(text_encoder, tokens[:8])
            out = kind.predict(compiled, latents[:8].float(), torch.full((8,), 500, device=latents.device), text)
        out.float().pow(2).mean().backward()
        denoiser.zero_grad(set_to_none=True), text_encoder.zero_grad(set_to_none=True)
        log({"phase": "compile", "ok": True})
        return compiled
    except Exception as exc:  # compile support varies across torch builds: training must go on regardless
        log({"phase": "compile", "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]})
        return denoiser


def train_denoiser(
    kind: TeacherKind,
    parts: TeacherParts,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    latents: torch.Tensor,
    tokens: Tokens,
    options: DenoiserTraining,
    step: int,
    history: list[dict[str, Any]],
    log: Log,
    teacher: FrozenTeacher | None = None,
    checkpoint: Callable[[int], None] | None = None,
) -> int:
    """Train ``parts.denoiser`` (run through ``model``, compiled or not) and the text encoder until the call's
    minutes are spent, evaluating the EMA copy every ``eval_every`` steps and once at the end (into
    ``history``), and calling ``checkpoint(step)`` after each periodic evaluation (a call killed before its end
    keeps what it trained); the batches are drawn from a generator seeded by ``step``. Returns the step reached."""
    denoiser, text_encoder = parts.denoiser, parts.text_encoder
    device = latents.device
    params = [p for group in optimizer.param_groups for p in group["params"]]
    ema_params, trained_params = list(ema.parameters()), list(denoiser.parameters())
    empty = tokenize(parts.tokenizer, [""]).to(device)
    noised = kind.forward_process(parts.scheduler, device)
    denoiser.train(), text_encoder.train()
    deadline = time.time() + options.minutes * 60
    generator = torch.Generator(device).manual_seed(step)
    while time.time() < deadline:
        index = torch.randint(0, latents.shape[0], (options.batch,), device=device, generator=generator)
        x0 = latents[index].float()
        batch_tokens = tokens[index]
        drop = torch.rand(options.batch, device=device, generator=generator)[:, None] < 0.1
        batch_tokens = Tokens(
            torch.where(drop, empty.ids.expand_as(batch_tokens.ids), batch_tokens.ids),
            torch.where(drop, empty.mask.expand_as(batch_tokens.mask), batch_tokens.mask),
        )
        t = torch.randint(0, 1000, (options.batch,), device=device, generator=generator)
        noise = torch.randn(x0.shape, device=device, generator=generator)
        noisy, target = noised(x0, noise, t)
        lr = options.lr * min(1.0, (step + 1) / 500)
        if options.lr_final is not None:
            done = 1 - (deadline - time.time()) / (options.minutes * 60)
            lr = options.lr_final + (lr - options.lr_final) * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pred = kind.predict(model, noisy, t, kind.condition(text_encoder, batch_tokens))
            if teacher is not None:
                with torch.no_grad():
                    teacher_text = kind.condition(teacher.text_encoder, batch_tokens)
                    teacher_pred = kind.predict(teacher.denoiser, noisy, t, teacher_text)
        loss = F.mse_loss(pred.float(), target)
        if teacher is not None:
            loss = loss + options.distill_weight * F.mse_loss(pred.float(), teacher_pred.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema_params, trained_params, 1 - decay)  # one kernel per group, not per tensor
        step += 1
        if step % 100 == 0:
            log({"phase": kind.component, "step": step, "loss": loss.item(), "lr": lr})
        if step % options.eval_every == 0:
            denoiser.eval(), text_encoder.eval()
            scores = evaluate(kind, parts, ema, device, count=options.eval_count)
            denoiser.train(), text_encoder.train()
            history.append({"step": step, **scores})
            log({"phase": "eval", "step": step, **scores})
            if checkpoint is not None:
                checkpoint(step)
    denoiser.eval(), text_encoder.eval()
    scores = evaluate(kind, parts, ema, device, count=options.eval_count)
    history.append({"step": step, **scores})
    log({"phase": "eval", "step": step, **scores})
    return step
