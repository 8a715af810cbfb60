"""What the teacher training needs to know about one architecture, so its loops and checkpoints are written once.

Two kinds exist: the tiny AnimateDiff (``vipkit_shapes.teacher_animatediff``: UNetMotionModel, 2D VAE, CLIP text
encoder, v-prediction) and the tiny Wan 2.1 (``vipkit_shapes.teacher_wan``: WanTransformer3DModel, causal 3D VAE,
UMT5 text encoder, rectified flow). They differ in what the VAE reconstructs, how latents are scaled, the forward
process and its target, how the denoiser and the text encoder are called, the inference pipeline and the exported
folder; everything else (data, optimizer, EMA, evaluation, checkpoints, resuming) is shared.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

ForwardProcess = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
"""``(clean latents, noise, timesteps) -> (noisy latents, training target)``."""


@dataclass
class TeacherParts:
    """The pieces a teacher is trained as; ``denoiser`` is the trained one (the EMA copy is kept beside it)."""

    tokenizer: Any  # transformers CLIPTokenizer (vipkit_shapes.tokenizer.word_tokenizer)
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    denoiser: torch.nn.Module
    scheduler: Any


@dataclass(frozen=True)
class Tokens:
    """Prompts as the text encoder takes them: ids and attention mask, padded to the same length."""

    ids: Tensor
    mask: Tensor

    def __getitem__(self, index: Tensor | slice) -> Tokens:
        return Tokens(self.ids[index], self.mask[index])

    def to(self, device: torch.device) -> Tokens:
        return Tokens(self.ids.to(device), self.mask.to(device))


class TeacherKind(ABC):
    """One teacher architecture: how it is built, encoded, noised, called, sampled and exported."""

    name: str
    """The architecture's name (``train_teacher --architecture``), stored in checkpoints."""
    component: ClassVar[str]
    """The denoiser's component name in the diffusers pipeline (``unet``, ``transformer``); checkpoint files too."""
    frames: ClassVar[int]
    """Frames per video, as the teacher generates them."""
    settings: ClassVar[dict[str, Any]]
    """How the teacher samples (stored in the exported folder as the model's defaults, used by the evaluation)."""
    latent_scale_keys: ClassVar[tuple[str, ...]]
    """The VAE config entries that bring its latents to unit scale (fitted once, kept in checkpoints)."""
    classes: ClassVar[dict[str, type]]
    """The classes of ``vae``, ``text_encoder`` and the denoiser component, to load a trained teacher's parts."""
    vae_batch_size: ClassVar[int]
    """What one VAE training step reconstructs by default: frames or clips (``vae_batch``)."""
    attention_sequences: ClassVar[int]
    """Attention sequences per training video (CUDA's attention kernels take at most 65,535 in one call)."""

    @abstractmethod
    def build(self, seed: int = 0, vae_config: dict[str, Any] | None = None) -> TeacherParts:
        """The architecture, randomly initialised from ``seed``; ``vae_config`` replaces entries of the VAE's default
        config (``train_teacher --vae-config``; checkpoints keep the VAE's whole config)."""

    @abstractmethod
    def vae_batch(self, videos: Tensor, generator: torch.Generator, size: int) -> Tensor:
        """A random batch of ``size`` of what the VAE learns to reconstruct (frames or clips) from ``videos``
        (N, F, 3, H, W) in [-1, 1]."""

    @abstractmethod
    def encode(self, vae: torch.nn.Module, videos: Tensor) -> Tensor:
        """The VAE's latent means of ``videos`` (B, F, 3, H, W), in the denoiser's layout, not yet scaled."""

    @abstractmethod
    def fit_latent_scale(self, vae: torch.nn.Module, latents: Tensor) -> None:
        """Store in the VAE config (``latent_scale_keys``) what brings ``latents`` to unit scale."""

    @abstractmethod
    def scaled(self, vae: torch.nn.Module, latents: Tensor) -> Tensor:
        """``latents`` brought to the denoiser's scale with the VAE config's entries (the pipeline's inverse)."""

    @abstractmethod
    def forward_process(self, scheduler: Any, device: torch.device) -> ForwardProcess:
        """How training noises latents at integer timesteps in [0, 1000), and what the denoiser predicts."""

    @abstractmethod
    def condition(self, text_encoder: torch.nn.Module, tokens: Tokens) -> Tensor:
        """The text conditioning, computed as the pipeline computes it (with gradients)."""

    @abstractmethod
    def predict(self, model: torch.nn.Module, noisy: Tensor, timesteps: Tensor, conditioning: Tensor) -> Tensor:
        """The denoiser's prediction, called as the pipeline calls it."""

    @abstractmethod
    def sample(
        self, parts: TeacherParts, denoiser: torch.nn.Module, prompts: list[str], generators: list[torch.Generator]
    ) -> Tensor:
        """Videos (B, F, 3, H, W) in [0, 1] sampled by the pipeline around ``denoiser`` with ``settings``."""

    @abstractmethod
    def export(self, path: Path, parts: TeacherParts, denoiser: torch.nn.Module) -> None:
        """Write the teacher, ``denoiser`` as its denoiser, as a folder its vipkit family loads."""
