"""The VideoCrafter2 3-D UNet, written from the official design; its state dict is the official one.

``build_unet(params)`` takes the ``model.params.unet_config.params`` table of an official config
(e.g. ``inference_t2v_512_v2.0.yaml``); ``load_state_dict`` takes the official checkpoint's UNet keys
with ``model.diffusion_model.`` stripped; ``forward(x, timesteps, context=..., fps=...)`` is called
like the official module. Pruned units are replaced by ``vipkit.prunable.PassThrough`` (parameter-free, so the
numbering of every other key stays as in the checkpoint).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from vipkit.prunable import PassThrough
from vipkit_videocrafter2.attention import SpatialTransformer, TemporalTransformer
from vipkit_videocrafter2.layers import (
    Downsample,
    GroupNorm32,
    ResBlock,
    Upsample,
    embedding_mlp,
    timestep_embedding,
)
from vipkit_videocrafter2.unet_config import UNetSpec, parse_unet_config

INIT_ATTN_HEADS = 8
"""The extra temporal attention after the input convolution has 8 heads of ``num_head_channels`` each."""


@dataclass(frozen=True)
class BlockShape:
    """Channels a top-level input/output block takes and gives, for deciding which blocks can be dropped."""

    in_channels: int  # for an output block: the running features only, without the concatenated skip
    out_channels: int
    resamples: bool  # changes the resolution (down/upsampling)

    @property
    def keeps_shape(self) -> bool:
        return self.in_channels == self.out_channels and not self.resamples


class StepSequential(nn.Sequential):
    """Runs its layers on frames (B*T, C, H, W), giving each the inputs it needs."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor | None, batch: int) -> Tensor:  # type: ignore[override]
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, batch)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, TemporalTransformer):
                video = x.unflatten(0, (batch, -1)).transpose(1, 2)
                x = layer(video, context).transpose(1, 2).flatten(0, 1)
            else:
                x = layer(x)
        return x


class VideoCrafterUNet(nn.Module):
    """Input blocks (with ``init_attn`` after the first), middle block, output blocks fed by the skips."""

    def __init__(self, spec: UNetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.gradient_checkpointing = False  # recompute each block's activations in backward (training memory)
        width, embedding = spec.model_channels, spec.embedding_width
        self.time_embed = embedding_mlp(width, embedding)
        if spec.fps_cond:
            self.fps_embedding = embedding_mlp(width, embedding)
        self.input_blocks = nn.ModuleList([StepSequential(nn.Conv2d(spec.in_channels, width, 3, padding=1))])
        if spec.addition_attention:
            self.init_attn = StepSequential(
                self._temporal(width, INIT_ATTN_HEADS, spec.num_head_channels, spec.transformer_depth, linear=False)
            )
        self.input_shapes = [BlockShape(spec.in_channels, width, resamples=False)]
        self.output_shapes: list[BlockShape] = []
        skip_widths, channels, factor = [width], width, 1
        for level, mult in enumerate(spec.channel_mult):
            for _ in range(spec.num_res_blocks):
                layers = [self._resblock(channels, mult * width)]
                self.input_shapes.append(BlockShape(channels, mult * width, resamples=False))
                channels = mult * width
                layers += self._attention(channels, factor)
                self.input_blocks.append(StepSequential(*layers))
                skip_widths.append(channels)
            if level != len(spec.channel_mult) - 1:
                down = (
                    ResBlock(
                        channels,
                        embedding,
                        channels,
                        dropout=spec.dropout,
                        scale_shift=spec.use_scale_shift_norm,
                        resample="down",
                    )
                    if spec.resblock_updown
                    else Downsample(channels, spec.conv_resample)
                )
                self.input_blocks.append(StepSequential(down))
                self.input_shapes.append(BlockShape(channels, channels, resamples=True))
                skip_widths.append(channels)
                factor *= 2
        self.middle_block = StepSequential(
            self._resblock(channels, channels),
            *self._attention(channels, factor, always=True),
            self._resblock(channels, channels),
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(spec.channel_mult))):
            for index in range(spec.num_res_blocks + 1):
                layers = [self._resblock(channels + skip_widths.pop(), mult * width)]
                upsamples = bool(level) and index == spec.num_res_blocks
                self.output_shapes.append(BlockShape(channels, mult * width, resamples=upsamples))
                channels = mult * width
                layers += self._attention(channels, factor)
                if upsamples:
                    up = (
                        ResBlock(
                            channels,
                            embedding,
                            channels,
                            dropout=spec.dropout,
                            scale_shift=spec.use_scale_shift_norm,
                            resample="up",
                        )
                        if spec.resblock_updown
                        else Upsample(channels, spec.conv_resample)
                    )
                    layers.append(up)
                    factor //= 2
                self.output_blocks.append(StepSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(channels), nn.SiLU(), nn.Conv2d(width, spec.out_channels, 3, padding=1))

    # -- construction helpers -------------------------------------------------------------------
    def _resblock(self, channels: int, out_channels: int) -> ResBlock:
        spec = self.spec
        return ResBlock(
            channels,
            spec.embedding_width,
            out_channels,
            dropout=spec.dropout,
            scale_shift=spec.use_scale_shift_norm,
            temporal_conv=spec.temporal_conv,
            spatial_aware=spec.tempspatial_aware,
        )

    def _temporal(self, channels: int, heads: int, head_dim: int, depth: int, *, linear: bool) -> TemporalTransformer:
        spec = self.spec
        length = spec.temporal_length
        return TemporalTransformer(
            channels,
            heads,
            head_dim,
            depth=depth,
            context_dim=spec.context_dim,
            use_linear=linear,
            self_only=spec.temporal_selfatt_only,
            causal_length=length if spec.use_causal_attention else None,
            relative_length=length if spec.use_relative_position else None,
        )

    def _attention(self, channels: int, factor: int, *, always: bool = False) -> list[nn.Module]:
        """Spatial (+ temporal) transformer where the downsampling factor is listed (always in the middle)."""
        spec = self.spec
        if not always and factor not in spec.attention_resolutions:
            return []
        heads, head_dim = spec.heads_at(channels)
        layers: list[nn.Module] = [
            SpatialTransformer(
                channels,
                heads,
                head_dim,
                depth=spec.transformer_depth,
                context_dim=spec.context_dim,
                use_linear=spec.use_linear,
                image_cross_attention=spec.use_image_attention,
            )
        ]
        if spec.temporal_attention:
            layers.append(
                self._temporal(channels, heads, head_dim, spec.temporal_transformer_depth, linear=spec.use_linear)
            )
        return layers

    # -- forward ------------------------------------------------------------------------------
    def embed(self, timesteps: Tensor, fps: Tensor | int) -> Tensor:
        """Timestep embedding (+ fps embedding), one row per video."""
        dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.spec.model_channels).to(dtype))
        if self.spec.fps_cond:
            if isinstance(fps, int):
                fps = torch.full_like(timesteps, fps)
            emb = emb + self.fps_embedding(timestep_embedding(fps, self.spec.model_channels).to(dtype))
        return emb

    @staticmethod
    def _checkpointed(block: nn.Module, *inputs: Any) -> Tensor:
        return torch.utils.checkpoint.checkpoint(block, *inputs, use_reentrant=False)

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor,
        context: Tensor | None = None,
        features_adapter: Sequence[Tensor] | None = None,
        fps: Tensor | int = 16,
        **unused: Any,
    ) -> Tensor:
        """Predicted noise (B, C, T, H, W) for latents ``x`` (B, C, T, H, W) at ``timesteps`` (B,).

        ``context`` (B, L, D) text tokens; ``fps`` (B,) or an int for every video (default 16, as
        officially); ``features_adapter``: T2I-adapter features added after every third input block.
        Without ``use_fp16`` the input dtype is kept (the official code would cast to float32).
        """
        batch, _, frames, _, _ = x.shape
        emb = self.embed(timesteps, fps).repeat_interleave(frames, dim=0)
        if context is not None:
            context = context.repeat_interleave(frames, dim=0)
        h = x.transpose(1, 2).flatten(0, 1)  # (B*T, C, H, W), batch-major
        h = h.half() if self.spec.use_fp16 else h
        skips: list[Tensor] = []
        adapter = iter(features_adapter or ())
        run = self._checkpointed if self.gradient_checkpointing and torch.is_grad_enabled() else _called
        for index, block in enumerate(self.input_blocks):
            if isinstance(block, PassThrough):  # dropped with its output block: no skip
                continue
            h = run(block, h, emb, context, batch)
            if index == 0 and hasattr(self, "init_attn"):
                h = run(self.init_attn, h, emb, context, batch)
            if features_adapter is not None and (index + 1) % 3 == 0:
                h = h + next(adapter)
            skips.append(h)
        h = run(self.middle_block, h, emb, context, batch)
        for block in self.output_blocks:
            if isinstance(block, PassThrough):
                continue
            h = run(block, torch.cat([h, skips.pop()], dim=1), emb, context, batch)
        y = self.out(h.type(x.dtype))
        return y.unflatten(0, (batch, frames)).transpose(1, 2)


def _called(block: nn.Module, *inputs: Any) -> Tensor:
    return block(*inputs)


def build_unet(official_unet_config: Mapping[str, Any]) -> VideoCrafterUNet:
    """The UNet for an official config's UNet ``params`` table, randomly initialised, in eval mode.

    Eval mode matters: the temporal convolutions hold Dropout(0.1). Build under
    ``torch.device("meta")`` to inspect a full-size model without allocating it.
    """
    return VideoCrafterUNet(parse_unet_config(official_unet_config)).eval()
