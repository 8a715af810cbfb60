"""The UNet ``params`` table of an official VideoCrafter config, checked and completed with the official defaults.

Every switch of the official ``UNetModel.__init__`` is understood. Unknown keys are an error that
names them (a typo would otherwise silently build another network); keys that only matter for
training (gradient checkpointing) are accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from vipkit import VipkitError

TRAINING_ONLY_KEYS = frozenset({"use_checkpoint"})
"""Accepted and ignored: they change memory use during training, never the computed numbers."""

REQUIRED_KEYS = ("in_channels", "model_channels", "out_channels", "num_res_blocks", "attention_resolutions")

VC2_UNET_CONFIG: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "attention_resolutions": [4, 2, 1],
    "num_res_blocks": 2,
    "channel_mult": [1, 2, 4, 4],
    "num_head_channels": 64,
    "transformer_depth": 1,
    "context_dim": 1024,
    "use_linear": True,
    "use_checkpoint": True,
    "temporal_conv": True,
    "temporal_attention": True,
    "temporal_selfatt_only": True,
    "use_relative_position": False,
    "use_causal_attention": False,
    "temporal_length": 16,
    "addition_attention": True,
    "fps_cond": True,
}
"""``model.params.unet_config.params`` of the official ``configs/inference_t2v_512_v2.0.yaml`` (1.41 B parameters)."""

TINY_UNET_CONFIG: dict[str, Any] = {
    **VC2_UNET_CONFIG,
    "model_channels": 32,
    "channel_mult": [1, 1],
    "num_res_blocks": 1,
    "num_head_channels": 8,
    "context_dim": 32,
}
"""VideoCrafter2's switches at 32 channels and two levels (the reference golden A's structure): 803,268 parameters."""


@dataclass(frozen=True)
class UNetSpec:
    """The official constructor's arguments with its defaults (``dims`` must be 2, as in every release)."""

    in_channels: int
    model_channels: int
    out_channels: int
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    dropout: float = 0.0
    channel_mult: tuple[int, ...] = (1, 2, 4, 8)
    conv_resample: bool = True
    dims: int = 2
    context_dim: int | None = None
    use_scale_shift_norm: bool = False
    resblock_updown: bool = False
    num_heads: int = -1
    num_head_channels: int = -1
    transformer_depth: int = 1
    use_linear: bool = False
    temporal_conv: bool = False
    tempspatial_aware: bool = False
    temporal_attention: bool = True
    temporal_selfatt_only: bool = True
    use_relative_position: bool = True
    use_causal_attention: bool = False
    temporal_length: int | None = None
    use_fp16: bool = False
    addition_attention: bool = False
    use_image_attention: bool = False
    temporal_transformer_depth: int = 1
    fps_cond: bool = False

    @property
    def embedding_width(self) -> int:
        return 4 * self.model_channels

    def heads_at(self, channels: int) -> tuple[int, int]:
        """(heads, head width) of the transformers at ``channels``: fixed head width wins over fixed head count."""
        if self.num_head_channels != -1:
            return channels // self.num_head_channels, self.num_head_channels
        return self.num_heads, channels // self.num_heads

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, in the official key names (round-trips through ``parse_unet_config``)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


def parse_unet_config(config: Mapping[str, Any]) -> UNetSpec:
    """Check an official UNet ``params`` table and fill in the official defaults."""
    known = {f.name for f in fields(UNetSpec)}
    unknown = sorted(set(config) - known - TRAINING_ONLY_KEYS)
    if unknown:
        raise VipkitError(
            f"VideoCrafter UNet config has unknown keys: {', '.join(unknown)}. "
            f"Known keys: {', '.join(sorted(known | TRAINING_ONLY_KEYS))}. "
            "Pass the `params` table of `model.params.unet_config` from the official YAML."
        )
    values = {key: value for key, value in config.items() if key in known}
    required = [key for key in REQUIRED_KEYS if key not in values]
    if required:
        raise VipkitError(f"VideoCrafter UNet config is missing required keys: {', '.join(required)}")
    for key in ("attention_resolutions", "channel_mult"):
        if key in values:
            values[key] = tuple(int(v) for v in values[key])
    spec = UNetSpec(**values)
    _check(spec)
    return spec


def _check(spec: UNetSpec) -> None:
    problems = []
    if spec.dims != 2:
        problems.append(f"dims = {spec.dims}: the video UNet runs its spatial layers on frames, only dims = 2 works")
    if spec.num_heads == -1 and spec.num_head_channels == -1:
        problems.append("either num_heads or num_head_channels has to be set")
    if spec.addition_attention and spec.num_head_channels == -1:
        problems.append("addition_attention needs num_head_channels (its init_attn has 8 heads of that width)")
    temporal = spec.temporal_attention or spec.addition_attention
    if (spec.use_relative_position or spec.use_causal_attention) and temporal and not spec.temporal_length:
        problems.append("use_relative_position and use_causal_attention need temporal_length")
    if problems:
        raise VipkitError("invalid VideoCrafter UNet config: " + "; ".join(problems) + ".")
