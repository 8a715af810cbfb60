"""``vipkit sweep --jobs N``: N runs of a sweep at once, each in a process of its own, so that a machine with many CPU
cores (or a GPU that one small run leaves idle) finishes a sweep sooner.

Each process is started fresh (``spawn``: nothing of the parent's state, CUDA included, is shared), runs one run
through the same ``vipkit.sweep.run_one`` as a sequential sweep, and sends its log lines and its record back over a
queue; the parent prints the lines, keeps the records and writes the sweep's tables as runs finish. On CPU each
process gets an equal share of the cores as torch threads. Ctrl-C or SIGTERM stops every run cleanly (each resumes
from its last checkpoint); a process that dies without a record (killed, out of memory) fails its run only.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vipkit.stopping import request_stop
from vipkit.sweep_plan import SweepRun

Log = Callable[[str], None]
Finished = Callable[[int, dict[str, Any], float], None]  # the run's index in the plan, its record, seconds it took
POLL_SECONDS = 0.5


def threads_per_job(jobs: int) -> int:
    """Each process's torch threads: an equal share of the cores this process may use, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // jobs)


def run_in_processes(
    todo: Sequence[tuple[int, str, SweepRun]], out: Path, jobs: int, log: Log, debug: bool, finished: Finished
) -> None:
    """Run ``todo`` (index in the plan, where-label, run) ``jobs`` at a time; ``finished`` hears of each run."""
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    waiting = list(todo)
    running: dict[int, tuple[Any, float]] = {}  # index -> (process, start time)
    threads = threads_per_job(jobs)
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                index, where, run = waiting.pop(0)
                process = context.Process(
                    target=_child,
                    args=(index, where, run, out, debug, threads, messages),
                    name=f"vipkit sweep: {run.label}",
                    daemon=False,
                )
                process.start()
                running[index] = (process, time.perf_counter())
            for kind, index, payload in _drain(messages, running):
                if kind == "log":
                    log(payload)
                    continue
                process, started = running.pop(index)
                process.join()
                finished(index, payload, time.perf_counter() - started)
    except BaseException:  # Ctrl-C, SIGTERM, or the parent's own failure (e.g. writing sweep.md): no run is left behind
        _stop(running, messages, log)
        raise


def _drain(messages: Any, running: dict[int, tuple[Any, float]]) -> list[tuple[str, int, Any]]:
    """The messages that arrived within POLL_SECONDS; for a process that ended without a record, a failed one."""
    found = []
    try:
        found.append(messages.get(timeout=POLL_SECONDS))
        while True:
            found.append(messages.get_nowait())
    except queue.Empty:
        pass
    reported = {index for kind, index, _ in found if kind == "record"}
    for index, (process, _) in running.items():
        if index in reported or process.is_alive():
            continue
        try:  # a process flushes its queue before it exits: a record it sent is there now
            while True:
                found.append(messages.get(timeout=POLL_SECONDS))
                if found[-1][:2] == ("record", index):
                    break
        except queue.Empty:
            found.append(("record", index, _died(process.exitcode)))
    return found


def _died(exitcode: int | None) -> dict[str, Any]:
    how = f"was killed by signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exited with {exitcode}"
    return {
        "status": "failed",
        "error": f"the run's process {how} before it sent a result (killed, or out of memory?); run the sweep again to "
        "resume it from its last checkpoint",
    }


def _stop(running: dict[int, tuple[Any, float]], messages: Any, log: Log) -> None:
    """The parent stops: every run hears SIGINT (once) and stops cleanly. Their last lines are read while they stop
    (a process with unread messages could not exit); their records stay "pending"."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the wait short
    try:
        for process, _ in running.values():
            if process.is_alive():
                os.kill(process.pid, signal.SIGINT)
        while any(process.is_alive() for process, _ in running.values()):
            try:
                kind, _, payload = messages.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if kind == "log":
                log(payload)
        for process, _ in running.values():
            process.join()
    finally:
        signal.signal(signal.SIGINT, previous)


def _child(index: int, where: str, run: SweepRun, out: Path, debug: bool, threads: int, messages: Any) -> None:
    """One run in a fresh process: its log lines and then its record go to ``messages``."""
    import torch

    from vipkit.sweep import run_one

    signal.signal(signal.SIGINT, _interrupt_once)  # heard even when the sweep was started with SIGINT ignored
    torch.set_num_threads(threads)
    try:
        record = run_one(run, out, where, lambda line: messages.put(("log", index, line)), debug)
    except KeyboardInterrupt:
        record = {"status": "pending"}  # stopped cleanly; the next sweep resumes it
    messages.put(("record", index, record))


def _interrupt_once(signum: int, frame: object) -> None:
    """The first SIGINT stops the run (KeyboardInterrupt); later ones, from the terminal and the parent both, are
    ignored so that the clean stop finishes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    request_stop()
    raise KeyboardInterrupt
