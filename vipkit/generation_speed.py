"""Faster generation that computes the same videos: regional compilation and channels-last convolutions.

Both apply only while a model generates (``faster_generation``) and are undone afterwards, so training, feature
hooks, saving and parameter counts always see the plain eager modules.

Regional compilation: compiling a whole denoiser ties the compiled program to its structure, so every block
removed between stages (or per candidate while ranking blocks) would compile all of it again, minutes at full
size. Instead each *region*, a module of a repeated class the family names (a ResNet block, a transformer), runs
one ``torch.compile``d ``forward`` per class, shared by every instance of that class in every model of the
process: instances of equal shapes reuse one compiled program, a removed block's pass-through stays eager, and a
region changed inside (one of its blocks removed) compiles once for its new structure. Shapes are static
(``dynamic=False``): a new batch size or resolution compiles once more.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from types import MethodType
from typing import TYPE_CHECKING, Any, Literal

from vipkit.errors import VipkitError

if TYPE_CHECKING:
    from torch import nn

GenerationCompile = Literal["off", "default", "max-autotune-no-cudagraphs"]
"""``torch.compile`` modes for generation ("off": eager). The CUDA-graph modes are left out: over regions, a graph's
replay overwrote outputs a later region still read (benchmarks/RESULTS.md §15)."""

RECOMPILE_LIMIT = 64
"""Compiled programs kept per region class: one per distinct input shape and structure (a full-size AnimateDiff
UNet and its VAE decoder have about 20 ResNet-block shapes); torch's default of 8 would send the rest to eager."""

_COMPILED: dict[tuple[type, str], Any] = {}
"""(region class, mode) -> its compiled forward, shared by every model of this process."""


def find_regions(roots: Sequence[nn.Module], class_names: Collection[str]) -> list[nn.Module]:
    """The outermost modules under ``roots`` whose class name is in ``class_names`` (a region inside a region
    is compiled as part of it)."""
    found: list[nn.Module] = []
    for root in roots:
        inside: list[str] = []
        for name, module in root.named_modules():
            if any(name.startswith(f"{outer}.") for outer in inside):
                continue
            if type(module).__name__ in class_names:
                found.append(module)
                inside.append(name)
    return found


def _compiled_forward(cls: type, mode: str) -> Any:
    import torch

    key = (cls, mode)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(cls.forward, mode=mode, dynamic=False)
    return _COMPILED[key]


@contextmanager
def compiled_regions(
    roots: Sequence[nn.Module], class_names: Collection[str], mode: GenerationCompile
) -> Iterator[None]:
    """Inside, every region under ``roots`` runs its class's compiled ``forward`` (compiled on first use);
    outside, the modules are eager again. A compilation that fails becomes a ``VipkitError``."""
    import torch
    from torch._dynamo.exc import BackendCompilerFailed

    if mode == "off":
        yield
        return
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    regions = find_regions(roots, class_names)
    for region in regions:  # an instance attribute: nn.Module.__call__ (and its hooks) calls it instead of the class's
        region.forward = MethodType(_compiled_forward(type(region), mode), region)
    try:
        yield
    except BackendCompilerFailed as exc:
        raise VipkitError(
            f"generation_compile = {mode!r}: torch.compile could not compile this model here "
            f"({' '.join(str(exc).split())[:300]}); set the model's generation_compile = 'off'"
        ) from exc
    finally:
        for region in regions:
            del region.forward


@contextmanager
def channels_last(roots: Sequence[nn.Module]) -> Iterator[None]:
    """Inside, the 4-D weights under ``roots`` (2-D convolutions) are stored channels-last, so cuDNN runs its NHWC
    kernels without transposing every activation; outside, they are contiguous again (safetensors needs that)."""
    import torch

    weights = [p for root in roots for p in root.parameters() if p.dim() == 4]
    for weight in weights:
        weight.data = weight.data.contiguous(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for weight in weights:
            weight.data = weight.data.contiguous()


@contextmanager
def faster_generation(
    roots: Sequence[nn.Module],
    region_classes: Collection[str],
    compile_mode: GenerationCompile,
    use_channels_last: bool,
) -> Iterator[None]:
    """``channels_last`` (if asked) and ``compiled_regions`` together, for one generation call."""
    with ExitStack() as stack:
        if use_channels_last:
            stack.enter_context(channels_last(roots))
        stack.enter_context(compiled_regions(roots, region_classes, compile_mode))
        yield
