"""CLIP reward: how well each frame matches the prompt, and how steady the frames are over time.

Both dimensions are on the cosine scale. ``clip_score`` is the frame-averaged CLIPScore
``mean_f max(cos(image_f, text), 0)`` in [0, 1]; torchmetrics' ``CLIPScore`` reports 100 times this.
``frame_consistency`` is the mean cosine similarity of the CLIP image embeddings of consecutive frames
(1.0 for a static video, and for a single frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

import vipkit
from vipkit import VipkitError
from vipkit.model_source import DEVICE_PATTERN, model_source, resolve_device
from vipkit.weights import check_weight_folder
from vipkit_clip.tiny import VIT_L_14_SIZES, random_clip, tiny_clip

if TYPE_CHECKING:
    import torch
    from torch import Tensor

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SAVED_CLIP = "a CLIP model saved with `save_pretrained` (config.json, model.safetensors, tokenizer files)"


@dataclass
class LoadedClip:
    """A CLIP model with its tokenizer and the pixel statistics its vision tower was trained on."""

    model: Any  # transformers.CLIPModel
    tokenizer: Any
    mean: torch.Tensor  # (1, 3, 1, 1)
    std: torch.Tensor  # (1, 3, 1, 1)
    device: torch.device
    dtype: torch.dtype

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @property
    def max_text_length(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)


def _pixel_statistics(model: str, local: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std from the saved image-processor config, else OpenAI CLIP's."""
    from transformers.image_processing_base import ImageProcessingMixin

    try:
        saved, _ = ImageProcessingMixin.get_image_processor_dict(model, local_files_only=local)
    except OSError:
        return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    return tuple(saved.get("image_mean", OPENAI_CLIP_MEAN)), tuple(saved.get("image_std", OPENAI_CLIP_STD))


def load_clip(model: str, device: str, dtype: str, preset: str | None = None) -> LoadedClip:
    """Load CLIP from a local directory (never touching the network) or a hub id, or build a preset."""
    from transformers import AutoTokenizer, CLIPModel

    if preset is not None:  # tiny: built on the CPU, the same weights everywhere; random: built where it runs
        clip, tokenizer = (
            tiny_clip() if preset == "tiny" else random_clip(VIT_L_14_SIZES, device=resolve_device(device))
        )
        return _placed(clip, tokenizer, (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD), device, dtype)
    source = model_source(model, "reward option `model`", SAVED_CLIP)
    try:
        if source.local:
            check_weight_folder(Path(source.source))
        clip = CLIPModel.from_pretrained(source.source, local_files_only=source.local, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(source.source, local_files_only=source.local)
    except (OSError, VipkitError) as exc:
        raise source.load_error(
            "a CLIP model and tokenizer", exc, f"Point `model` at a folder holding {SAVED_CLIP}."
        ) from None
    return _placed(clip, tokenizer, _pixel_statistics(source.source, source.local), device, dtype)


def _placed(
    clip: Any, tokenizer: Any, statistics: tuple[tuple[float, ...], tuple[float, ...]], device: str, dtype: str
) -> LoadedClip:
    import torch

    target = resolve_device(device)
    torch_dtype = getattr(torch, dtype)
    clip = clip.to(device=target, dtype=torch_dtype).eval().requires_grad_(False)
    mean, std = statistics
    return LoadedClip(
        model=clip,
        tokenizer=tokenizer,
        mean=torch.tensor(mean, device=target, dtype=torch.float32).view(1, 3, 1, 1),
        std=torch.tensor(std, device=target, dtype=torch.float32).view(1, 3, 1, 1),
        device=target,
        dtype=torch_dtype,
    )


def preprocess_frames(frames: Tensor, image_size: int, mean: Tensor, std: Tensor) -> Tensor:
    """CLIP's preprocessing in torch: shortest edge to ``image_size`` (bicubic, antialiased), centre crop, normalise.

    ``frames`` is ``(N, 3, H, W)`` in [0, 1]; square frames are simply resized to ``image_size``.
    """
    import torch.nn.functional as F

    height, width = frames.shape[-2:]
    short, long = min(height, width), max(height, width)
    resized_long = int(image_size * long / short)
    size = (image_size, resized_long) if height <= width else (resized_long, image_size)
    if size != (height, width):
        frames = F.interpolate(frames, size=size, mode="bicubic", antialias=True, align_corners=False)
    top, left = (size[0] - image_size) // 2, (size[1] - image_size) // 2
    frames = frames[..., top : top + image_size, left : left + image_size]
    return (frames - mean) / std


def sample_frame_indices(num_frames: int, wanted: int | None) -> list[int]:
    """``wanted`` evenly spaced frame indices (first and last included), or all frames."""
    if wanted is None or wanted >= num_frames:
        return list(range(num_frames))
    if wanted == 1:
        return [num_frames // 2]
    return [round(i * (num_frames - 1) / (wanted - 1)) for i in range(wanted)]


class ClipReward(vipkit.RewardModel):
    """Prompt alignment and temporal steadiness measured with a CLIP model."""

    name = "clip"
    dimensions = ("clip_score", "frame_consistency")
    value_ranges = {"clip_score": (0.0, 1.0), "frame_consistency": (-1.0, 1.0)}  # clamped cosine, cosine

    class Config(vipkit.Config):
        model: str = Field(
            "openai/clip-vit-base-patch32",
            min_length=1,
            description="Hub id or local directory of a transformers CLIP model (with its tokenizer); "
            "a directory is loaded without network access.",
        )
        preset: Literal["tiny", "random"] | None = Field(
            None,
            description="Build a random CLIP of this size in memory instead of loading `model` (no download): "
            "'tiny' (32 px, seeded) makes runs and tests possible offline; 'random' is openai/clip-vit-large-patch14's "
            "architecture (ViT-L/14 at 224 px, 12-layer 768-wide text tower: 428 M parameters, built on `device`) "
            "for measuring time and memory. Their scores mean nothing about quality.",
        )
        frames: int | None = Field(
            None, gt=0, description="Score this many evenly spaced frames per video; unset = every frame."
        )
        batch_size: int = Field(32, gt=0, description="Frames (and prompts) per CLIP forward pass.")
        device: str = Field(
            "auto",
            pattern=DEVICE_PATTERN,
            description="Where CLIP runs: 'auto' = CUDA when available, else CPU; or a torch device "
            "('cpu', 'cuda:1'). Videos are moved there; scores come back on the CPU.",
        )
        dtype: Literal["float32", "float16", "bfloat16"] = Field(
            "float32", description="CLIP weights' dtype; scores are float32 either way."
        )

    config: Config

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        if self.config.preset is None:  # a missing model is reported with the run's other parts, not at first score
            model_source(self.config.model, "reward option `model`", SAVED_CLIP).require_available("a CLIP model")

    @cached_property
    def clip(self) -> LoadedClip:
        """Loaded on first use, so validating a recipe never loads weights."""
        return load_clip(self.config.model, self.config.device, self.config.dtype, self.config.preset)

    def score(self, videos: Tensor, prompts: Sequence[str]) -> vipkit.Scores:
        import torch
        import torch.nn.functional as F

        if videos.ndim != 5 or videos.shape[0] != len(prompts):
            raise ValueError(
                f"expected videos (B, F, C, H, W) with B = {len(prompts)} prompts, got {tuple(videos.shape)}"
            )
        indices = sample_frame_indices(videos.shape[1], self.config.frames)
        frames = videos[:, indices]
        batch, num_frames = frames.shape[:2]
        with torch.inference_mode():
            images = self._image_embeddings(frames.flatten(0, 1)).view(batch, num_frames, -1)
            texts = self._text_embeddings(list(prompts))
            alignment = torch.einsum("bfd,bd->bf", images, texts).clamp(min=0).mean(dim=1)
            if num_frames > 1:
                consistency = F.cosine_similarity(images[:, :-1], images[:, 1:], dim=-1).mean(dim=1)
            else:
                consistency = torch.ones(batch, device=images.device)
        return {"clip_score": alignment.float().cpu(), "frame_consistency": consistency.float().cpu()}

    def _image_embeddings(self, frames: Tensor) -> Tensor:
        """Unit-norm projected image embeddings, ``(N, D)`` float32."""
        import torch
        import torch.nn.functional as F

        clip = self.clip
        chunks = []
        for start in range(0, frames.shape[0], self.config.batch_size):
            chunk = frames[start : start + self.config.batch_size].to(clip.device, torch.float32)
            pixels = preprocess_frames(chunk, clip.image_size, clip.mean, clip.std).to(clip.dtype)
            chunks.append(clip.model.get_image_features(pixel_values=pixels).pooler_output.float())
        return F.normalize(torch.cat(chunks), dim=-1)

    def _text_embeddings(self, prompts: list[str]) -> Tensor:
        """Unit-norm projected text embeddings, ``(B, D)`` float32."""
        import torch
        import torch.nn.functional as F

        clip = self.clip
        chunks = []
        for start in range(0, len(prompts), self.config.batch_size):
            tokens = clip.tokenizer(
                prompts[start : start + self.config.batch_size],
                padding=True,
                truncation=True,
                max_length=clip.max_text_length,
                return_tensors="pt",
            ).to(clip.device)
            chunks.append(clip.model.get_text_features(**tokens).pooler_output.float())
        return F.normalize(torch.cat(chunks), dim=-1)
