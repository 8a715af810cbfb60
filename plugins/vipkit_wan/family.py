"""Wan 2.1 text-to-video (diffusers ``WanPipeline``: ``WanTransformer3DModel``, UMT5 text encoder, Wan VAE) as a
vipkit VideoModel, on ``vipkit.dit_kit``.

A ``WanTransformerBlock`` adds three residual branches to its stream, each removable exactly on its own:
self-attention (``attn1``, gated), cross-attention to the prompt (``attn2``) and the feed-forward (``ffn``, gated).
torch and diffusers are imported inside methods: registering the family needs only this class and its Config.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from vipkit.dit_kit import Branch, DiTConfig, DiTFamily

WAN_T2V_1_3B = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
REAL_SETTINGS = {
    "height": 480,
    "width": 832,
    "num_frames": 81,
    "num_inference_steps": 50,
    "guidance_scale": 5.0,
    "max_sequence_length": 512,
}
"""Generation defaults of Wan 2.1 T2V at 480p (WanPipeline's defaults; ``text_len = 512`` of Wan's shared config)."""


class Wan(DiTFamily):
    """Wan 2.1 T2V: ``WanTransformer3DModel`` denoiser (30 blocks at 1.3B, 40 at 14B), frozen UMT5-XXL and Wan VAE."""

    name = "wan"
    pipeline_class = "WanPipeline"
    block_list = "blocks"
    branches = (
        Branch("attn1", "self_attention"),
        Branch("attn2", "cross_attention"),
        Branch("ffn", "feed_forward"),
    )
    presets_module = "vipkit_wan.presets"
    real_settings: ClassVar[dict[str, Any]] = REAL_SETTINGS

    class Config(DiTConfig):
        base: str | None = Field(
            WAN_T2V_1_3B,
            description="Hub id or local folder of a diffusers WanPipeline (Wan 2.1 T2V 1.3B or 14B), or a folder "
            "vipkit wrote (`save`, `vipkit export --format diffusers`).",
        )
        preset: Literal["tiny", "random", "random-14b"] | None = Field(
            None,
            description="Build random components from configs instead of loading `base` (no download): 'tiny' "
            "(4 blocks, 32 px) runs a whole V.I.P. schedule on a CPU; 'random' is Wan 2.1 T2V 1.3B (30 blocks, "
            "UMT5-XXL, Wan VAE; built on `device`), 'random-14b' the 14B (40 blocks), for measuring time, memory "
            "and disk. Their videos mean nothing about quality.",
        )

    config: Config

    def _spatial_multiple(self) -> int:
        return self._pipeline.vae_scale_factor_spatial * self._prunable.module.config.patch_size[1]
