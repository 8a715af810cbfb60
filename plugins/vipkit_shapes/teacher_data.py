"""A teacher's training data: rendered world videos with their prompts' tokens, then their VAE latents.

Every video is rendered and encoded once, before training: the denoiser then draws batches of latents
without touching the renderer or the VAE again.
"""

from __future__ import annotations

from typing import Any

import torch

from vipkit_shapes.teacher_kind import TeacherKind, Tokens
from vipkit_shapes.teacher_model import MAX_TOKENS, SIZE
from vipkit_shapes.world import describe, render_batch, sample_scenes


def world_prompts(count: int, seed: int) -> list[str]:
    """The prompts of ``world_videos(count, seed, ...)``, without rendering."""
    return [describe(scene) for scene in sample_scenes(count, seed=seed)]


def world_videos(count: int, seed: int, frames: int) -> tuple[torch.Tensor, list[str]]:
    """``count`` videos (N, F, 3, H, W) in [0, 1] on the CPU, with their prompts; deterministic by ``seed``."""
    scenes = sample_scenes(count, seed=seed)
    videos = render_batch(
        scenes, seeds=[seed * 1_000_003 + i for i in range(count)], num_frames=frames, height=SIZE, width=SIZE
    )
    return videos, [describe(scene) for scene in scenes]


def tokenize(tokenizer: Any, prompts: list[str]) -> Tokens:
    """The prompts' token ids and attention mask, padded to the text encoder's length."""
    encoded = tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
    return Tokens(encoded.input_ids, encoded.attention_mask)


def render_dataset(count: int, tokenizer: Any, device: torch.device, frames: int) -> tuple[torch.Tensor, Tokens]:
    """The training set: videos of ``frames`` frames in [-1, 1] (bf16, on ``device``) and their prompts' tokens."""
    videos, tokens = [], []
    for chunk, start in enumerate(range(0, count, 1024)):
        batch, prompts = world_videos(min(1024, count - start), seed=chunk, frames=frames)
        videos.append((batch * 2 - 1).to(device, torch.bfloat16))
        tokens.append(tokenize(tokenizer, prompts))
    ids, mask = (torch.cat([getattr(t, field) for t in tokens]) for field in ("ids", "mask"))
    return torch.cat(videos), Tokens(ids, mask).to(device)


@torch.no_grad()
def encode_dataset(
    kind: TeacherKind, vae: torch.nn.Module, videos: torch.Tensor, keep_scale: bool = False
) -> torch.Tensor:
    """Latents in the denoiser's layout, brought to unit scale (the scale is fitted now and stored in the VAE
    config), or by the VAE's stored scale with ``keep_scale`` (a resumed or given trained VAE: its denoiser saw
    latents at that scale)."""
    latents = []
    for start in range(0, videos.shape[0], 512):
        batch = videos[start : start + 512]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=videos.device.type == "cuda"):
            means = kind.encode(vae, batch.float())
        latents.append(means.to(torch.bfloat16))
    encoded = torch.cat(latents)
    if not keep_scale:
        kind.fit_latent_scale(vae, encoded)
    return kind.scaled(vae, encoded).to(torch.bfloat16)
