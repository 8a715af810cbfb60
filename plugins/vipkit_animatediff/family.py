"""AnimateDiff (SD-1.5 UNet + motion modules, diffusers) as a vipkit VideoModel.

torch and diffusers are imported inside methods: registering the family (``vipkit plugins``,
``vipkit validate``) needs only this class and its Config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

import vipkit
from vipkit import VipkitError
from vipkit.family_kit import MAX_FRAMES, MAX_SIDE, DenoiserFamily, FamilyConfig
from vipkit_animatediff.names import EXPORT_FORMATS, MOTION_MODULE, AttentionKernel

if TYPE_CHECKING:
    import torch
    from diffusers import AnimateDiffPipeline
    from torch import Tensor

    from vipkit_animatediff.parts import ModelParts


class AnimateDiff(DenoiserFamily):
    """AnimateDiff on diffusers: ``UNetMotionModel`` denoiser, frozen SD-1.5 VAE and CLIP text encoder.

    ``device`` and ``dtype`` (torch objects) say where the denoiser runs. Tensors handed back
    (generations, prompt encodings) are float32 on CPU; ``predict_noise`` answers on the device and
    in the dtype of the latents it is given.
    """

    name = "animatediff"
    setting_keys = (
        "height",
        "width",
        "num_frames",
        "num_inference_steps",
        "guidance_scale",
        "negative_prompt",
        "dtype",
    )
    trainable_scopes: ClassVar[dict[str, str]] = {
        "motion": "the motion modules still present",
        "all": "every UNet parameter",
    }
    default_trainable = "motion"
    default_block_kinds = (MOTION_MODULE,)
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0")
    compile_regions = ("ResnetBlock2D", "Transformer2DModel", "AnimateDiffTransformer3D", "Upsample2D")

    class Config(FamilyConfig):
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
        height: int | None = Field(
            None,
            gt=0,
            le=MAX_SIDE,
            description="Video height in pixels, a multiple of 8; None: the model's default (512, tiny 32).",
        )
        width: int | None = Field(
            None,
            gt=0,
            le=MAX_SIDE,
            description="Video width in pixels, a multiple of 8; None: the model's default (512, tiny 32).",
        )
        num_frames: int | None = Field(
            None, gt=0, le=MAX_FRAMES, description="Frames per video; None: the model's default (16, tiny 8)."
        )
        num_inference_steps: int | None = Field(
            None,
            gt=0,
            le=1000,
            description="DDIM sampling steps, at most the 1000 training timesteps; None: the model's default (25, tiny 10).",
        )
        guidance_scale: float = Field(
            7.5, ge=0, description="Classifier-free guidance scale (values <= 1 turn guidance off)."
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
        fuse_projections: bool = Field(
            False,
            description="While generating, compute each attention layer's query, key and value projections as one "
            "matrix product (key and value for cross-attention), from weights fused for that call.",
        )

        @field_validator("base", "motion_adapter")
        @classmethod
        def _local_source_exists(cls, source: str) -> str:
            """A local path that does not exist is caught at validation, before anything loads."""
            from vipkit.model_source import is_local_path

            if is_local_path(source) and not Path(source).expanduser().exists():
                raise ValueError(
                    f"{source!r}: no such local directory (relative paths start from the current folder, "
                    f"{Path.cwd()}); point it at a downloaded model folder or give a hub id 'owner/name'"
                )
            return source

    config: Config

    # -- the parts ---------------------------------------------------------------------------
    def _load_parts(self) -> ModelParts:
        import torch

        from vipkit_animatediff.loading import load_parts

        return load_parts(self.config, getattr(torch, self.config.dtype))

    def _attach(self, parts: ModelParts) -> None:
        """Place every part on the device and build the pipeline around them."""
        from diffusers import AnimateDiffPipeline, DDPMScheduler

        from vipkit_animatediff.attention import choose_attention_kernels

        self._adopt(parts.unet, parts.default_settings, frozen=(parts.vae, parts.text_encoder))
        choose_attention_kernels(parts.unet.module, self.config.spatial_attention, self.config.temporal_attention)
        self._parts = parts
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
        scale = self._pipeline.vae_scale_factor
        for key in ("height", "width"):
            if self._settings[key] % scale:
                raise VipkitError(
                    f"{key} = {self._settings[key]} must be a multiple of {scale}, the VAE's downscaling factor"
                )

    def _copied_parts(self) -> ModelParts:
        """The UNet copied with its removals; VAE, text encoder and tokenizer shared; the scheduler (stateful) anew."""
        scheduler = type(self._parts.scheduler).from_config(self._parts.scheduler.config)
        return dataclasses.replace(
            self._parts, unet=self._prunable.copy(), scheduler=scheduler, default_settings=dict(self._settings)
        )

    # -- generation ------------------------------------------------------------------------
    def _generation_modules(self) -> list[torch.nn.Module]:
        """The UNet and the VAE (its decoder's ResNet blocks and upsamplers are compiled too)."""
        return [self._prunable.module, self._parts.vae]

    def _generation_context(self) -> AbstractContextManager[Any]:
        from vipkit_animatediff.attention import fused_projections

        if not self.config.fuse_projections:
            return nullcontext()
        config = self.config
        return fused_projections(self._prunable.module, config.spatial_attention, config.temporal_attention)

    def _generate_batch(self, prompts: list[str], generators: list[torch.Generator]) -> vipkit.Generation:
        settings, pipe = self._settings, self._pipeline
        denoised = pipe(
            prompt=prompts,
            negative_prompt=[settings["negative_prompt"]] * len(prompts),
            height=settings["height"],
            width=settings["width"],
            num_frames=settings["num_frames"],
            num_inference_steps=settings["num_inference_steps"],
            guidance_scale=settings["guidance_scale"],
            generator=generators,
            output_type="latent",
        ).frames
        decoded = pipe.video_processor.postprocess_video(pipe.decode_latents(denoised), output_type="pt")
        return vipkit.Generation(videos=decoded.float().cpu(), latents=denoised.float().cpu())

    def pipeline(self) -> AnimateDiffPipeline:
        """The ready diffusers pipeline, with the pruned UNet."""
        return self._pipeline

    # -- training --------------------------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        """CLIP text embeddings (B, L, D), float32 on CPU; the text encoder is frozen."""
        import torch

        with torch.no_grad():
            embeddings, _ = self._pipeline.encode_prompt(
                list(prompts), self.device, 1, do_classifier_free_guidance=False
            )
        return embeddings.float().cpu()

    def predict_noise(
        self, noisy_latents: Tensor, timesteps: Tensor, conditioning: Tensor, *, features: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """UNet output for latents (B, C, F, h, w), on the latents' device and dtype.

        The UNet wants the conditioning once per frame, (B*F, L, D). With ``features`` the outputs
        of the down, mid and up blocks come too, in execution order.
        """
        from vipkit_animatediff.features import recorded_block_outputs

        frames = noisy_latents.shape[2]
        home = dict(device=noisy_latents.device, dtype=noisy_latents.dtype)
        hidden = conditioning.to(self.device, self.dtype).repeat_interleave(frames, dim=0)
        recorder = recorded_block_outputs(self._prunable.module) if features else nullcontext([])
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

    def _scope_parameters(self, scope: str) -> list[torch.nn.Parameter]:
        from vipkit_animatediff.blocks import motion_modules

        if scope == "motion":
            return [p for module in motion_modules(self._prunable.module) for p in module.parameters()]
        return list(self._prunable.module.parameters())

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        if enabled:
            self._prunable.module.enable_gradient_checkpointing()
        else:
            self._prunable.module.disable_gradient_checkpointing()

    # -- persistence -----------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        from vipkit_animatediff.persistence import save_parts

        save_parts(Path(directory), self._parts, self._pipeline, self.generation_settings)

    # -- exports ---------------------------------------------------------------------------
    export_formats = EXPORT_FORMATS
    library_name = "diffusers"

    def export(self, directory: Path, format: str, *, dtype: str, provenance: Mapping[str, Any]) -> str:
        import torch

        from vipkit_animatediff.export import MOTION_ADAPTER, export_motion_adapter, export_pipeline

        settings = {**self.generation_settings, "dtype": dtype}
        if format == MOTION_ADAPTER:
            return export_motion_adapter(self._parts, Path(directory), getattr(torch, dtype), settings, provenance)
        return export_pipeline(self._parts, self._pipeline, Path(directory), getattr(torch, dtype), settings)

    @classmethod
    def export_options(cls, directory: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """A pipeline export is the ``base``; an adapter goes on the default SD-1.5 ``base`` (or the one you give)."""
        from vipkit_animatediff.export import MOTION_ADAPTER

        where = "motion_adapter" if manifest.get("format") == MOTION_ADAPTER else "base"
        return {where: str(directory), "dtype": manifest.get("dtype", "float32")}

    def source_models(self) -> list[str]:
        from vipkit.model_source import is_local_path

        if self.config.preset is not None:
            return []
        return [source for source in (self.config.base, self.config.motion_adapter) if not is_local_path(source)]
