"""VideoCrafter2 (own UNet port, official checkpoint keys) as a vipkit VideoModel."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

import vipkit
from vipkit.errors import VipkitError
from vipkit_videocrafter2.attention import TemporalTransformer
from vipkit_videocrafter2.layers import TemporalConv
from vipkit_videocrafter2.loading import load_parts
from vipkit_videocrafter2.parts import ModelParts
from vipkit_videocrafter2.persistence import save_parts
from vipkit_videocrafter2.schedule import (
    LATENT_SCALE,
    NUM_TRAIN_TIMESTEPS,
    Schedule,
    ddim_sample,
    guided,
    per_video_noise,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SETTING_KEYS = (
    "height",
    "width",
    "num_frames",
    "num_inference_steps",
    "guidance_scale",
    "fps",
    "eta",
    "negative_prompt",
    "dtype",
)
TRAINABLE_SCOPES = ("temporal", "all")


class VideoCrafter2(vipkit.VideoModel):
    """VideoCrafter2: 3-D UNet denoiser (prunable), frozen OpenCLIP text encoder and SD VAE, official DDIM.

    ``device`` and ``dtype`` say where the denoiser runs. Generations and prompt encodings come back
    as float32 on CPU; ``predict_noise`` answers on the device and in the dtype of its latents.
    """

    name = "videocrafter2"

    class Config(vipkit.Config):
        base: str | None = Field(
            None,
            description="Folder written by `python -m vipkit_videocrafter2.convert` (the official model.ckpt "
            "converted to safetensors) or by `save` (a compressed model).",
        )
        preset: Literal["tiny", "random"] | None = Field(
            None,
            description="Build random components from configs instead of loading `base` (no download): 'tiny' "
            "runs a whole V.I.P. schedule on a CPU; 'random' is the released architecture (1.41 B-parameter UNet, "
            "OpenCLIP ViT-H/14 text tower, SD VAE; built on `device`) for measuring time, memory and disk before "
            "downloading. Both go through the official checkpoint's conversion; their videos mean nothing about quality.",
        )
        preset_seed: int = Field(0, ge=0, description="Seed of the preset's random weights (same seed, same weights).")
        height: int | None = Field(None, gt=0, description="Video height in pixels; None: the model's (320, tiny 16).")
        width: int | None = Field(None, gt=0, description="Video width in pixels; None: the model's (512, tiny 16).")
        num_frames: int | None = Field(None, gt=0, description="Frames per video; None: the model's (16, tiny 4).")
        num_inference_steps: int | None = Field(
            None, gt=0, le=NUM_TRAIN_TIMESTEPS, description="DDIM steps; None: the model's (50, tiny 4)."
        )
        guidance_scale: float = Field(
            12.0, ge=0, description="Classifier-free guidance scale (official 12.0; values <= 1 turn it off)."
        )
        fps: int = Field(28, gt=0, description="Frame-rate condition of the UNet (official script: 28).")
        eta: float = Field(1.0, ge=0, description="DDIM eta: 0 deterministic, 1 the official stochastic sampler.")
        negative_prompt: str = Field("", description="Prompt of the unconditional branch (official: empty).")
        dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Denoiser weights and compute.")
        device: str = Field(
            "cpu",
            pattern=r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$",
            description="Torch device ('cpu', 'cuda', 'cuda:1', ...); 'auto' = cuda if available, else cpu.",
        )
        generation_batch_size: int = Field(4, gt=0, description="Videos denoised together.")

        @field_validator("height", "width")
        @classmethod
        def _multiple_of_8(cls, value: int | None) -> int | None:
            if value is not None and value % 8:
                raise ValueError(f"must be a multiple of 8 (the SD VAE downsamples 8x), got {value}")
            return value

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self._attach(load_parts(self.config))

    def _attach(self, parts: ModelParts) -> None:
        """Resolve the settings (explicit > the source's defaults > Config's) and place every part."""
        config = self.config
        given = {key: getattr(config, key) for key in SETTING_KEYS}
        explicit = {key: value for key, value in given.items() if key in config.model_fields_set and value is not None}
        fallback = {key: value for key, value in given.items() if value is not None}
        merged = {**fallback, **parts.default_settings, **explicit}
        self._settings: dict[str, Any] = {key: merged[key] for key in SETTING_KEYS}
        self.dtype = DTYPES[self._settings["dtype"]]
        auto = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(auto if config.device == "auto" else config.device)
        parts.unet.module.to(self.device, self.dtype).eval()
        for frozen in (parts.vae, parts.text_encoder):
            weight = next(frozen.parameters())
            if (weight.device, weight.dtype) != (self.device, self.dtype):  # torch's own `to`: diffusers' warns on every cast
                torch.nn.Module.to(frozen, self.device, self.dtype)
            frozen.eval().requires_grad_(False)
        self._parts, self._unet = parts, parts.unet
        self._runner: torch.nn.Module = parts.unet.module  # what predict_noise calls (the UNet, or a DDP wrapper of it)
        self._schedule = Schedule.official()
        scale = 2 ** (len(parts.vae.config.block_out_channels) - 1)
        for key in ("height", "width"):
            if self._settings[key] % scale:
                raise VipkitError(f"{key} = {self._settings[key]} must be a multiple of {scale}, the VAE's downscaling")
        self._vae_scale = scale

    # -- structure -------------------------------------------------------------------------
    def blocks(self) -> list[vipkit.Block]:
        return self._unet.blocks()

    def remove_block(self, name: str) -> None:
        self._unet.remove(name)

    def restore_block(self, name: str) -> None:
        self._unet.restore(name)

    @property
    def removed_blocks(self) -> list[str]:
        return self._unet.removed

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self._unet.module.parameters())

    @property
    def unet(self) -> torch.nn.Module:
        """The (pruned) UNet module, called like the official one."""
        return self._unet.module

    def copy(self) -> VideoCrafter2:
        """A deep copy of the UNet with its removal state; VAE, text encoder and tokenizer are shared."""
        clone = type(self).__new__(type(self))
        vipkit.VideoModel.__init__(clone, self.config)
        parts = dataclasses.replace(self._parts, unet=self._unet.copy(), default_settings=dict(self._settings))
        clone._attach(parts)
        return clone

    # -- generation ------------------------------------------------------------------------
    @property
    def generation_settings(self) -> dict[str, Any]:
        return dict(self._settings)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> vipkit.Generation:
        """Official DDIM with guidance and fps; one generator per video makes video i depend only on (prompt i, seed i)."""
        if not prompts or len(prompts) != len(seeds):
            raise VipkitError(f"generate needs one seed per prompt, got {len(prompts)} prompts and {len(seeds)} seeds")
        s = self._settings
        shape = (4, s["num_frames"], s["height"] // self._vae_scale, s["width"] // self._vae_scale)
        size = self.config.generation_batch_size
        videos, latents = [], []
        for start in range(0, len(prompts), size):
            chunk = list(prompts[start : start + size])
            generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds[start : start + size]]
            cond = self._encode(chunk)
            uncond = self._encode([s["negative_prompt"]] * len(chunk))
            denoise = guided(self._denoiser, cond, uncond, s["guidance_scale"])
            noise = per_video_noise(generators, shape).to(self.device, self.dtype)
            denoised = ddim_sample(
                denoise,
                noise,
                self._schedule,
                s["num_inference_steps"],
                s["eta"],
                step_noise=partial(per_video_noise, generators, shape),
            )
            videos.append(self._decode(denoised))
            latents.append(denoised.float().cpu())
        return vipkit.Generation(videos=torch.cat(videos), latents=torch.cat(latents))

    def pipeline(self) -> VideoCrafter2:
        """There is no diffusers pipeline for VideoCrafter2: the model itself is one (``generate``)."""
        return self

    def _denoiser(self, x: Tensor, t: Tensor, context: Tensor) -> Tensor:
        return self._unet.module(x, t, context=context, fps=self._settings["fps"])

    def _decode(self, latents: Tensor) -> Tensor:
        """Latents (B, 4, T, h, w) -> videos (B, T, 3, H, W) in [0, 1], float32 on CPU, frame by frame as officially."""
        videos = []
        for video in latents:
            frames = (video.transpose(0, 1) / LATENT_SCALE).to(self.device, self.dtype)
            pixels = self._parts.vae.decode(frames).sample
            videos.append(((pixels.float().clamp(-1, 1) + 1) / 2).cpu())
        return torch.stack(videos)

    def _encode(self, prompts: list[str]) -> Tensor:
        tokens = self._parts.tokenizer(
            prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        return self._parts.text_encoder(tokens.to(self.device)).last_hidden_state

    # -- training --------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        """OpenCLIP penultimate-layer tokens (B, 77, D), float32 on CPU; the text encoder is frozen."""
        return self._encode(list(prompts)).float().cpu()

    def predict_noise(
        self, noisy_latents: Tensor, timesteps: Tensor, conditioning: Tensor, *, features: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """UNet output for latents (B, 4, T, h, w) at the configured fps, on the latents' device and dtype.

        With ``features`` also the outputs of the middle block and of the last output block of each
        resolution level (never pruned, so teacher and student give the same list).
        """
        home = dict(device=noisy_latents.device, dtype=noisy_latents.dtype)
        with self._recorded_levels(features) as recorded:
            prediction = self._runner(
                noisy_latents.to(self.device, self.dtype),
                timesteps.to(self.device),
                context=conditioning.to(self.device, self.dtype),
                fps=self._settings["fps"],
            ).to(**home)
        if not features:
            return prediction
        return prediction, [output.to(**home) for output in recorded]

    @contextmanager
    def _recorded_levels(self, enabled: bool) -> Iterator[list[Tensor]]:
        outputs: list[Tensor] = []
        if not enabled:
            yield outputs
            return
        unet = self._unet.module
        ends = [j for j, shape in enumerate(unet.output_shapes) if shape.resamples] + [len(unet.output_shapes) - 1]
        modules = [unet.middle_block, *(unet.output_blocks[j] for j in ends)]
        handles = [m.register_forward_hook(lambda module, args, output: outputs.append(output)) for m in modules]
        try:
            yield outputs
        finally:
            for handle in handles:
                handle.remove()

    def add_noise(self, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        return self._schedule.add_noise(latents, noise, timesteps)

    def training_target(self, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        return noise  # epsilon parameterisation

    @property
    def num_train_timesteps(self) -> int:
        return NUM_TRAIN_TIMESTEPS

    def trainable_parameters(self, scope: str) -> list[torch.nn.Parameter]:
        """Scope "temporal": temporal convolutions and temporal transformers (init_attn too); "all": the UNet."""
        if scope == "temporal":
            temporal = (TemporalConv, TemporalTransformer)
            return [p for m in self._unet.module.modules() if isinstance(m, temporal) for p in m.parameters()]
        if scope == "all":
            return list(self._unet.module.parameters())
        raise VipkitError(
            f"unknown trainable scope {scope!r} for videocrafter2; valid scopes: {', '.join(TRAINABLE_SCOPES)}"
        )

    def train_mode(self, enabled: bool) -> None:
        self._unet.module.train(enabled)

    def denoiser(self) -> torch.nn.Module:
        """The 3-D UNet (removed units are parameter-free stand-ins in it)."""
        return self._unet.module

    def use_denoiser(self, module: torch.nn.Module) -> None:
        self._runner = module

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self._unet.module.gradient_checkpointing = enabled

    # -- persistence -----------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        save_parts(Path(directory), self._parts, self.generation_settings)

    @classmethod
    def load_saved(cls, directory: Path) -> VideoCrafter2:
        """Rebuild a model written by ``save``; its saved generation settings come back as defaults."""
        return cls(cls.Config(base=str(directory)))
