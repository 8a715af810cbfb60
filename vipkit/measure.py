"""Cost figures: denoiser FLOPs per step (the report) and a CPU's seconds per video (the dry-run plan)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vipkit.interfaces import VideoModel

if TYPE_CHECKING:
    import torch


def _counted_flops(call: Callable[[], object]) -> int:
    """FLOPs of ``call`` as torch counts them (also on the meta device, where nothing is computed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        call()
    return int(counter.get_total_flops())


def denoiser_flops(model: VideoModel, latents_like: object, prompt: str = "a video") -> int:
    """FLOPs of one denoiser call on one video's latents (no guidance batch), counted by torch."""
    import torch

    latents = torch.zeros_like(latents_like)  # type: ignore[arg-type]
    timesteps = torch.full((latents.shape[0],), model.num_train_timesteps // 2, dtype=torch.long)
    conditioning = model.encode_prompts([prompt] * latents.shape[0])
    return _counted_flops(lambda: model.predict_noise(latents, timesteps, conditioning))


@dataclass(frozen=True)
class CpuEstimate:
    """Seconds per video on this CPU: the denoiser's FLOPs at the rate the CPU multiplies matrices, a lower bound
    (decoding, and kernels slower than a matrix product, come on top)."""

    steps: int
    flops_per_call: int  # one denoiser call of one video, the guidance batch included
    flops_per_second: float

    @property
    def seconds_per_video(self) -> float:
        return self.steps * self.flops_per_call / self.flops_per_second


class _FirstCall(Exception):
    """Stops a generation at its first denoiser call, whose arguments have been kept."""


def _first_denoiser_call(model: VideoModel, denoiser: torch.nn.Module) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments of the denoiser's first call when ``model`` generates one video: the real shapes, guidance
    batch included, whatever the family's latent layout. The generation stops there, before any step runs."""
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def keep(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append((args, kwargs))
        raise _FirstCall

    handle = denoiser.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        model.generate(["a video"], [0])
    except _FirstCall:
        pass
    finally:
        handle.remove()
    return seen[0]


def _matmul_flops_per_second(dtype: torch.dtype, size: int = 1024, repeats: int = 5) -> float:
    """The best rate of a few ``size``² matrix products in ``dtype``: what a denoiser's heavy kernels reach at most."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def cpu_estimate(model: VideoModel) -> CpuEstimate | None:
    """Seconds per video for a model whose denoiser is on the CPU (None elsewhere, or for a family without
    ``denoiser()`` or ``num_inference_steps``), without running a single step: the first call's arguments are
    counted on the meta device, which takes well under a second even at full size."""
    try:
        denoiser = model.denoiser()
    except NotImplementedError:
        return None
    steps = model.generation_settings.get("num_inference_steps")
    weight = next(denoiser.parameters())
    if weight.device.type != "cpu" or not steps:
        return None
    counter = _first_call_on_meta(model, denoiser)
    return CpuEstimate(int(steps), int(counter.get_total_flops()), _matmul_flops_per_second(weight.dtype))


def flops_by_module(model: VideoModel) -> dict[str, int] | None:
    """FLOPs of the denoiser's first call when ``model`` generates one video (guidance batch included) per module path
    inside the denoiser (``""``: all of it), counted on the meta device; None for a family without ``denoiser()``."""
    try:
        denoiser = model.denoiser()
    except NotImplementedError:
        return None
    return flops_per_path(_first_call_on_meta(model, denoiser), denoiser)


def flops_per_path(counter: Any, denoiser: torch.nn.Module) -> dict[str, int]:
    """What a torch ``FlopCounterMode`` counted in ``denoiser``, per module path inside it (``""``: all of it)."""
    root = type(denoiser).__name__
    return {
        "" if name == root else name.removeprefix(f"{root}."): sum(by_op.values())
        for name, by_op in counter.get_flop_counts().items()
        if name == root or name.startswith(f"{root}.")
    }


def _first_call_on_meta(model: VideoModel, denoiser: torch.nn.Module) -> Any:
    """A torch ``FlopCounterMode`` that has counted the denoiser's first call (``_first_denoiser_call``) run on the
    meta device: nothing is computed."""
    import torch
    from torch.func import functional_call
    from torch.utils._pytree import tree_map
    from torch.utils.flop_counter import FlopCounterMode

    args, kwargs = _first_denoiser_call(model, denoiser)

    def on_meta(value: Any) -> Any:
        return torch.empty_like(value, device="meta") if isinstance(value, torch.Tensor) else value

    state = {name: on_meta(t) for name, t in [*denoiser.named_parameters(), *denoiser.named_buffers()]}
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        functional_call(denoiser, state, tree_map(on_meta, args), tree_map(on_meta, kwargs))
    return counter
