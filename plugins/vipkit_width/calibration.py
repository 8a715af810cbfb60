"""What width importance is measured on: the teacher's videos of the first probe prompts, noised as training noises
them, and the family's noise-prediction loss on them; and the inputs and FLOPs of each layer in one denoiser call.

Everything goes through the family-agnostic ``VideoModel`` methods (``encode_prompts``, ``add_noise``,
``training_target``, ``predict_noise``), so it serves every family. The noise of video ``i`` at noise level ``j``
comes from ``derive_seed(seed_i, "width", j)`` and the levels are evenly spaced over the training timesteps: the
same calibration in every stage and on every process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

import vipkit
from vipkit import VipkitError
from vipkit.measure import flops_per_path
from vipkit.seeds import derive_seed

LayerInputs = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass
class Calibration:
    """The teacher's clean latents of some probe videos, with their prompts, seeds and noise levels per video."""

    latents: Tensor  # (videos, ...) in the family's layout, float32 on the CPU
    prompts: list[str]
    seeds: list[int]
    levels: int  # noise levels (timesteps) per video

    @classmethod
    def render(
        cls, teacher: vipkit.VideoModel, prompts: Sequence[str], seeds: Sequence[int], levels: int
    ) -> Calibration:
        return cls(teacher.generate(list(prompts), list(seeds)).latents, list(prompts), list(seeds), levels)

    def batches(self, model: vipkit.VideoModel) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Per video: (noisy latents, timesteps, conditioning, training target), its noise levels as one batch."""
        conditioning = model.encode_prompts(self.prompts)
        steps = model.num_train_timesteps
        timesteps = torch.tensor([int((j + 0.5) * steps / self.levels) for j in range(self.levels)])
        for i, seed in enumerate(self.seeds):
            clean = self.latents[i : i + 1].expand(self.levels, *self.latents.shape[1:])
            noise = torch.cat(
                [
                    torch.randn(
                        self.latents[i : i + 1].shape,
                        generator=torch.Generator().manual_seed(derive_seed(seed, "width", j)),
                    )
                    for j in range(self.levels)
                ]
            )
            cond = conditioning[i : i + 1].expand(self.levels, *conditioning.shape[1:])
            yield (
                model.add_noise(clean, noise, timesteps),
                timesteps,
                cond,
                model.training_target(clean, noise, timesteps),
            )

    def loss(self, model: vipkit.VideoModel, *, backward: bool = False) -> float:
        """The mean noise-prediction loss over the calibration (the family's training loss on the teacher's videos);
        with ``backward`` its gradient is accumulated into the denoiser's parameters, one video at a time."""
        total = 0.0
        for noisy, timesteps, conditioning, target in self.batches(model):
            with torch.set_grad_enabled(backward):
                prediction = model.predict_noise(noisy, timesteps, conditioning)
                loss = torch.nn.functional.mse_loss(prediction.float(), target.float()) / len(self.seeds)
            if backward:
                loss.backward()
            total += float(loss.detach())
        return total

    def first_call(
        self, model: vipkit.VideoModel, layers: Sequence[nn.Module]
    ) -> tuple[list[LayerInputs], dict[str, int]]:
        """One denoiser call on the first video's first noise level: the inputs each of ``layers`` got (detached), and
        the FLOPs of every module of the denoiser by its path (``""``: all of it), as torch counts them."""
        noisy, timesteps, conditioning, _ = next(self.batches(model))
        seen: dict[int, LayerInputs] = {}

        def keep(index: int) -> Any:
            def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                seen.setdefault(index, (_detached(args), _detached(kwargs)))

            return hook

        handles = [layer.register_forward_pre_hook(keep(i), with_kwargs=True) for i, layer in enumerate(layers)]
        counter = FlopCounterMode(display=False)
        try:
            with torch.no_grad(), counter:
                model.predict_noise(noisy[:1], timesteps[:1], conditioning[:1])
        finally:
            for handle in handles:
                handle.remove()
        missing = [i for i in range(len(layers)) if i not in seen]
        if missing:
            raise VipkitError(f"width pruning: {len(missing)} of the layers to narrow did not run in a denoiser call")
        return [seen[i] for i in range(len(layers))], flops_per_path(counter, model.denoiser())


def _detached(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, tuple | list):
        return type(value)(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value
