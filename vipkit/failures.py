"""Failures that are not the user's input, told in words: a file-system error (what, where, what fixes it) and a bug.

The CLI turns every exception into one paragraph (``vipkit.cli``); this module holds the wording, so the
run-folder lock (``vipkit.run_lock``) and the CLI say the same thing about the same error.
"""

from __future__ import annotations

import errno
import os
import re
import traceback
from pathlib import Path

_ADVICE = {  # what to do, after the error's own words
    errno.ENOSPC: "free space on that disk (or use an --out on another one)",
    errno.EDQUOT: "free space within your disk quota (or ask for a larger one)",
    errno.EROFS: "use an --out on a writable disk (or remount that one read-write)",
    errno.EACCES: "fix the permissions there or use another --out",
    errno.EPERM: "fix the permissions there or use another --out",
    errno.EIO: "check the disk (dmesg, SMART): it failed to read or write",
    errno.ENOENT: "check that nothing removes files while vipkit runs",
    errno.ENOTDIR: "a part of that path is a file: use another --out",
    errno.EMFILE: "raise the open-file limit (ulimit -n)",
    errno.ENAMETOOLONG: "use a shorter --out path",
}
_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)")


def os_error_of(exc: BaseException) -> OSError | None:
    """``exc`` as an ``OSError``: itself, the one it was raised from, or one that safetensors' Rust writer reported
    as text (``SafetensorError: ... No space left on device (os error 28)``, the path recovered from the call)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            return current
        if type(current).__name__ == "SafetensorError" and (match := _OS_ERROR_IN_TEXT.search(str(current))):
            code = int(match.group(1))
            return OSError(code, os.strerror(code), _safetensors_path(current))
        current = current.__cause__
    return None


def _safetensors_path(exc: BaseException) -> str | None:
    """The ``filename`` argument of the innermost safetensors call the exception passed through, if any."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if str(frame.f_globals.get("__name__", "")).startswith("safetensors") and "filename" in frame.f_locals:
            found = str(frame.f_locals["filename"])
        tb = tb.tb_next
    return found


def describe(exc: OSError) -> str:
    """``No space left on device (ENOSPC) at PATH``: the error's meaning, its errno name and the path."""
    what = exc.strerror or str(exc)
    name = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    where = f" at {exc.filename}" if exc.filename else ""
    if exc.filename2:
        where += f" (and {exc.filename2})"
    return f"{what}{f' ({name})' if name else ''}{where}"


def advice(exc: OSError) -> str:
    """What usually fixes it, in a few words."""
    return _ADVICE.get(exc.errno or -1, "fix the cause")


def raised_at(exc: BaseException) -> str:
    """``FILE:LINE in FUNCTION`` of the innermost frame, paths shortened to the package (where a bug is)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "an unknown place"
    last = frames[-1]
    parts = Path(last.filename).parts
    for anchor in ("site-packages", "plugins"):  # an installed or in-tree package: from its own folder on
        if anchor in parts:
            parts = parts[parts.index(anchor) + 1 :]
            break
    else:
        if "vipkit" in parts:
            parts = parts[len(parts) - 1 - parts[::-1].index("vipkit") :]
    return f"{Path(*parts)}:{last.lineno} in {last.name}"
