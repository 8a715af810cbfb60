"""A time limit on a call that may hang (a reward plugin), enforced with the real-time interval timer.

SIGALRM interrupts the main thread between bytecodes and inside blocking waits (sleep, lock acquisition,
I/O), so a stuck plugin ends with an exception instead of blocking a run forever with no output. Timers
exist only in the main thread of a POSIX process (every torchrun rank is one); elsewhere the call runs
without a limit.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from vipkit.errors import VipkitError


class DeadlineExceeded(VipkitError):
    """The call did not return within its time limit."""


@contextmanager
def deadline(seconds: float | None, message: str) -> Iterator[None]:
    """Raise ``DeadlineExceeded(message)`` inside the block once it has run ``seconds`` (None: no limit)."""
    usable = (
        seconds is not None and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise DeadlineExceeded(message)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
