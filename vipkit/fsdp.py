"""FSDP for the trainer (torch ``fully_shard``, FSDP2): parameters, gradients and optimizer state are
split over the ranks, for denoisers whose training state does not fit on one GPU.

The trainer shards a copy of the denoiser and trains that; the plain module stays untouched for
generation and saving and gets the trained weights back at the end (``copy_back``). Checkpoints
hold full tensors (``full``), so they do not depend on the number of processes.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def sharded_copy(
    module: torch.nn.Module, params: list[torch.nn.Parameter]
) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
    """A deep copy of ``module`` sharded per top-level block and as a whole; ``params``' counterparts in it."""
    from torch.distributed.fsdp import fully_shard

    names = {id(p): name for name, p in module.named_parameters()}
    trained = [names[id(p)] for p in params]
    sharded = copy.deepcopy(module)
    for unit in _units(sharded):
        fully_shard(unit)
    fully_shard(sharded)
    by_name = dict(sharded.named_parameters())
    return sharded, [by_name[name] for name in trained]


def _units(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The top-level children with parameters, looking into lists (fully_shard needs modules with a forward)."""
    import torch

    units = []
    for child in module.children():
        inner = list(child.children()) if isinstance(child, torch.nn.ModuleList | torch.nn.ModuleDict) else [child]
        units += [unit for unit in inner if any(True for _ in unit.parameters())]
    return units


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded one (a collective: every rank calls it); others unchanged."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def like(whole: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``whole`` in ``param``'s layout: this rank's shard when ``param`` is sharded."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor):
        return distribute_tensor(whole.to(param.device, param.dtype), param.device_mesh, param.placements)
    return whole


def full_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state_dict with every sharded tensor made whole (collective)."""
    return {
        "state": {
            index: {key: full(value) for key, value in values.items()} for index, values in state["state"].items()
        },
        "param_groups": state["param_groups"],
    }


def sharded_optimizer_state(state: dict[str, Any], params: list[torch.nn.Parameter]) -> dict[str, Any]:
    """The inverse of ``full_optimizer_state`` for the optimizer over ``params``."""
    return {
        "state": {
            index: {key: value if key == "step" else like(value, params[int(index)]) for key, value in values.items()}
            for index, values in state["state"].items()
        },
        "param_groups": state["param_groups"],
    }


def copy_back(params: list[torch.nn.Parameter], sharded_params: list[torch.nn.Parameter]) -> None:
    """Write the trained (sharded) parameters into the plain module's matching parameters (collective)."""
    import torch

    with torch.no_grad():
        for param, trained in zip(params, sharded_params, strict=True):
            param.copy_(full(trained.detach()))
