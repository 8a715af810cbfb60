"""VideoCrafter2's transformers: spatial (per frame, text cross-attention) and temporal (per pixel, over frames).

Parameter names follow the official checkpoint (``transformer_blocks.N.attn1.to_q`` ...), so its
state dict loads unchanged. Attention runs through ``scaled_dot_product_attention`` except where
relative position embeddings need the explicit softmax weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TEXT_TOKENS = 77
"""Context tokens that are text; with image cross-attention the rest of the context are image tokens."""


class RelativePosition(nn.Module):
    """Learned embeddings of the clipped distance between two frames (one table for keys, one for values)."""

    def __init__(self, width: int, max_distance: int) -> None:
        super().__init__()
        self.max_distance = max_distance
        self.embeddings_table = nn.Parameter(torch.empty(2 * max_distance + 1, width))
        nn.init.xavier_uniform_(self.embeddings_table)

    def forward(self, length_q: int, length_k: int) -> Tensor:
        device = self.embeddings_table.device
        distance = torch.arange(length_k, device=device)[None, :] - torch.arange(length_q, device=device)[:, None]
        return self.embeddings_table[distance.clamp(-self.max_distance, self.max_distance) + self.max_distance]


class Attention(nn.Module):
    """Multi-head attention with bias-free q/k/v and a biased output projection (self- or cross-attention)."""

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None,
        heads: int,
        head_dim: int,
        *,
        relative_length: int | None = None,
        image_cross_attention: bool = False,
    ) -> None:
        super().__init__()
        inner = heads * head_dim
        context_dim = context_dim or query_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))
        self.image_cross_attention = image_cross_attention
        if image_cross_attention:
            self.to_k_ip = nn.Linear(context_dim, inner, bias=False)
            self.to_v_ip = nn.Linear(context_dim, inner, bias=False)
        self.relative = relative_length is not None
        if relative_length is not None:
            self.relative_position_k = RelativePosition(head_dim, relative_length)
            self.relative_position_v = RelativePosition(head_dim, relative_length)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)  # (B, heads, N, d)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if not self.relative:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        scale = self.head_dim**-0.5
        rel_k = self.relative_position_k(q.shape[2], k.shape[2])  # (Nq, Nk, d)
        scores = (q @ k.transpose(-1, -2) + torch.einsum("bhqd,qkd->bhqk", q, rel_k)) * scale
        if mask is not None:
            scores = scores.masked_fill(~mask, -torch.finfo(scores.dtype).max)
        weights = scores.softmax(dim=-1)
        rel_v = self.relative_position_v(q.shape[2], v.shape[2])
        return weights @ v + torch.einsum("bhqk,qkd->bhqd", weights, rel_v)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``mask`` (bool, True = may attend) broadcasts over batch and heads."""
        context = x if context is None else context
        image = None
        if self.image_cross_attention:
            context, image = context[:, :TEXT_TOKENS], context[:, TEXT_TOKENS:]
        q = self._heads(self.to_q(x))
        out = self._attend(q, self._heads(self.to_k(context)), self._heads(self.to_v(context)), mask)
        if image is not None:
            out = out + self._attend(q, self._heads(self.to_k_ip(image)), self._heads(self.to_v_ip(image)), None)
        return self.to_out(out.transpose(1, 2).flatten(2))


class GEGLU(nn.Module):
    """Linear to twice the width; the first half times exact-GELU of the second half."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm self-attention, second attention (cross, or self when ``context_dim`` is None), GEGLU MLP."""

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        context_dim: int | None,
        *,
        relative_length: int | None = None,
        image_cross_attention: bool = False,
    ) -> None:
        super().__init__()
        self.attn1 = Attention(dim, None, heads, head_dim, relative_length=relative_length)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(
            dim,
            context_dim,
            heads,
            head_dim,
            relative_length=relative_length,
            image_cross_attention=image_cross_attention,
        )
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        x = self.attn1(self.norm1(x), mask=mask) + x
        x = self.attn2(self.norm2(x), context=context, mask=mask) + x
        return self.ff(self.norm3(x)) + x


def _projection(linear: bool, dim_in: int, dim_out: int, conv: type[nn.Module]) -> nn.Module:
    return nn.Linear(dim_in, dim_out) if linear else conv(dim_in, dim_out, kernel_size=1)


class SpatialTransformer(nn.Module):
    """Attention among the H*W positions of each frame, with cross-attention to the text; residual."""

    def __init__(
        self,
        channels: int,
        heads: int,
        head_dim: int,
        *,
        depth: int,
        context_dim: int | None,
        use_linear: bool,
        image_cross_attention: bool = False,
    ) -> None:
        super().__init__()
        inner = heads * head_dim
        self.use_linear = use_linear
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = _projection(use_linear, channels, inner, nn.Conv2d)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner, heads, head_dim, context_dim, image_cross_attention=image_cross_attention)
            for _ in range(depth)
        )
        self.proj_out = _projection(use_linear, inner, channels, nn.Conv2d)

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        """``x``: (B*T, C, H, W); ``context``: (B*T, L, D)."""
        _, _, height, width = x.shape
        h = self.norm(x)
        if not self.use_linear:
            h = self.proj_in(h)
        h = h.flatten(2).transpose(1, 2)  # (B*T, H*W, C)
        if self.use_linear:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context=context)
        if self.use_linear:
            h = self.proj_out(h)
        h = h.transpose(1, 2).unflatten(2, (height, width))
        if not self.use_linear:
            h = self.proj_out(h)
        return h + x


class TemporalTransformer(nn.Module):
    """Attention over the frames at each spatial position; residual, no positional encoding unless relative.

    ``self_only`` (VideoCrafter2) makes both attentions self-attention; otherwise the second one
    attends to the text context the way the official code lays it out: the H*W sequences of a video
    are split into T consecutive runs and run ``i`` attends to frame ``i``'s context.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        head_dim: int,
        *,
        depth: int,
        context_dim: int | None,
        use_linear: bool,
        self_only: bool,
        causal_length: int | None,
        relative_length: int | None,
    ) -> None:
        super().__init__()
        inner = heads * head_dim
        self.use_linear, self.self_only, self.causal_length = use_linear, self_only, causal_length
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = _projection(use_linear, channels, inner, nn.Conv1d)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(
                inner, heads, head_dim, None if self_only else context_dim, relative_length=relative_length
            )
            for _ in range(depth)
        )
        self.proj_out = _projection(use_linear, inner, channels, nn.Conv1d)

    def _causal_mask(self, frames: int, device: torch.device) -> Tensor | None:
        if self.causal_length is None or not self.self_only:  # the official code masks self-only layers only
            return None
        if frames != self.causal_length:
            raise ValueError(
                f"causal temporal attention was built for temporal_length = {self.causal_length} frames, got {frames}"
            )
        return torch.ones(frames, frames, dtype=torch.bool, device=device).tril()

    def _frame_context(self, context: Tensor, batch: int, frames: int, positions: int) -> Tensor:
        if positions % frames:
            raise ValueError(
                f"temporal cross-attention needs H*W ({positions}) divisible by the number of frames ({frames})"
            )
        per_frame = context.unflatten(0, (batch, frames)).repeat_interleave(positions // frames, dim=1)
        return per_frame.flatten(0, 1)  # (B*H*W, L, D)

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        """``x``: (B, C, T, H, W); ``context``: (B*T, L, D), used only without ``self_only``."""
        batch, channels, frames, height, width = x.shape
        h = self.norm(x).permute(0, 3, 4, 1, 2).reshape(batch * height * width, channels, frames)
        if not self.use_linear:
            h = self.proj_in(h)
        h = h.transpose(1, 2)  # (B*H*W, T, C)
        if self.use_linear:
            h = self.proj_in(h)
        if self.self_only:
            mask = self._causal_mask(frames, h.device)
            for block in self.transformer_blocks:
                h = block(h, mask=mask)
        else:
            frame_context = self._frame_context(context, batch, frames, height * width)
            for block in self.transformer_blocks:
                h = block(h, context=frame_context)
        if self.use_linear:
            h = self.proj_out(h)
        else:
            h = self.proj_out(h.transpose(1, 2)).transpose(1, 2)
        return h.reshape(batch, height, width, frames, channels).permute(0, 4, 3, 1, 2) + x
