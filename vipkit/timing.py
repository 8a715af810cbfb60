"""Where a run's time goes: wall-clock seconds per phase, and a model's seconds per video after a warm-up.

A run's phases do not nest: each second of a stage is booked to exactly one of them, so the table adds
up to the stage's wall time (minus bookkeeping). The first generation of a model pays for one-off work
(cuDNN autotuning, allocator growth, lazy kernels), so a model's latency is timed after a warm-up call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vipkit.interfaces import VideoModel

PHASES = ("load", "teacher videos", "importance scoring", "pair curation", "training", "evaluation", "saving")
"""The phases of a run, in the order a stage meets them (``load`` and the teacher's videos come once per run)."""


class PhaseTimes:
    """Seconds spent per phase, and on a GPU the peak memory this process allocated in each (GiB)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_gpu_gib: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Book the time of the block to ``name``, one of ``PHASES``."""
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; phases: {', '.join(PHASES)}")
        gpu = _gpu_in_use()
        if gpu:
            gpu.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            if gpu:
                self.peak_gpu_gib[name] = max(self.peak_gpu_gib.get(name, 0.0), gpu.max_memory_allocated() / 2**30)


def _gpu_in_use() -> Any:
    """``torch.cuda`` when this process uses a CUDA GPU, else None (a CPU run never initialises CUDA for this)."""
    import torch

    return torch.cuda if torch.cuda.is_available() and torch.cuda.is_initialized() else None


def add_phases(*tables: dict[str, float]) -> dict[str, float]:
    """The sum of several phase tables, in ``PHASES`` order (phases nobody spent time in are left out)."""
    return {
        name: sum(table.get(name, 0.0) for table in tables) for name in PHASES if any(name in table for table in tables)
    }


def max_phases(*tables: dict[str, float]) -> dict[str, float]:
    """The largest value per phase over several tables (peak memory), in ``PHASES`` order."""
    return {
        name: max(table.get(name, 0.0) for table in tables) for name in PHASES if any(name in table for table in tables)
    }


def seconds_per_video(model: VideoModel, prompt: str, seed: int, repeats: int = 3) -> float:
    """Wall-clock seconds ``model.generate`` takes for one video: the fastest of ``repeats`` calls after a warm-up
    call (the fastest is the least disturbed by whatever else the machine runs)."""
    model.generate([prompt], [seed])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.generate([prompt], [seed])
        times.append(time.perf_counter() - start)
    return min(times)
