"""The arithmetic of ``prediction-drop``: a short guided trajectory of the model, and how much a removal changes the
model's guided prediction at some of its points.

Family-agnostic: it uses only ``add_noise``, ``training_target``, ``predict_noise`` and ``encode_prompts``. Both
``add_noise`` and ``training_target`` are linear in (clean latents, noise) at a timestep in every family (DDPM
epsilon and v-prediction, rectified flow), so feeding them ones and zeros reads off their coefficients, and a DDIM
step needs nothing else: from ``x_t = a·x0 + s·n`` and a prediction ``p·x0 + q·n``, solve for ``x0`` and ``n`` and
put them back together at the next timestep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

import vipkit
from vipkit.seeds import derive_seed


@dataclass
class Guidance:
    """The conditioning of the compared predictions: the prompts', and the negative prompt's when guidance is on."""

    conditioning: Tensor
    negative: Tensor | None  # None: guidance off, the conditional prediction alone
    scale: float

    @classmethod
    def of(cls, model: vipkit.VideoModel, prompts: Sequence[str], scale: float | None) -> Guidance:
        from vipkit_losses.guidance import unconditional_embedding

        if scale is None:
            scale = float(model.generation_settings.get("guidance_scale", 1.0))
        conditioning = model.encode_prompts(list(prompts))
        if scale <= 1.0:  # the families' rule: a scale of 1 or less samples without guidance
            return cls(conditioning, None, scale)
        negative = unconditional_embedding(model)
        return cls(conditioning, negative.expand(len(prompts), *negative.shape[1:]), scale)

    def predict(self, model: vipkit.VideoModel, latents: Tensor, timestep: int) -> Tensor:
        """``model``'s guided prediction for ``latents`` (one per prompt) at ``timestep``: one batched denoiser call."""
        batch = latents.shape[0]
        if self.negative is None:
            return model.predict_noise(latents, _timesteps(timestep, batch), self.conditioning)
        both = model.predict_noise(
            torch.cat([latents, latents]),
            _timesteps(timestep, 2 * batch),
            torch.cat([self.negative, self.conditioning]),
        )
        negative, positive = both.chunk(2)
        return negative + self.scale * (positive - negative)


@dataclass
class Trajectory:
    """The points of the model's short guided trajectory where predictions are compared, and its predictions there."""

    points: list[tuple[Tensor, int]]  # (noisy latents, timestep)
    predictions: list[Tensor]

    @classmethod
    def sample(
        cls, model: vipkit.VideoModel, guidance: Guidance, noise: Tensor, steps: int, measure_at: Sequence[int]
    ) -> Trajectory:
        """DDIM from ``noise`` over ``steps`` trailing timesteps of the training schedule (the first is the noisiest,
        ``num_train_timesteps - 1``), kept at the indices ``measure_at``; it stops after the last of them."""
        timesteps = trailing_timesteps(model.num_train_timesteps, steps)
        latents = model.add_noise(torch.zeros_like(noise), noise, _timesteps(timesteps[0], noise.shape[0]))
        points, predictions = [], []
        last = max(measure_at)
        for index in range(last + 1):
            prediction = guidance.predict(model, latents, timesteps[index])
            if index in measure_at:
                points.append((latents, timesteps[index]))
                predictions.append(prediction)
            if index < last:
                latents = ddim_step(model, latents, prediction, timesteps[index], timesteps[index + 1])
        return cls(points, predictions)

    def change(self, model: vipkit.VideoModel, guidance: Guidance) -> float:
        """Mean over points and videos of ``|prediction − the trajectory's|² / |the trajectory's|²`` for ``model``."""
        changes = []
        for (latents, timestep), reference in zip(self.points, self.predictions, strict=True):
            prediction = guidance.predict(model, latents, timestep)
            dims = tuple(range(1, reference.dim()))
            changes.append((prediction - reference).pow(2).mean(dims) / reference.pow(2).mean(dims).clamp_min(1e-12))
        return float(torch.stack(changes).double().mean())


def trailing_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """``steps`` evenly spaced timesteps from the noisiest down (diffusers' "trailing" spacing)."""
    return [round(num_train_timesteps - i * num_train_timesteps / steps) - 1 for i in range(steps)]


def ddim_step(model: vipkit.VideoModel, latents: Tensor, prediction: Tensor, timestep: int, following: int) -> Tensor:
    """The deterministic DDIM update from ``timestep`` to ``following`` given the model's prediction at ``timestep``."""
    a, s, p, q = _coefficients(model, latents, timestep)
    determinant = a * q - s * p
    clean = (q * latents - s * prediction) / determinant
    noise = (a * prediction - p * latents) / determinant
    a_next, s_next, _, _ = _coefficients(model, latents, following)
    return a_next * clean + s_next * noise


def probe_noise(like: Tensor, seeds: Sequence[int]) -> Tensor:
    """One starting noise per probe video, drawn from its own seed: a video's value does not depend on the others."""
    generators = [torch.Generator().manual_seed(derive_seed(seed, "prediction-drop")) for seed in seeds]
    return torch.stack([torch.randn(like.shape, generator=generator, dtype=torch.float32) for generator in generators])


def _coefficients(model: vipkit.VideoModel, like: Tensor, timestep: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(a, s, p, q)`` with ``add_noise(x0, n, t) = a·x0 + s·n`` and ``training_target(x0, n, t) = p·x0 + q·n``."""
    ones, zeros = torch.ones_like(like), torch.zeros_like(like)
    t = _timesteps(timestep, like.shape[0])
    return (
        model.add_noise(ones, zeros, t),
        model.add_noise(zeros, ones, t),
        model.training_target(ones, zeros, t),
        model.training_target(zeros, ones, t),
    )


def _timesteps(timestep: int, batch: int) -> Tensor:
    return torch.full((batch,), timestep, dtype=torch.long)
