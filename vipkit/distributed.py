"""The few process-group facts the engine needs, so it reads the same on one process and on many.

Runs started by ``torchrun`` or ``accelerate launch`` set ``RANK``/``WORLD_SIZE``; accelerate's
``PartialState`` joins the process group (gloo on CPU, NCCL on GPUs). Work lists are sharded by
index (item ``i`` goes to rank ``i % world``) and gathered back in their original order, so every
rank ends up with the same results, whatever the number of processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def launched_world_size() -> int:
    """Processes the launcher started (1 outside torchrun/accelerate launch); cheap, imports nothing."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_as_main() -> bool:
    """True on the process that talks to people (rank 0), known before torch is imported."""
    return os.environ.get("RANK", "0") == "0"


def _state() -> Any:
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())  # accelerate joins CPU process groups only when asked


def rank() -> int:
    return _state().process_index if launched_world_size() > 1 else 0


def world_size() -> int:
    return _state().num_processes if launched_world_size() > 1 else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait until every rank got here (a no-op on one process)."""
    if world_size() > 1:
        _state().wait_for_everyone()


def shard(count: int) -> list[int]:
    """The indices in ``range(count)`` this rank works on."""
    return list(range(rank(), count, world_size()))


def gather(local: Sequence[T]) -> list[T]:
    """Every rank's ``local`` results (for the indices ``shard`` gave it) back in index order, on every rank."""
    if world_size() == 1:
        return list(local)
    import torch.distributed as dist

    parts: list[list[T] | None] = [None] * world_size()
    dist.all_gather_object(parts, list(local))
    total = sum(len(part or []) for part in parts)
    merged: list[T] = [None] * total  # type: ignore[list-item]
    for source, part in enumerate(parts):
        merged[source :: world_size()] = part or []
    return merged


def map_sharded(function: Callable[[list[int]], list[R]], count: int) -> list[R]:
    """``function(indices)`` on this rank's share of ``range(count)``, gathered in index order."""
    indices = shard(count)
    return gather(function(indices) if indices else [])


def broadcast(value: T) -> T:
    """The main process's ``value``, on every rank."""
    if world_size() == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(value: float) -> float:
    """Sum of a number over ranks (for logging a global loss)."""
    if world_size() == 1:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64, device=_state().device)
    dist.all_reduce(tensor)
    return float(tensor.item())


def finish() -> None:
    """Leave the process group cleanly at the end of a multi-process run."""
    if world_size() > 1:
        import torch.distributed as dist

        barrier()
        dist.destroy_process_group()
