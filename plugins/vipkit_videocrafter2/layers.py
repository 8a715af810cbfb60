"""VideoCrafter2's convolutional pieces: ResBlock with temporal convolution, resampling, timestep embedding.

Every 2-D layer runs on frames flattened into the batch, ``(B*T, C, H, W)`` in batch-major,
frame-minor order; the temporal convolution folds them back to ``(B, C, T, H, W)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(timesteps: Tensor, width: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding (B, width) in float32, **cos first** (the official layout), zero-padded if odd."""
    half = width // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    angles = timesteps[:, None].float() * frequencies.to(timesteps.device)[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if width % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) computed in float32 whatever the input dtype (the ResBlocks' and output head's norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.weight.float(), self.bias.float()  # float32 also when the model is bf16 / fp16
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).type(x.dtype)


def embedding_mlp(width: int, embedding_width: int) -> nn.Sequential:
    """Linear, SiLU, Linear: turns a sinusoid (timestep or fps) into the conditioning vector."""
    return nn.Sequential(nn.Linear(width, embedding_width), nn.SiLU(), nn.Linear(embedding_width, embedding_width))


class Downsample(nn.Module):
    """Halve H and W: a stride-2 3x3 convolution, or 2x2 average pooling without ``use_conv``."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.channels = channels
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double H and W by nearest neighbour, then a 3x3 convolution with ``use_conv``."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.channels = channels
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class TemporalConv(nn.Module):
    """Four GroupNorm-SiLU-Conv3d stages mixing along time (kernel 3 in T), wrapped in one residual.

    ``spatial_aware`` (the ``tempspatial_aware`` switch) makes the first two kernels 3x3x3.
    """

    def __init__(self, channels: int, spatial_aware: bool) -> None:
        super().__init__()
        wide = ((3, 3, 3), (1, 1, 1)) if spatial_aware else ((3, 1, 1), (1, 0, 0))
        narrow = ((3, 1, 1), (1, 0, 0))
        for index, (kernel, padding) in enumerate((wide, wide, narrow, narrow), start=1):
            dropout = [] if index == 1 else [nn.Dropout(0.1)]
            stage = nn.Sequential(
                nn.GroupNorm(32, channels), nn.SiLU(), *dropout, nn.Conv3d(channels, channels, kernel, padding=padding)
            )
            self.add_module(f"conv{index}", stage)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv4(self.conv3(self.conv2(self.conv1(x)))) + x


class ResBlock(nn.Module):
    """Norm-SiLU-conv, add the embedding (or scale-shift the norm), norm-SiLU-conv, skip; then temporal conv.

    ``resample`` = "up"/"down" resizes inside the block (the ``resblock_updown`` switch). The
    attribute is spelled ``temopral_conv`` as in the official checkpoint.
    """

    def __init__(
        self,
        channels: int,
        embedding_width: int,
        out_channels: int,
        *,
        dropout: float = 0.0,
        scale_shift: bool = False,
        temporal_conv: bool = False,
        spatial_aware: bool = False,
        resample: str | None = None,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.scale_shift = channels, out_channels, scale_shift
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.resample: nn.Module | None = None
        if resample == "up":
            self.resample = Upsample(channels, use_conv=False)
        elif resample == "down":
            self.resample = Downsample(channels, use_conv=False)
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(embedding_width, 2 * out_channels if scale_shift else out_channels)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        if temporal_conv:
            self.temopral_conv = TemporalConv(out_channels, spatial_aware)

    def forward(self, x: Tensor, emb: Tensor, batch: int) -> Tensor:
        if self.resample is not None:
            h = self.resample(self.in_layers[:-1](x))
            x = self.resample(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.scale_shift:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        h = self.skip_connection(x) + h
        if hasattr(self, "temopral_conv"):
            video = h.unflatten(0, (batch, -1)).transpose(1, 2)  # (B, C, T, H, W)
            h = self.temopral_conv(video).transpose(1, 2).flatten(0, 1)
        return h
