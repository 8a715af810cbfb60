"""Named fault points, so tests can kill a real run at a chosen moment and check that it resumes.

``VIPKIT_TEST_KILL_AT=<point>:<n>`` makes the process SIGKILL itself the n-th time (1-based) it
reaches ``fault_point(<point>)``. Without the variable a fault point costs one dict lookup.
Points: ``generate``, ``score``, ``curate``, ``train_step``, ``checkpoint_write``.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "VIPKIT_TEST_KILL_AT"
_reached: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """Die here, like a power cut, if ``VIPKIT_TEST_KILL_AT`` names this point and its count is reached."""
    target = os.environ.get(ENV)
    if not target:
        return
    point, _, count = target.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
