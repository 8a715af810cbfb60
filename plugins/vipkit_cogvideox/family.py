"""CogVideoX text-to-video (diffusers ``CogVideoXPipeline``: ``CogVideoXTransformer3DModel``, T5 v1.1 XXL, CogVideoX
VAE) as a vipkit VideoModel, on ``vipkit.dit_kit``.

A ``CogVideoXBlock`` carries two streams, the video tokens and the text tokens, and returns both; a removed block
returns both as it got them. Its two residual branches are removable exactly on their own: the joint attention
over text and video (``attn1``, both streams gated) and the feed-forward (``ff``, both streams gated). CogVideoX 1.0
(2B, 5B) is covered; 1.5's temporal patches are not. torch and diffusers are imported inside methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from vipkit import VipkitError
from vipkit.dit_kit import Branch, DiTConfig, DiTFamily, DiTParts

if TYPE_CHECKING:
    import torch
    from torch import Tensor

COGVIDEOX_2B = "THUDM/CogVideoX-2b"
STREAMS = ("hidden_states", "encoder_hidden_states")
REAL_SETTINGS = {
    "height": 480,
    "width": 720,
    "num_frames": 49,
    "num_inference_steps": 50,
    "guidance_scale": 6.0,
    "max_sequence_length": 226,
}
"""Generation defaults of CogVideoX 1.0 (CogVideoXPipeline's: 480 x 720, 49 frames, 50 steps, guidance 6, 226 tokens)."""


class CogVideoX(DiTFamily):
    """CogVideoX 1.0: ``CogVideoXTransformer3DModel`` denoiser (30 blocks at 2B, 42 at 5B), frozen T5 and VAE."""

    name = "cogvideox"
    pipeline_class = "CogVideoXPipeline"
    block_list = "transformer_blocks"
    block_returns = STREAMS
    branches = (Branch("attn1", "attention", returns=STREAMS), Branch("ff", "feed_forward"))
    presets_module = "vipkit_cogvideox.presets"
    real_settings: ClassVar[dict[str, Any]] = REAL_SETTINGS

    class Config(DiTConfig):
        base: str | None = Field(
            COGVIDEOX_2B,
            description="Hub id or local folder of a diffusers CogVideoXPipeline (CogVideoX-2b or -5b), or a folder "
            "vipkit wrote (`save`, `vipkit export --format diffusers`).",
        )
        preset: Literal["tiny", "random", "random-5b"] | None = Field(
            None,
            description="Build random components from configs instead of loading `base` (no download): 'tiny' "
            "(4 blocks, rotary positions, 32 px) runs a whole V.I.P. schedule on a CPU; 'random' is CogVideoX-2b "
            "(30 blocks, T5 v1.1 XXL, CogVideoX VAE; built on `device`), 'random-5b' CogVideoX-5b (42 blocks), for "
            "measuring time, memory and disk. Their videos mean nothing about quality.",
        )

    config: Config

    def _attach(self, parts: DiTParts) -> None:
        """CogVideoX-2b adds sin-cos positions for exactly ``max_text_seq_length`` text tokens: that is its prompt
        length unless the recipe sets one (then they must agree); rotary models (5B) take any length."""
        super()._attach(parts)
        config = parts.transformer.module.config
        if config.use_rotary_positional_embeddings:
            return
        if self.config.max_sequence_length is None:
            self._settings["max_sequence_length"] = config.max_text_seq_length
        elif self.config.max_sequence_length != config.max_text_seq_length:
            raise VipkitError(
                f"max_sequence_length = {self.config.max_sequence_length}: this CogVideoX adds positional embeddings "
                f"for exactly {config.max_text_seq_length} text tokens; leave it unset or set it to that"
            )

    def _spatial_multiple(self) -> int:
        return self._pipeline.vae_scale_factor_spatial * self._prunable.module.config.patch_size

    def _denoise(self, runner: torch.nn.Module, latents: Tensor, timesteps: Tensor, conditioning: Tensor) -> Tensor:
        """Latents (B, F, C, h, w), as the pipeline gives them; rotary positions (5B) made as the pipeline makes them."""
        rotary = None
        if self._prunable.module.config.use_rotary_positional_embeddings:
            scale = self._pipeline.vae_scale_factor_spatial
            frames, height, width = latents.shape[1], latents.shape[3] * scale, latents.shape[4] * scale
            rotary = self._pipeline._prepare_rotary_positional_embeddings(height, width, frames, latents.device)
        return runner(
            hidden_states=latents,
            encoder_hidden_states=conditioning,
            timestep=timesteps,
            image_rotary_emb=rotary,
            return_dict=False,
        )[0]
