"""The ``ltx-video`` model family: LTX-Video (diffusers ``LTXPipeline``) on vipkit's DiT kit, in one module.

What a third diffusion transformer takes: the pipeline class, the block list and its residual branches, how the
transformer is called for training, and the presets. An ``LTXVideoTransformerBlock`` adds a gated self-attention
(``attn1``), a cross-attention (``attn2``) and a gated feed-forward (``ff``) to its stream, each removable exactly.
LTX-Video denoises packed latents (``(B, tokens, channels)``: the pipeline's own layout, kept for training) and
masks padded prompt tokens, so its conditioning carries the mask as one more channel.

``random`` is LTX-Video 0.9.0 with the sizes of diffusers' ``scripts/convert_ltx_to_diffusers.py`` (transformer:
the ``LTXVideoTransformer3DModel`` defaults, 28 layers of 32 heads of 64, cross-attention 2048, captions 4096; the
0.9.0 VAE config; its dynamically shifted flow-matching scheduler; T5 v1.1 XXL; 128 tokens, ``TOKENIZER_MAX_LENGTH``).
torch and diffusers are imported inside functions: registering needs neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

import vipkit
from vipkit.dit_kit import Branch, DiTConfig, DiTFamily

if TYPE_CHECKING:
    import torch
    from torch import Tensor

FRAME_RATE = 25
"""The frame rate LTXPipeline conditions its rotary positions on by default (generation and training use it)."""
REAL_SETTINGS = {
    "height": 512,
    "width": 704,
    "num_frames": 161,
    "num_inference_steps": 50,
    "guidance_scale": 3.0,
    "max_sequence_length": 128,
}
"""LTXPipeline's defaults."""
TINY = dict(
    transformer=dict(
        in_channels=8,
        out_channels=8,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=4,
        caption_channels=16,
    ),
    vae=dict(
        latent_channels=8,
        block_out_channels=(8,) * 4,
        decoder_block_out_channels=(8,) * 4,
        layers_per_block=(1,) * 5,
        decoder_layers_per_block=(1,) * 5,
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        patch_size=1,
    ),
    settings={
        **REAL_SETTINGS,
        "height": 32,
        "width": 32,
        "num_frames": 9,
        "num_inference_steps": 4,
        "max_sequence_length": 64,
    },
)
"""The tiny preset's sizes (its VAE compresses 4 x 4 x 4: 9 frames of 32 px are 3 x 8 x 8 latent tokens)."""
RANDOM = dict(transformer={}, vae={}, settings=REAL_SETTINGS)
"""LTX-Video 0.9.0: the transformer's and the VAE's constructor defaults are the script's 0.9.0 configs."""


class LTXVideo(DiTFamily):
    """LTX-Video: ``LTXVideoTransformer3DModel`` denoiser (28 blocks in 0.9.0), frozen T5 v1.1 XXL and LTX VAE."""

    name = "ltx-video"
    pipeline_class = "LTXPipeline"
    block_list = "transformer_blocks"
    branches = (Branch("attn1", "self_attention"), Branch("attn2", "cross_attention"), Branch("ff", "feed_forward"))
    presets_module = "vipkit_ltx"
    real_settings: ClassVar[dict[str, Any]] = REAL_SETTINGS

    class Config(DiTConfig):
        base: str | None = Field(
            "Lightricks/LTX-Video",
            description="Hub id or local folder of a diffusers LTXPipeline, or a folder vipkit wrote.",
        )
        preset: Literal["tiny", "random"] | None = Field(
            None,
            description="Random components from configs, no download: 'tiny' (4 blocks, 32 px) for CPU tests, "
            "'random' LTX-Video 0.9.0 (28 blocks, built on `device`) for measurements.",
        )

    config: Config

    def _spatial_multiple(self) -> int:
        return self._pipeline.vae_spatial_compression_ratio * self._prunable.module.config.patch_size

    def _encode(self, prompts: list[str]) -> Tensor:
        """T5 embeddings (B, L, D) with the prompt's attention mask appended as channel D."""
        import torch

        embeddings, mask, _, _ = self._pipeline.encode_prompt(
            prompts,
            do_classifier_free_guidance=False,
            max_sequence_length=self._settings["max_sequence_length"],
            device=self.device,
        )
        return torch.cat([embeddings, mask[..., None].to(embeddings.dtype)], dim=-1)

    def _denoise(self, runner: torch.nn.Module, latents: Tensor, timesteps: Tensor, conditioning: Tensor) -> Tensor:
        """Packed latents (B, frames x height x width, C); the latent grid and rotary scale as the pipeline sets them."""
        pipe, s = self._pipeline, self._settings
        temporal, spatial = pipe.vae_temporal_compression_ratio, pipe.vae_spatial_compression_ratio
        return runner(
            hidden_states=latents,
            encoder_hidden_states=conditioning[..., :-1],
            encoder_attention_mask=conditioning[..., -1],
            timestep=timesteps,
            num_frames=(s["num_frames"] - 1) // temporal + 1,
            height=s["height"] // spatial,
            width=s["width"] // spatial,
            rope_interpolation_scale=(temporal / FRAME_RATE, spatial, spatial),
            return_dict=False,
        )[0]


def preset_components(preset: str, seed: int, device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    """The LTXPipeline components of ``preset`` (seeded random weights, built on ``device``) and its settings."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel

    from vipkit.dit_presets import T5_V1_1_XXL, TINY_T5, byte_level_t5_tokenizer, seeded_on, t5_encoder

    sizes = TINY if preset == "tiny" else RANDOM
    text_sizes = {**T5_V1_1_XXL, **(TINY_T5 if preset == "tiny" else {})}
    tokenizer = byte_level_t5_tokenizer(sizes["settings"]["max_sequence_length"])
    with seeded_on(device, seed):
        components = dict(
            transformer=LTXVideoTransformer3DModel(**sizes["transformer"]),
            vae=AutoencoderKLLTXVideo(**sizes["vae"]),
            text_encoder=t5_encoder(text_sizes, tokenizer),
        )
    scheduler = FlowMatchEulerDiscreteScheduler(  # the script's for 0.9.0 / 0.9.1
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    return {**components, "tokenizer": tokenizer, "scheduler": scheduler}, dict(sizes["settings"])


@vipkit.hookimpl
def register_models(register: vipkit.hookspecs.Register) -> None:
    register(LTXVideo)
