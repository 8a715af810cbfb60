"""One process per run folder: an exclusive ``flock`` on ``FOLDER/.vipkit.lock``, held while the command runs.

The kernel drops the lock when its process ends, however it ends (``kill -9``, a crash, a power cut), so a
stale lock of a dead process never blocks the next run. The file records who holds it (pid, host, start time,
command), so a second process can say whom it waits for; that text is read only while the lock is held, so it
is never stale. Under torchrun only rank 0 takes it (``vipkit.engine.compress``).

A folder the lock itself created is removed again when the command ends having written nothing else there
(a run that stopped before its first write leaves no empty folder behind). A process that opened the lock file
just before that removal finds, once it gets the lock, that the file is no longer the one at the path, and
tries again.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from vipkit.errors import VipkitError
from vipkit.failures import advice, describe

LOCK_NAME = ".vipkit.lock"


class FolderLock:
    """Held until ``release()`` (or the process ends); ``acquire`` refuses a folder another process holds."""

    def __init__(self, folder: Path, fd: int, created: bool) -> None:
        self.folder = folder
        self._fd: int | None = fd
        self._created = created

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    @classmethod
    def acquire(cls, folder: Path, what: str = "run") -> FolderLock:
        """Lock ``folder`` (made if missing); raises ``VipkitError`` naming the holder, or the file-system error."""
        path = folder / LOCK_NAME
        for _ in range(10):
            created = not folder.exists()
            try:
                folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                continue  # the folder was removed by a holder that just finished: make it again
            except OSError as exc:
                raise VipkitError(
                    f"cannot use {folder} as the {what} folder: {describe(exc)}; {advice(exc)}. Nothing was written."
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise VipkitError(
                    f"{folder} is in use by another vipkit process ({_who(holder)}): one process per {what} folder, "
                    f"or both would do all the work and mix their files. Wait for it to end (then the same command "
                    f"resumes, or finds the {what} done), stop it, or use another --out."
                ) from None
            except OSError as exc:  # e.g. ENOLCK: a network file system without locks
                os.close(fd)
                raise VipkitError(
                    f"cannot lock {path}: {describe(exc)}; vipkit needs a file system with flock for its {what} "
                    "folders: use an --out on a local disk."
                ) from None
            if _same_file(fd, path):
                lock = cls(folder, fd, created)
                try:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, (json.dumps(_me()) + "\n").encode(), 0)
                except OSError as exc:
                    lock.release()
                    raise VipkitError(
                        f"cannot write {path}: {describe(exc)}; {advice(exc)}. Nothing else was written."
                    ) from None
                return lock
            os.close(fd)  # the file was removed (or replaced) before we locked it: lock the new one
        raise VipkitError(f"cannot lock {path}: it keeps being removed; is another program deleting {folder}?")

    def release(self) -> None:
        """Give the lock up; a folder the lock created and nothing else wrote into is removed again."""
        if self._fd is None:
            return
        try:
            if self._created and [p.name for p in self.folder.iterdir()] == [LOCK_NAME]:
                self.path.unlink()
                self.folder.rmdir()
        except OSError:
            pass  # the folder stays; the lock file in it is harmless
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _me() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join(["vipkit", *sys.argv[1:]]),
    }


def _read(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 65536, 0).decode("utf-8", "replace"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _who(info: dict[str, Any]) -> str:
    if not info:
        return "it is starting up; who it is was not written yet"
    return (
        f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started', '?')}: "
        f"{info.get('command', '?')}"
    )
