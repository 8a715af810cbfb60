"""VideoCrafter2 (own UNet port, official checkpoint keys) as a vipkit VideoModel.

torch, diffusers and transformers are imported inside methods: registering the family needs only this
class and its Config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

import vipkit
from vipkit import VipkitError
from vipkit.family_kit import MAX_FRAMES, MAX_SIDE, DenoiserFamily, FamilyConfig
from vipkit_videocrafter2.names import EXPORT_FORMATS, KINDS, NUM_TRAIN_TIMESTEPS

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from vipkit_videocrafter2.parts import ModelParts


class VideoCrafter2(DenoiserFamily):
    """VideoCrafter2: 3-D UNet denoiser (prunable), frozen OpenCLIP text encoder and SD VAE, official DDIM.

    ``device`` and ``dtype`` say where the denoiser runs. Generations and prompt encodings come back
    as float32 on CPU; ``predict_noise`` answers on the device and in the dtype of its latents.
    """

    name = "videocrafter2"
    setting_keys = (
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
    trainable_scopes: ClassVar[dict[str, str]] = {
        "temporal": "the temporal convolutions and temporal transformers (init_attn too)",
        "all": "every UNet parameter",
    }
    default_trainable = "all"
    default_block_kinds = KINDS
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0")

    class Config(FamilyConfig):
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
        height: int | None = Field(
            None,
            gt=0,
            le=MAX_SIDE,
            description="Video height in pixels, a multiple of 8; None: the model's (320, tiny 16).",
        )
        width: int | None = Field(
            None,
            gt=0,
            le=MAX_SIDE,
            description="Video width in pixels, a multiple of 8; None: the model's (512, tiny 16).",
        )
        num_frames: int | None = Field(
            None, gt=0, le=MAX_FRAMES, description="Frames per video; None: the model's (16, tiny 4)."
        )
        num_inference_steps: int | None = Field(
            None, gt=0, le=NUM_TRAIN_TIMESTEPS, description="DDIM steps; None: the model's (50, tiny 4)."
        )
        guidance_scale: float = Field(
            12.0, ge=0, description="Classifier-free guidance scale (official 12.0; values <= 1 turn it off)."
        )
        fps: int = Field(28, gt=0, description="Frame-rate condition of the UNet (official script: 28).")
        eta: float = Field(1.0, ge=0, description="DDIM eta: 0 deterministic, 1 the official stochastic sampler.")
        negative_prompt: str = Field("", description="Prompt of the unconditional branch (official: empty).")
        generation_batch_size: int = Field(4, gt=0, description="Videos denoised together.")

    config: Config

    # -- the parts ---------------------------------------------------------------------------
    def _load_parts(self) -> ModelParts:
        from vipkit_videocrafter2.loading import load_parts

        return load_parts(self.config)

    def _attach(self, parts: ModelParts) -> None:
        """Place every part on the device; the sampling schedule is the official one."""
        from vipkit_videocrafter2.schedule import Schedule

        self._adopt(parts.unet, parts.default_settings, frozen=(parts.vae, parts.text_encoder))
        self._parts = parts
        self._schedule = Schedule.official()
        scale = 2 ** (len(parts.vae.config.block_out_channels) - 1)
        for key in ("height", "width"):
            if self._settings[key] % scale:
                raise VipkitError(f"{key} = {self._settings[key]} must be a multiple of {scale}, the VAE's downscaling")
        self._vae_scale = scale

    def _copied_parts(self) -> ModelParts:
        """The UNet copied with its removals; VAE, text encoder and tokenizer shared."""
        return dataclasses.replace(self._parts, unet=self._prunable.copy(), default_settings=dict(self._settings))

    @property
    def unet(self) -> torch.nn.Module:
        """The (pruned) UNet module, called like the official one."""
        return self._prunable.module

    # -- generation ------------------------------------------------------------------------
    def _generate_batch(self, prompts: list[str], generators: list[torch.Generator]) -> vipkit.Generation:
        """Official DDIM with guidance and fps."""
        from vipkit_videocrafter2.schedule import ddim_sample, guided, per_video_noise

        s = self._settings
        shape = (4, s["num_frames"], s["height"] // self._vae_scale, s["width"] // self._vae_scale)
        cond = self._encode(prompts)
        uncond = self._encode([s["negative_prompt"]] * len(prompts))
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
        return vipkit.Generation(videos=self._decode(denoised), latents=denoised.float().cpu())

    def pipeline(self) -> VideoCrafter2:
        """There is no diffusers pipeline for VideoCrafter2: the model itself is one (``generate``)."""
        return self

    def _denoiser(self, x: Tensor, t: Tensor, context: Tensor) -> Tensor:
        return self._prunable.module(x, t, context=context, fps=self._settings["fps"])

    def _decode(self, latents: Tensor) -> Tensor:
        """Latents (B, 4, T, h, w) -> videos (B, T, 3, H, W) in [0, 1], float32 on CPU, frame by frame as officially."""
        import torch

        from vipkit_videocrafter2.schedule import LATENT_SCALE

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
    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        """OpenCLIP penultimate-layer tokens (B, 77, D), float32 on CPU; the text encoder is frozen."""
        import torch

        with torch.no_grad():
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
        unet = self._prunable.module
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

    def _scope_parameters(self, scope: str) -> list[torch.nn.Parameter]:
        if scope == "temporal":
            from vipkit_videocrafter2.attention import TemporalTransformer
            from vipkit_videocrafter2.layers import TemporalConv

            temporal = (TemporalConv, TemporalTransformer)
            return [p for m in self._prunable.module.modules() if isinstance(m, temporal) for p in m.parameters()]
        return list(self._prunable.module.parameters())

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self._prunable.module.gradient_checkpointing = enabled

    # -- persistence -----------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        from vipkit_videocrafter2.persistence import save_parts

        save_parts(Path(directory), self._parts, self.generation_settings)

    # -- exports ---------------------------------------------------------------------------
    export_formats = EXPORT_FORMATS

    def export(self, directory: Path, format: str, *, dtype: str, provenance: Mapping[str, Any]) -> str:
        import torch

        from vipkit_videocrafter2.export import export_official

        return export_official(self._parts, Path(directory), getattr(torch, dtype))

    @classmethod
    def export_options(cls, directory: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
        from vipkit_videocrafter2.export import WEIGHTS

        raise VipkitError(
            f"{directory} holds only a UNet in the official layout; vipkit loads it with the released checkpoint's VAE "
            f"and text encoder after converting them together: python -m vipkit_videocrafter2.convert model.ckpt "
            f"OUT_DIR --tokenizer TOKENIZER_DIR --unet {Path(directory) / WEIGHTS}, then load OUT_DIR"
        )
