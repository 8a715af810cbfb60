"""AnimateDiff (SD-1.5 UNet + motion modules, diffusers) as a vipkit VideoModel."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import AnimateDiffPipeline, DDPMScheduler
from pydantic import Field, field_validator
from torch import Tensor

import vipkit
from vipkit.errors import VipkitError
from vipkit_animatediff.attention import AttentionKernel, choose_attention_kernels
from vipkit_animatediff.blocks import motion_modules
from vipkit_animatediff.features import recorded_block_outputs
from vipkit_animatediff.loading import load_parts, looks_local
from vipkit_animatediff.parts import ModelParts
from vipkit_animatediff.persistence import save_parts

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SETTING_KEYS = ("height", "width", "num_frames", "num_inference_steps", "guidance_scale", "negative_prompt", "dtype")
TRAINABLE_SCOPES = ("motion", "all")


def _place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move ``module`` only if needed, with torch's own ``to``: diffusers' override logs a warning on every dtype
    cast ("modules that should be kept in float32: []"), even when no module needs float32."""
    first = next(module.parameters())
    if first.device != device or first.dtype != dtype:
        torch.nn.Module.to(module, device, dtype)
    return module


class AnimateDiff(vipkit.VideoModel):
    """AnimateDiff on diffusers: ``UNetMotionModel`` denoiser, frozen SD-1.5 VAE and CLIP text encoder.

    ``device`` and ``dtype`` (torch objects) say where the denoiser runs. Tensors handed back
    (generations, prompt encodings) are float32 on CPU; ``predict_noise`` answers on the device and
    in the dtype of the latents it is given.
    """

    name = "animatediff"

    class Config(vipkit.Config):
        base: str = Field(
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            description="Hub id or local directory of an SD-1.5 diffusers pipeline, or a directory written by "
            "`save` (a compressed vipkit model; then `motion_adapter` is not used).",
        )
        motion_adapter: str = Field(
            "guoyww/animatediff-motion-adapter-v1-5-2", description="Hub id or local directory of the MotionAdapter."
        )
        preset: Literal["tiny", "random"] | None = Field(
            None,
            description="Build random components of this size from configs instead of loading `base` (no download): "
            "'tiny' runs a whole V.I.P. schedule in minutes on a CPU; 'random' is the real architecture (SD-1.5 "
            "UNet + motion adapter v1-5-2 = 1.31 B UNet parameters, SD VAE, CLIP ViT-L/14 text encoder; built on "
            "`device`) for measuring time, memory and disk before downloading. Their videos mean nothing about quality.",
        )
        preset_seed: int = Field(0, ge=0, description="Seed of the preset's random weights (same seed, same weights).")
        height: int | None = Field(
            None, gt=0, description="Video height in pixels, a multiple of 8; None: the model's default (512, tiny 32)."
        )
        width: int | None = Field(
            None, gt=0, description="Video width in pixels, a multiple of 8; None: the model's default (512, tiny 32)."
        )
        num_frames: int | None = Field(
            None, gt=0, description="Frames per video; None: the model's default (16, tiny 8)."
        )
        num_inference_steps: int | None = Field(
            None, gt=0, description="DDIM sampling steps; None: the model's default (25, tiny 10)."
        )
        guidance_scale: float = Field(
            7.5, ge=0, description="Classifier-free guidance scale (values <= 1 turn guidance off)."
        )
        negative_prompt: str = Field("", description="Negative prompt for classifier-free guidance.")
        dtype: Literal["float32", "bfloat16", "float16"] = Field(
            "float32", description="Weights and compute dtype of every component."
        )
        device: str = Field(
            "cpu",
            pattern=r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$",
            description="Torch device ('cpu', 'cuda', 'cuda:1', ...); 'auto' = cuda if available, else cpu.",
        )
        generation_batch_size: int = Field(8, gt=0, description="Videos generated per pipeline call.")
        spatial_attention: AttentionKernel = Field(
            "auto",
            description="Attention kernel of the spatial (per-image) attention layers, falling back to the others "
            "for inputs it cannot take: 'auto' (PyTorch's choice; vipkit's trainer leaves cuDNN out), 'cudnn' "
            "(fastest on H100/H200 at full size), 'flash', 'efficient' or 'math'.",
        )
        temporal_attention: AttentionKernel = Field(
            "auto", description="Attention kernel of the motion modules' (per-pixel, across frames) attention layers."
        )

        @field_validator("base", "motion_adapter")
        @classmethod
        def _local_source_exists(cls, source: str) -> str:
            """A local path that does not exist is caught at validation, before anything loads."""
            if looks_local(source) and not Path(source).expanduser().exists():
                raise ValueError(
                    f"{source!r}: no such local directory (relative paths start from the current folder, "
                    f"{Path.cwd()}); point it at a downloaded model folder or give a hub id 'owner/name'"
                )
            return source

        @field_validator("height", "width")
        @classmethod
        def _multiple_of_8(cls, value: int | None) -> int | None:
            if value is not None and value % 8:
                raise ValueError(f"must be a multiple of 8 (the AnimateDiff pipeline requires it), got {value}")
            return value

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self._attach(load_parts(self.config, DTYPES[self.config.dtype]))

    def _attach(self, parts: ModelParts) -> None:
        """Resolve the settings, place every part on the device, and build the pipeline around them."""
        config = self.config
        given = {key: getattr(config, key) for key in SETTING_KEYS}
        explicit = {key: value for key, value in given.items() if key in config.model_fields_set and value is not None}
        fallback = {key: value for key, value in given.items() if value is not None}
        merged = {**fallback, **parts.default_settings, **explicit}  # explicit > the source's defaults > Config's
        self._settings: dict[str, Any] = {key: merged[key] for key in SETTING_KEYS}
        self.dtype = DTYPES[self._settings["dtype"]]
        auto = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(auto if config.device == "auto" else config.device)
        _place(parts.unet.module, self.device, self.dtype).eval()
        for frozen in (parts.vae, parts.text_encoder):
            _place(frozen, self.device, self.dtype).eval().requires_grad_(False)
        choose_attention_kernels(parts.unet.module, config.spatial_attention, config.temporal_attention)
        self._parts = parts
        self._unet = parts.unet
        self._runner: torch.nn.Module = parts.unet.module  # what predict_noise calls (the UNet, or a DDP wrapper of it)
        self._pipeline = AnimateDiffPipeline(
            vae=parts.vae,
            text_encoder=parts.text_encoder,
            tokenizer=parts.tokenizer,
            unet=parts.unet.module,
            motion_adapter=None,
            scheduler=parts.scheduler,
        )
        self._pipeline.set_progress_bar_config(disable=True)
        self._train_scheduler = DDPMScheduler.from_config(parts.scheduler.config)
        self._check_size()

    def _check_size(self) -> None:
        scale = self._pipeline.vae_scale_factor
        for key in ("height", "width"):
            if self._settings[key] % scale:
                raise VipkitError(
                    f"{key} = {self._settings[key]} must be a multiple of {scale}, the VAE's downscaling factor"
                )

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

    def copy(self) -> AnimateDiff:
        """A deep copy of the UNet with its removal state; VAE, text encoder and tokenizer are shared."""
        clone = type(self).__new__(type(self))
        vipkit.VideoModel.__init__(clone, self.config)
        scheduler = type(self._parts.scheduler).from_config(self._parts.scheduler.config)  # stateful: not shared
        parts = dataclasses.replace(self._parts, unet=self._unet.copy(), scheduler=scheduler)
        parts.default_settings = dict(self._settings)
        clone._attach(parts)
        return clone

    # -- generation ------------------------------------------------------------------------
    @property
    def generation_settings(self) -> dict[str, Any]:
        return dict(self._settings)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> vipkit.Generation:
        """Seeded, batched sampling; one generator per video makes video i depend only on (prompt i, seed i)."""
        if not prompts or len(prompts) != len(seeds):
            raise VipkitError(f"generate needs one seed per prompt, got {len(prompts)} prompts and {len(seeds)} seeds")
        settings, pipe = self._settings, self._pipeline
        size = self.config.generation_batch_size
        videos, latents = [], []
        for start in range(0, len(prompts), size):
            chunk = list(prompts[start : start + size])
            denoised = pipe(
                prompt=chunk,
                negative_prompt=[settings["negative_prompt"]] * len(chunk),
                height=settings["height"],
                width=settings["width"],
                num_frames=settings["num_frames"],
                num_inference_steps=settings["num_inference_steps"],
                guidance_scale=settings["guidance_scale"],
                generator=[torch.Generator().manual_seed(int(seed)) for seed in seeds[start : start + size]],
                output_type="latent",
            ).frames
            decoded = pipe.video_processor.postprocess_video(pipe.decode_latents(denoised), output_type="pt")
            videos.append(decoded.float().cpu())
            latents.append(denoised.float().cpu())
        return vipkit.Generation(videos=torch.cat(videos), latents=torch.cat(latents))

    def pipeline(self) -> AnimateDiffPipeline:
        """The ready diffusers pipeline, with the pruned UNet."""
        return self._pipeline

    # -- training --------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        """CLIP text embeddings (B, L, D), float32 on CPU; the text encoder is frozen."""
        embeddings, _ = self._pipeline.encode_prompt(list(prompts), self.device, 1, do_classifier_free_guidance=False)
        return embeddings.float().cpu()

    def predict_noise(
        self, noisy_latents: Tensor, timesteps: Tensor, conditioning: Tensor, *, features: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """UNet output for latents (B, C, F, h, w), on the latents' device and dtype.

        The UNet wants the conditioning once per frame, (B*F, L, D). With ``features`` the outputs
        of the down, mid and up blocks come too, in execution order.
        """
        frames = noisy_latents.shape[2]
        home = dict(device=noisy_latents.device, dtype=noisy_latents.dtype)
        hidden = conditioning.to(self.device, self.dtype).repeat_interleave(frames, dim=0)
        recorder = recorded_block_outputs(self._unet.module) if features else nullcontext([])
        with recorder as recorded:
            prediction = self._runner(
                noisy_latents.to(self.device, self.dtype), timesteps.to(self.device), encoder_hidden_states=hidden
            ).sample.to(**home)
        if not features:
            return prediction
        return prediction, [output.to(**home) for output in recorded]

    def add_noise(self, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        return self._train_scheduler.add_noise(latents, noise, timesteps)

    def training_target(self, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        kind = self._train_scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self._train_scheduler.get_velocity(latents, noise, timesteps)
        if kind == "sample":
            return latents
        raise VipkitError(f"scheduler prediction_type {kind!r} is not supported (epsilon, v_prediction, sample)")

    @property
    def num_train_timesteps(self) -> int:
        return int(self._train_scheduler.config.num_train_timesteps)

    def trainable_parameters(self, scope: str) -> list[torch.nn.Parameter]:
        """Scope "motion": the motion modules still present; "all": every UNet parameter."""
        if scope == "motion":
            return [p for module in motion_modules(self._unet.module) for p in module.parameters()]
        if scope == "all":
            return list(self._unet.module.parameters())
        raise VipkitError(
            f"unknown trainable scope {scope!r} for animatediff; valid scopes: {', '.join(TRAINABLE_SCOPES)}"
        )

    def train_mode(self, enabled: bool) -> None:
        self._unet.module.train(enabled)

    def denoiser(self) -> torch.nn.Module:
        """The UNetMotionModel (removed blocks are SkipBlocks in it, their weights outside it)."""
        return self._unet.module

    def use_denoiser(self, module: torch.nn.Module) -> None:
        self._runner = module

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        if enabled:
            self._unet.module.enable_gradient_checkpointing()
        else:
            self._unet.module.disable_gradient_checkpointing()

    # -- persistence -----------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        save_parts(Path(directory), self._parts, self._pipeline, self.generation_settings)

    @classmethod
    def load_saved(cls, directory: Path) -> AnimateDiff:
        """Rebuild a model written by ``save``; its saved generation settings come back as defaults."""
        return cls(cls.Config(base=str(directory)))
