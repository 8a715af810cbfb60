"""The tiny AnimateDiff teachers (``models/shapes-teacher``, ``models/shapes-teacher-fast``) as a ``TeacherKind``.

Frames go through a 2D VAE whose latents one factor scales; the UNet learns v-prediction on the cosine schedule
and is called on every frame with the prompt repeated per frame, as ``AnimateDiffPipeline`` calls it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import AutoencoderKL, UNetMotionModel
from torch import Tensor
from transformers import CLIPTextModel

from vipkit_shapes.teacher_export import export_teacher
from vipkit_shapes.teacher_kind import ForwardProcess, TeacherKind, TeacherParts, Tokens
from vipkit_shapes.teacher_model import FRAMES, GENERATION_SETTINGS, LATENT_POSITIONS, build_parts, teacher_pipeline


class AnimateDiffTeacher(TeacherKind):
    """A tiny AnimateDiff of one of ``teacher_model.UNET_SPECS``."""

    component = "unet"
    frames = FRAMES
    settings: ClassVar[dict[str, Any]] = GENERATION_SETTINGS
    latent_scale_keys = ("scaling_factor",)
    classes: ClassVar[dict[str, type]] = {
        "vae": AutoencoderKL,
        "text_encoder": CLIPTextModel,
        "unet": UNetMotionModel,
    }
    vae_batch_size = 512  # frames
    attention_sequences = LATENT_POSITIONS  # the motion modules attend over time at every latent position

    def __init__(self, name: str) -> None:
        self.name = name  # a key of UNET_SPECS

    def build(self, seed: int = 0, vae_config: dict[str, Any] | None = None) -> TeacherParts:
        return build_parts(seed, unet=self.name, vae_config=vae_config)

    def vae_batch(self, videos: Tensor, generator: torch.Generator, size: int) -> Tensor:
        frames = videos.flatten(0, 1)
        return frames[torch.randint(0, frames.shape[0], (size,), device=videos.device, generator=generator)]

    def encode(self, vae: torch.nn.Module, videos: Tensor) -> Tensor:
        means = vae.encode(videos.flatten(0, 1)).latent_dist.mean
        return means.unflatten(0, videos.shape[:2]).permute(0, 2, 1, 3, 4)

    def fit_latent_scale(self, vae: torch.nn.Module, latents: Tensor) -> None:
        vae.register_to_config(scaling_factor=1.0 / latents.float().std().item())

    def scaled(self, vae: torch.nn.Module, latents: Tensor) -> Tensor:
        return latents * vae.config.scaling_factor

    def forward_process(self, scheduler: Any, device: torch.device) -> ForwardProcess:
        alphas = scheduler.alphas_cumprod.to(device)

        def noised(x0: Tensor, noise: Tensor, timesteps: Tensor) -> tuple[Tensor, Tensor]:
            a = alphas[timesteps].view(-1, 1, 1, 1, 1)
            return a.sqrt() * x0 + (1 - a).sqrt() * noise, a.sqrt() * noise - (1 - a).sqrt() * x0

        return noised

    def condition(self, text_encoder: torch.nn.Module, tokens: Tokens) -> Tensor:
        return text_encoder(tokens.ids).last_hidden_state

    def predict(self, model: torch.nn.Module, noisy: Tensor, timesteps: Tensor, conditioning: Tensor) -> Tensor:
        return model(noisy, timesteps, encoder_hidden_states=conditioning.repeat_interleave(noisy.shape[2], 0)).sample

    def sample(
        self, parts: TeacherParts, denoiser: torch.nn.Module, prompts: list[str], generators: list[torch.Generator]
    ) -> Tensor:
        s = self.settings
        return teacher_pipeline(parts, denoiser)(
            prompts,
            num_frames=s["num_frames"],
            height=s["height"],
            width=s["width"],
            num_inference_steps=s["num_inference_steps"],
            guidance_scale=s["guidance_scale"],
            generator=generators,
            output_type="pt",
        ).frames

    def export(self, path: Path, parts: TeacherParts, denoiser: torch.nn.Module) -> None:
        export_teacher(path, parts, denoiser)
