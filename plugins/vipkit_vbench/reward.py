"""The ``vbench`` reward: VBench's quality dimensions computed natively, per video, plus their Quality Score.

Dimensions (VBench's names and formulas): ``temporal_flickering`` (model-free), ``subject_consistency``
(DINO ViT-B/16), ``background_consistency`` (CLIP ViT-B/32), ``aesthetic_quality`` (LAION's linear head on
CLIP ViT-L/14, divided by 10), ``dynamic_degree`` (RAFT; 1.0 when the video moves, else 0.0), and
``quality_score``, VBench's normalised weighted mean over the quality dimensions scored here.

Each model-based dimension names its model by an option (a local directory or hub id; a file for the
aesthetic head and RAFT). Which dimensions score is decided when the reward is built, without loading
weights: with ``dimensions`` unset, every dimension whose model is present scores and each missing one
is skipped with a logged warning saying how to provide it; a dimension listed in ``dimensions`` whose
model is missing is an error (``VipkitError``) that says the same. ``reward.dimensions`` is what scores.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

import vipkit
from vipkit import VipkitError
from vipkit.model_source import DEVICE_PATTERN, ModelSource, model_source

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from vipkit_vbench.models import FrameEncoder

logger = logging.getLogger("vipkit.vbench")

Dimension = Literal[
    "subject_consistency", "background_consistency", "temporal_flickering", "dynamic_degree", "aesthetic_quality"
]
SCORED: tuple[str, ...] = Dimension.__args__  # type: ignore[attr-defined]
DEFAULT_AESTHETIC_HEAD = "~/.cache/vbench/aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth"
DEFAULT_RAFT_WEIGHTS = "~/.cache/torch/hub/checkpoints/raft_large_C_T_V1-22a6c225.pth"
AESTHETIC_HEAD_DOWNLOAD = (
    "wget -P ~/.cache/vbench/aesthetic_model/emb_reader "
    "https://github.com/LAION-AI/aesthetic-predictor/raw/main/sa_0_4_vit_l_14_linear.pth"
)
RAFT_DOWNLOAD = (
    'python -c "from torchvision.models.optical_flow import raft_large, Raft_Large_Weights; '
    'raft_large(weights=Raft_Large_Weights.C_T_V1)"'
)


class VBenchReward(vipkit.RewardModel):
    """VBench's quality dimensions, natively (no vbench package), with the models each one needs."""

    name = "vbench"
    dimensions = (*SCORED, "quality_score")

    class Config(vipkit.Config):
        dimensions: list[Dimension] | None = Field(
            None,
            min_length=1,
            description="Dimensions to score; unset = every dimension whose model is available (missing ones are "
            "skipped with a warning). A listed dimension whose model is missing is an error.",
        )
        dino_model: str = Field(
            "facebook/dino-vitb16",
            min_length=1,
            description="subject_consistency: DINO ViT-B/16 (hub id or directory).",
        )
        background_clip_model: str = Field(
            "openai/clip-vit-base-patch32",
            min_length=1,
            description="background_consistency: CLIP ViT-B/32 (hub id or directory).",
        )
        aesthetic_clip_model: str = Field(
            "openai/clip-vit-large-patch14",
            min_length=1,
            description="aesthetic_quality: CLIP ViT-L/14 (hub id or directory).",
        )
        aesthetic_head: str = Field(
            DEFAULT_AESTHETIC_HEAD,
            min_length=1,
            description="aesthetic_quality: LAION's sa_0_4_vit_l_14_linear.pth (a Linear(768, 1) state dict; .pth or .safetensors).",
        )
        raft_weights: str = Field(
            DEFAULT_RAFT_WEIGHTS,
            min_length=1,
            description="dynamic_degree: torchvision RAFT-large weights (Raft_Large_Weights.C_T_V1); needs torchvision.",
        )
        video_fps: float = Field(
            8.0,
            gt=0,
            description="Frame rate the videos are meant to play at: dynamic_degree looks at about 8 frames a second.",
        )
        preset: Literal["tiny"] | None = Field(
            None,
            description="'tiny': random toy DINO, CLIPs and aesthetic head built in memory instead of the model options "
            "(tests, CI; scores mean nothing about quality). dynamic_degree still needs RAFT.",
        )
        batch_size: int = Field(64, gt=0, description="Frames per forward pass of each network.")
        device: str = Field(
            "auto",
            pattern=DEVICE_PATTERN,
            description="'auto' = CUDA when available, else CPU; or a torch device. Scores come back on the CPU.",
        )
        dtype: Literal["float32", "bfloat16", "float16"] = Field(
            "float32", description="Weights' dtype for DINO and CLIP (VBench runs DINO in float32); scores are float32."
        )

    config: Config

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        wanted = self.config.dimensions or list(SCORED)
        missing = {dim: problem for dim in wanted if (problem := self._missing(dim))}
        if missing and self.config.dimensions:
            raise VipkitError(
                " ".join(f"vbench dimension {dim!r} cannot score: {problem}" for dim, problem in missing.items())
            )
        for dim, problem in missing.items():
            logger.warning("vbench: skipping %s: %s", dim, problem)
        self.dimensions = (*(dim for dim in SCORED if dim in wanted and dim not in missing), "quality_score")

    # -- what each dimension needs ---------------------------------------------------------------
    def _source(self, option: str, what: str) -> ModelSource:
        return model_source(getattr(self.config, option), f"reward option `{option}`", what)

    def _missing(self, dim: str) -> str | None:
        """Why ``dim`` cannot score (and how to fix it), or None when everything it needs is present."""
        if dim == "temporal_flickering" or (self.config.preset == "tiny" and dim != "dynamic_degree"):
            return None
        if dim == "dynamic_degree":
            if importlib.util.find_spec("torchvision") is None:
                return (
                    "it needs torchvision's RAFT, and torchvision is not installed. Install the torchvision build that "
                    f"matches your torch (pip install torchvision==<your torch's>), fetch the weights ({RAFT_DOWNLOAD}) "
                    "and set `raft_weights` to the file if it is not at the default place."
                )
            return self._missing_file("raft_weights", f"Fetch them with {RAFT_DOWNLOAD}.")
        if dim == "aesthetic_quality":
            head = self._missing_file("aesthetic_head", f"Download it: {AESTHETIC_HEAD_DOWNLOAD}.")
            return head or self._missing_model("aesthetic_clip_model", "a CLIP ViT-L/14")
        option, what = {
            "subject_consistency": ("dino_model", "a DINO ViT-B/16"),
            "background_consistency": ("background_clip_model", "a CLIP ViT-B/32"),
        }[dim]
        return self._missing_model(option, what)

    def _missing_model(self, option: str, what: str) -> str | None:
        try:
            self._source(option, what).require_available(what)
        except VipkitError as exc:
            return str(exc)
        return None

    def _missing_file(self, option: str, how_to: str) -> str | None:
        value = getattr(self.config, option)
        if Path(value).expanduser().is_file():
            return None
        return f"`{option}` = {value!r}: no such file. {how_to}"

    # -- models, loaded on first use -------------------------------------------------------------
    @cached_property
    def _device(self) -> torch.device:
        from vipkit.model_source import resolve_device

        return resolve_device(self.config.device)

    def _encoder(self, option: str, kind: Literal["dino", "clip"], what: str, tiny_seed: int) -> FrameEncoder:
        import torch

        from vipkit_vbench.models import load_encoder

        source = None if self.config.preset == "tiny" else self._source(option, what)
        return load_encoder(source, kind, self._device, getattr(torch, self.config.dtype), tiny_seed)

    @cached_property
    def dino(self) -> FrameEncoder:
        return self._encoder("dino_model", "dino", "a DINO ViT-B/16", tiny_seed=1)

    @cached_property
    def background_clip(self) -> FrameEncoder:
        return self._encoder("background_clip_model", "clip", "a CLIP ViT-B/32", tiny_seed=2)

    @cached_property
    def aesthetic_clip(self) -> FrameEncoder:
        return self._encoder("aesthetic_clip_model", "clip", "a CLIP ViT-L/14", tiny_seed=3)

    @cached_property
    def aesthetic_head(self) -> torch.nn.Linear:
        import torch

        from vipkit_vbench.models import load_linear_head

        width = int(self.aesthetic_clip.model.config.projection_dim)
        if self.config.preset == "tiny":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(4)
                return torch.nn.Linear(width, 1).to(self._device).eval().requires_grad_(False)
        return load_linear_head(self.config.aesthetic_head, "reward option `aesthetic_head`", width, self._device)

    @cached_property
    def raft(self) -> Any:
        from vipkit_vbench.models import load_raft

        return load_raft(self.config.raft_weights, "reward option `raft_weights`", self._device)

    # -- scoring -----------------------------------------------------------------------------------
    def score(self, videos: Tensor, prompts: Sequence[str]) -> vipkit.Scores:
        from vipkit import track
        from vipkit_vbench.totals import quality_score

        if videos.ndim != 5 or videos.shape[0] != len(prompts):
            raise ValueError(
                f"expected videos (B, F, C, H, W) with B = {len(prompts)} prompts, got {tuple(videos.shape)}"
            )
        scores = {dim: getattr(self, f"_{dim}")(videos) for dim in track(self.dimensions[:-1], "vbench dimensions")}
        scores["quality_score"] = quality_score(scores)
        return scores

    def _features(self, encoder: FrameEncoder, videos: Tensor) -> Tensor:
        """Per-frame features ``(B, F, D)`` of 8-bit-level frames."""
        from vipkit_vbench.measures import levels

        batch, frames = videos.shape[:2]
        return encoder(levels(videos.flatten(0, 1)), self.config.batch_size).view(batch, frames, -1)

    def _temporal_flickering(self, videos: Tensor) -> Tensor:
        from vipkit_vbench.measures import temporal_flickering

        return temporal_flickering(videos)

    def _subject_consistency(self, videos: Tensor) -> Tensor:
        from vipkit_vbench.measures import feature_consistency

        return feature_consistency(self._features(self.dino, videos))

    def _background_consistency(self, videos: Tensor) -> Tensor:
        from vipkit_vbench.measures import feature_consistency

        return feature_consistency(self._features(self.background_clip, videos))

    def _aesthetic_quality(self, videos: Tensor) -> Tensor:
        """LAION's head on unit-norm CLIP ViT-L/14 image embeddings, divided by 10, averaged over frames."""
        import torch.nn.functional as F

        embeddings = F.normalize(self._features(self.aesthetic_clip, videos), dim=-1)
        return (self.aesthetic_head(embeddings.to(self._device)).squeeze(-1) / 10).mean(dim=1).float().cpu()

    def _dynamic_degree(self, videos: Tensor) -> Tensor:
        """1.0 for a video whose RAFT flow says it moves, else 0.0; frames taken at about 8 per second."""
        import torch

        from vipkit_vbench.measures import is_dynamic, levels
        from vipkit_vbench.models import raft_flow_magnitudes

        frames = levels(videos[:, :: max(1, round(self.config.video_fps / 8))]).to(self._device)
        moving = []
        for video in frames:
            magnitudes = raft_flow_magnitudes(self.raft, video) if len(video) > 1 else []
            moving.append(float(is_dynamic(magnitudes, video.shape[-2], video.shape[-1], len(video))))
        return torch.tensor(moving)
