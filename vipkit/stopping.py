"""Whether this process has been asked to stop (Ctrl-C, SIGTERM).

The stop arrives as a KeyboardInterrupt wherever the process is, and some libraries turn it into an error of their own
when it lands inside them (torch, while safetensors builds a tensor, raises ValueError "could not determine the shape
of object type ..."). Code that reads such an error as damaged data asks ``reraise_if_stopping`` first, so that a
clean stop is never reported as a damaged file to delete.
"""

from __future__ import annotations

_requested = False


def request_stop() -> None:
    """Called by the signal handlers of the CLI before they raise the KeyboardInterrupt."""
    global _requested
    _requested = True


def reraise_if_stopping(exc: BaseException) -> None:
    """Raise KeyboardInterrupt (the clean stop) in place of ``exc`` when a stop has been requested."""
    if _requested:
        raise KeyboardInterrupt from exc
