"""The shapes world's Wan 2.1 teacher: a tiny WanPipeline as a ``TeacherKind`` (``models/shapes-wan-teacher``: RESULTS.md §14).

A diffusion transformer of 12 identical blocks (1.6 M parameters, 125,152 a block), so that removing a quarter or half
of its blocks is a real choice; Wan 2.1 1.3B's configuration (``vipkit_wan.presets.WAN_1_3B``) with smaller sizes.
What the world's 32×32 videos need changed, and why:

- **9 frames, not the world's usual 8.** ``AutoencoderKLWan`` keeps the first frame on its own and compresses the
  rest in time, so ``WanPipeline`` takes ``1 + k·scale_factor_temporal`` frames and rounds any other count up (with
  no temporal compression it would round every count up by one: ``n % 1`` is never 1). This VAE compresses time by 2
  (one temporal downsampling) and space by 4: 9×32×32 videos become 5×8×8 latents of 16 channels, 6 pixel values
  per latent value as in the AnimateDiff teachers' VAE (4×4 pixels × 3 colours per 8 channels).
- **Wan's own patches** (``patch_size = (1, 2, 2)``): 4×4 tokens per latent frame, each covering 8×8 pixels (a small
  shape's size), 80 tokens a video. Patches of one latent pixel (320 tokens) were measured 4× slower per video on
  the CPU, where the shapes recipe generates and scores some 1,000 videos; the 64 latent values each token predicts
  still place a shape to the pixel.
- **The world's word tokenizer** (one token per grammar word, 24 tokens at most) in front of a 2-layer UMT5 encoder
  of width 64: ``WanPipeline`` calls its tokenizer and ``text_encoder(ids, mask)`` and zeroes the padding, which any
  tokenizer and encoder allow.
- Rectified flow as the ``wan`` family trains it (``x_t = (1 - s) x + s n``, target ``n - x``, ``s = t / 1000``,
  ``t`` uniform), sampled by Wan's UniPC flow sampler, 20 steps, guidance 5, as the AnimateDiff teachers sample.

Latents are normalised per channel (``latents_mean`` / ``latents_std`` in the VAE config, as ``WanPipeline``
decodes them). The exported folder is what the ``wan`` family writes (``vipkit_dit.json`` with the generation
settings), made through its public ``from_options`` and ``save`` from a plain ``WanPipeline`` folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from torch import Tensor
from transformers import UMT5EncoderModel

from vipkit.dit_presets import UMT5_XXL, seeded_on, t5_encoder
from vipkit_shapes.teacher_kind import ForwardProcess, TeacherKind, TeacherParts, Tokens
from vipkit_shapes.teacher_model import MAX_TOKENS, SIZE
from vipkit_shapes.tokenizer import word_tokenizer
from vipkit_wan import Wan
from vipkit_wan.presets import SCHEDULER, WAN_1_3B

FRAMES, LATENT_CHANNELS, TEXT_DIM = 9, 16, 64
TRANSFORMER = {
    **WAN_1_3B,
    "num_attention_heads": 3,
    "attention_head_dim": 32,
    "in_channels": LATENT_CHANNELS,
    "out_channels": LATENT_CHANNELS,
    "text_dim": TEXT_DIM,
    "freq_dim": 64,
    "ffn_dim": 256,
    "num_layers": 12,
}
VAE = dict(
    base_dim=32,  # 16 learnt the backgrounds and not the shapes (benchmarks/RESULTS.md §14)
    z_dim=LATENT_CHANNELS,
    dim_mult=[1, 2, 3],
    num_res_blocks=1,
    temperal_downsample=[False, True],  # diffusers' spelling
    scale_factor_spatial=4,
    scale_factor_temporal=2,
    latents_mean=[0.0] * LATENT_CHANNELS,  # fitted to the encoded training set
    latents_std=[1.0] * LATENT_CHANNELS,
)
TEXT_ENCODER = {
    **UMT5_XXL,
    "d_model": TEXT_DIM,
    "d_kv": 16,
    "d_ff": 128,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 16,
    "dropout_rate": 0.0,  # trained jointly: no dropout, so training sees the prompts as sampling does
}
GENERATION_SETTINGS: dict[str, Any] = {
    "height": SIZE,
    "width": SIZE,
    "num_frames": FRAMES,
    "num_inference_steps": 20,
    "guidance_scale": 5.0,
    "max_sequence_length": MAX_TOKENS,
    "negative_prompt": "",
    "dtype": "float32",
}


class WanTeacher(TeacherKind):
    """The tiny Wan 2.1 teacher."""

    name = "wan"
    component = "transformer"
    frames = FRAMES
    settings: ClassVar[dict[str, Any]] = GENERATION_SETTINGS
    latent_scale_keys = ("latents_mean", "latents_std")
    classes: ClassVar[dict[str, type]] = {
        "vae": AutoencoderKLWan,
        "text_encoder": UMT5EncoderModel,
        "transformer": WanTransformer3DModel,
    }
    vae_batch_size = 64  # clips of 9 frames
    attention_sequences = 1  # every block attends over the whole video at once

    def build(self, seed: int = 0, vae_config: dict[str, Any] | None = None) -> TeacherParts:
        tokenizer = word_tokenizer(MAX_TOKENS)
        with seeded_on(torch.device("cpu"), seed):
            text_encoder = t5_encoder({**TEXT_ENCODER, "vocab_size": len(tokenizer)}, tokenizer, umt5=True)
            vae = AutoencoderKLWan.from_config({**VAE, **(vae_config or {})})
            transformer = WanTransformer3DModel(**TRANSFORMER)
        return TeacherParts(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=vae,
            denoiser=transformer,
            scheduler=UniPCMultistepScheduler(**SCHEDULER),
        )

    def vae_batch(self, videos: Tensor, generator: torch.Generator, size: int) -> Tensor:
        index = torch.randint(0, videos.shape[0], (size,), device=videos.device, generator=generator)
        return videos[index].transpose(1, 2)  # (B, 3, F, H, W): the VAE compresses time too

    def encode(self, vae: torch.nn.Module, videos: Tensor) -> Tensor:
        return vae.encode(videos.transpose(1, 2)).latent_dist.mean

    def fit_latent_scale(self, vae: torch.nn.Module, latents: Tensor) -> None:
        channels = latents.float().transpose(0, 1).flatten(1)
        vae.register_to_config(latents_mean=channels.mean(1).tolist(), latents_std=channels.std(1).tolist())

    def scaled(self, vae: torch.nn.Module, latents: Tensor) -> Tensor:
        mean, std = (torch.tensor(vae.config[key]).view(1, -1, 1, 1, 1).to(latents) for key in self.latent_scale_keys)
        return (latents - mean) / std

    def forward_process(self, scheduler: Any, device: torch.device) -> ForwardProcess:
        steps = scheduler.config.num_train_timesteps

        def noised(x0: Tensor, noise: Tensor, timesteps: Tensor) -> tuple[Tensor, Tensor]:
            s = (timesteps.float() / steps).view(-1, 1, 1, 1, 1)
            return (1 - s) * x0 + s * noise, noise - x0

        return noised

    def condition(self, text_encoder: torch.nn.Module, tokens: Tokens) -> Tensor:
        hidden = text_encoder(tokens.ids, tokens.mask).last_hidden_state
        return hidden * tokens.mask[..., None].to(hidden.dtype)  # WanPipeline zeroes the padding's states

    def predict(self, model: torch.nn.Module, noisy: Tensor, timesteps: Tensor, conditioning: Tensor) -> Tensor:
        return model(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=conditioning, return_dict=False)[0]

    def pipeline(self, parts: TeacherParts, denoiser: torch.nn.Module) -> WanPipeline:
        """The inference pipeline around ``denoiser`` and the other trained parts."""
        pipe = WanPipeline(
            tokenizer=parts.tokenizer,
            text_encoder=parts.text_encoder,
            vae=parts.vae,
            scheduler=parts.scheduler,
            transformer=denoiser,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def sample(
        self, parts: TeacherParts, denoiser: torch.nn.Module, prompts: list[str], generators: list[torch.Generator]
    ) -> Tensor:
        s = self.settings
        return self.pipeline(parts, denoiser)(
            prompts,
            negative_prompt=[s["negative_prompt"]] * len(prompts),
            num_frames=s["num_frames"],
            height=s["height"],
            width=s["width"],
            num_inference_steps=s["num_inference_steps"],
            guidance_scale=s["guidance_scale"],
            max_sequence_length=s["max_sequence_length"],
            generator=generators,
            output_type="pt",
        ).frames

    def export(self, path: Path, parts: TeacherParts, denoiser: torch.nn.Module) -> None:
        """A plain WanPipeline folder, loaded by the ``wan`` family with the teacher's generation settings and saved
        by it: its own folder (``vipkit_dit.json`` last), in float32."""
        for module in (denoiser, parts.vae, parts.text_encoder):
            module.float().cpu()
        with tempfile.TemporaryDirectory() as plain:
            self.pipeline(parts, denoiser).save_pretrained(plain)
            Wan.from_options({"base": plain, **self.settings}).save(path)
