"""A teacher's training data: rendered world videos with their prompts' token ids, then their VAE latents.

Every video is rendered and encoded once, before training: the UNet then draws batches of latents
without touching the renderer or the VAE again.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL

from vipkit_shapes.teacher_model import FRAMES, MAX_TOKENS, SIZE
from vipkit_shapes.world import describe, render_batch, sample_scenes


def world_videos(count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """``count`` videos (N, F, 3, H, W) in [0, 1] on the CPU, with their prompts; deterministic by ``seed``."""
    scenes = sample_scenes(count, seed=seed)
    videos = render_batch(
        scenes, seeds=[seed * 1_000_003 + i for i in range(count)], num_frames=FRAMES, height=SIZE, width=SIZE
    )
    return videos, [describe(scene) for scene in scenes]


def token_ids(tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    """The prompts' token ids, padded to the text encoder's length."""
    return tokenizer(
        prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
    ).input_ids


def render_dataset(count: int, tokenizer: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training set: videos in [-1, 1] (bf16, on ``device``) and their prompts' token ids."""
    videos, ids = [], []
    for chunk, start in enumerate(range(0, count, 1024)):
        batch, prompts = world_videos(min(1024, count - start), seed=chunk)
        videos.append((batch * 2 - 1).to(device, torch.bfloat16))
        ids.append(token_ids(tokenizer, prompts))
    return torch.cat(videos), torch.cat(ids).to(device)


@torch.no_grad()
def encode_dataset(vae: AutoencoderKL, videos: torch.Tensor, keep_scale: bool = False) -> torch.Tensor:
    """Latents (N, C, F, h, w), scaled to unit variance (the scale is stored in the VAE config), or by the
    VAE's stored scale with ``keep_scale`` (a resumed or given trained VAE: its UNet saw latents at that scale)."""
    latents = []
    for start in range(0, videos.shape[0], 512):
        batch = videos[start : start + 512]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=videos.device.type == "cuda"):
            z = vae.encode(batch.flatten(0, 1).float()).latent_dist.mean
        latents.append(z.float().unflatten(0, (batch.shape[0], FRAMES)).permute(0, 2, 1, 3, 4).to(torch.bfloat16))
    encoded = torch.cat(latents)
    scale = vae.config.scaling_factor if keep_scale else 1.0 / encoded.float().std().item()
    vae.register_to_config(scaling_factor=scale)
    return encoded * scale
