"""The ``videoscore`` reward: TIGER-Lab's VideoScore (v1 / v1.1), five quality dimensions from one forward pass.

VideoScore regresses human ratings on a 1 (bad) to 4 (perfect / real) scale. vipkit rewards are compared
across dimensions and thresholded by curators, so ``score`` reports ``(raw - 1) / 3`` by default (1 → 0,
4 → 1; not clamped, the head can step slightly outside 1..4); ``scale = "raw"`` keeps the model's numbers,
and ``score_raw`` always returns them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

import vipkit
from vipkit import track
from vipkit.model_source import DEVICE_PATTERN, model_source

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from vipkit_videoscore.inputs import ImageSettings

DIMENSIONS = (
    "visual_quality",
    "temporal_consistency",
    "dynamic_degree",
    "text_to_video_alignment",
    "factual_consistency",
)
"""The regression head's five outputs, in the head's order (the official README's order)."""

EXPECTED_FILES = "a VideoScore checkpoint (config.json, model*.safetensors, tokenizer files, preprocessor_config.json)"
HOW_TO_DOWNLOAD = (
    "Download a VideoScore checkpoint where the hub is reachable, e.g. `hf download TIGER-Lab/VideoScore-v1.1 "
    "--local-dir models/VideoScore-v1.1` (about 17 GB; `TIGER-Lab/VideoScore` is v1), and set `model` to that folder."
)


@dataclass
class LoadedVideoScore:
    """The network with what turns videos and prompts into its inputs."""

    model: Any  # vipkit_videoscore.model.VideoScoreModel
    tokenizer: Any
    image_settings: ImageSettings
    device: torch.device
    dtype: torch.dtype

    @property
    def image_seq_len(self) -> int:
        """Tokens per frame: the perceiver's latents (the processor's ``image_seq_len`` must equal it)."""
        return int(self.model.config.perceiver_config.resampler_n_latents)


def _image_settings(source: str, local: bool) -> ImageSettings:
    """The saved image-processor settings, else Idefics2's defaults (which VideoScore ships)."""
    from transformers.image_processing_base import ImageProcessingMixin

    from vipkit_videoscore.inputs import ImageSettings

    try:
        saved, _ = ImageProcessingMixin.get_image_processor_dict(source, local_files_only=local)
    except OSError:
        return ImageSettings()
    size = saved.get("size", {})
    defaults = ImageSettings()
    return ImageSettings(
        shortest_edge=int(size.get("shortest_edge", defaults.shortest_edge)),
        longest_edge=int(size.get("longest_edge", defaults.longest_edge)),
        mean=tuple(saved.get("image_mean", defaults.mean)),
        std=tuple(saved.get("image_std", defaults.std)),
    )


def _check_folder(source: Any) -> None:
    from pathlib import Path

    from vipkit.weights import check_weight_folder

    try:
        check_weight_folder(Path(source.source))
    except vipkit.VipkitError as exc:
        raise source.load_error(
            "a VideoScore model", exc, f"Point `model` at a folder holding {EXPECTED_FILES}."
        ) from None


def load_videoscore(model: str, device: str, dtype: str, preset: str | None = None) -> LoadedVideoScore:
    """Load a VideoScore checkpoint from a directory (never touching the network) or a hub id, or build a preset."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from vipkit.model_source import resolve_device
    from vipkit_videoscore.inputs import ImageSettings
    from vipkit_videoscore.model import VideoScoreModel
    from vipkit_videoscore.random_preset import random_videoscore
    from vipkit_videoscore.tiny import TINY_IMAGE_SETTINGS, tiny_videoscore

    target = resolve_device(device)
    torch_dtype = (
        (torch.bfloat16 if target.type == "cuda" else torch.float32) if dtype == "auto" else getattr(torch, dtype)
    )
    if preset == "tiny":
        network, tokenizer = tiny_videoscore()
        settings = TINY_IMAGE_SETTINGS
    elif preset == "random":  # 8 B parameters: built where they run, in the dtype they run in
        network, tokenizer = random_videoscore(device=target, dtype=torch_dtype)
        settings = ImageSettings()
    else:
        source = model_source(model, "reward option `model`", EXPECTED_FILES)
        if source.local:  # pickle-only refused (pickles beside: never opened); a truncated file named
            _check_folder(source)
        try:
            config = AutoConfig.from_pretrained(source.source, local_files_only=source.local)
            if config.model_type != "idefics2":
                raise source.load_error(
                    "a VideoScore model",
                    None,
                    f"It holds a {config.model_type!r} model, not Idefics2. {HOW_TO_DOWNLOAD}",
                )
            network, info = VideoScoreModel.from_pretrained(
                source.source,
                config=config,
                local_files_only=source.local,
                dtype=torch_dtype,
                output_loading_info=True,
                use_safetensors=True,
            )
            tokenizer = AutoTokenizer.from_pretrained(source.source, local_files_only=source.local)
        except (OSError, RuntimeError) as exc:  # RuntimeError: transformers refuses mismatched shapes
            raise source.load_error(
                "a VideoScore model and tokenizer", exc, f"Point `model` at a folder holding {EXPECTED_FILES}."
            ) from None
        missing = [key for key in info["missing_keys"] if key != "score.bias"]  # the official head may omit it: zero
        if missing or info["unexpected_keys"]:
            raise source.load_error(
                "a VideoScore model",
                None,
                f"The checkpoint does not have VideoScore's layout (missing: {missing[:5]}, unexpected: "
                f"{list(info['unexpected_keys'])[:5]}). Use a TIGER-Lab/VideoScore or VideoScore-v1.1 checkpoint.",
            )
        settings = _image_settings(source.source, source.local)
    network = network.to(device=target, dtype=torch_dtype).eval().requires_grad_(False)
    return LoadedVideoScore(network, tokenizer, settings, target, torch_dtype)


class VideoScoreReward(vipkit.RewardModel):
    """Visual quality, temporal consistency, dynamic degree, text alignment and factual consistency (VideoScore)."""

    name = "videoscore"
    dimensions = DIMENSIONS

    class Config(vipkit.Config):
        model: str = Field(
            "TIGER-Lab/VideoScore-v1.1",
            min_length=1,
            description="Hub id or local directory of a VideoScore checkpoint (v1: 'TIGER-Lab/VideoScore', "
            "v1.1: 'TIGER-Lab/VideoScore-v1.1'); a directory is loaded without network access.",
        )
        preset: Literal["tiny", "random"] | None = Field(
            None,
            description="Build a random VideoScore of this size in memory instead of loading `model` (no download): "
            "'tiny' (toy widths, seeded) makes runs and tests possible offline; 'random' is the real architecture "
            "(Idefics2-8B + the regression head: 8.27 B parameters, 16.5 GB in bfloat16, built on `device`) with a "
            "word-level tokenizer, for measuring time and memory. Their scores mean nothing about quality.",
        )
        frames: int = Field(
            16,
            gt=0,
            le=48,
            description="At most this many evenly spaced frames per video (official: 16 for v1; v1.1 accepts up to 48).",
        )
        scale: Literal["unit", "raw"] = Field(
            "unit", description="'unit' reports (raw - 1) / 3, mapping VideoScore's 1..4 to 0..1; 'raw' reports 1..4."
        )
        batch_size: int = Field(4, gt=0, description="Videos per forward pass.")
        device: str = Field(
            "auto",
            pattern=DEVICE_PATTERN,
            description="Where VideoScore runs: 'auto' = CUDA when available, else CPU; or a torch device. "
            "Scores come back on the CPU.",
        )
        dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
            "auto", description="Weights' dtype: 'auto' = bfloat16 on CUDA, float32 elsewhere; scores are float32."
        )

    config: Config

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        if self.config.preset is None:  # a missing model is reported with the run's other parts, not at first score
            model_source(self.config.model, "reward option `model`", EXPECTED_FILES).require_available(
                "a VideoScore model"
            )

    @cached_property
    def videoscore(self) -> LoadedVideoScore:
        """Loaded on first use, so validating a recipe never loads weights."""
        return load_videoscore(self.config.model, self.config.device, self.config.dtype, self.config.preset)

    def score(self, videos: Tensor, prompts: Sequence[str]) -> vipkit.Scores:
        raw = self.score_raw(videos, prompts)
        values = raw if self.config.scale == "raw" else (raw - 1.0) / 3.0
        return {dim: values[:, index] for index, dim in enumerate(DIMENSIONS)}

    def score_raw(self, videos: Tensor, prompts: Sequence[str]) -> Tensor:
        """The model's own outputs ``(batch, 5)`` (about 1..4), columns in ``DIMENSIONS`` order, float32 on CPU."""
        import torch

        from vipkit_videoscore.inputs import sample_frame_indices

        if videos.ndim != 5 or videos.shape[0] != len(prompts):
            raise ValueError(
                f"expected videos (B, F, C, H, W) with B = {len(prompts)} prompts, got {tuple(videos.shape)}"
            )
        frames = videos[:, sample_frame_indices(videos.shape[1], self.config.frames)]
        step = self.config.batch_size
        chunks = []
        for start in track(range(0, len(prompts), step), "videoscore"):
            inputs = self._inputs(frames[start : start + step], list(prompts[start : start + step]))
            with torch.inference_mode():
                chunks.append(self.videoscore.model(**inputs).float().cpu())
        return torch.cat(chunks)

    def _inputs(self, videos: Tensor, prompts: list[str]) -> dict[str, Tensor]:
        """Right-padded token ids with their mask, and the frames as pixels ``(B, F, 3, H, W)``."""
        import torch

        from vipkit import VipkitError
        from vipkit_videoscore.inputs import (
            IMAGE_TOKEN,
            expand_image_tokens,
            pixel_values,
            query_text,
        )

        loaded = self.videoscore
        batch, num_frames = videos.shape[:2]
        texts = [expand_image_tokens(query_text(prompt, num_frames), loaded.image_seq_len) for prompt in prompts]
        rows = [loaded.tokenizer(text, add_special_tokens=True)["input_ids"] for text in texts]
        image_token_id = loaded.model.config.image_token_id
        if any(row.count(image_token_id) != num_frames * loaded.image_seq_len for row in rows):
            raise VipkitError(
                f"reward option `model` = {self.config.model!r}: its tokenizer does not turn {IMAGE_TOKEN!r} into the "
                f"model's image token id {image_token_id}; the tokenizer files do not belong to this VideoScore checkpoint."
            )
        pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((batch, max(map(len, rows))), pad, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention_mask[i, : len(row)] = 1
        pixels = pixel_values(videos.flatten(0, 1).to(loaded.device), loaded.image_settings)
        return {
            "input_ids": input_ids.to(loaded.device),
            "attention_mask": attention_mask.to(loaded.device),
            "pixel_values": pixels.view(batch, num_frames, *pixels.shape[1:]).to(loaded.dtype),
        }
