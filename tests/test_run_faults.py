"""Faults of the environment and of other processes, on real runs: never a traceback, one process per run folder,
the folder checked before any model is built.

Everything is real: ``vipkit`` in subprocesses, real signals (SIGTERM, SIGINT, SIGKILL), a real second process
holding the run folder's lock, a real read-only file system and a real full one (a tmpfs mounted read-only or of
2 MiB: root only, skipped elsewhere), and a prune.json really damaged after a failed run. Every failure must end
in one paragraph (one line on stderr) and the run must resume to the uninterrupted run's model, bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import MICRO_RECIPE, run_vipkit
from safetensors.torch import load_file

ROOT = Path(__file__).parents[1]
BUILDING = "building components"  # the log line of prepare(): nothing was built before it


def start(out: Path, log: Path, *extra: str) -> subprocess.Popen:
    """``vipkit compress`` of the micro recipe into ``out``, its stderr in ``log`` (read while it runs)."""
    with open(log, "w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "vipkit", "compress", "--recipe", MICRO_RECIPE, "--out", str(out), *extra],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            cwd=ROOT,
        )


def wait_until(condition, process: subprocess.Popen, log: Path, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"ended ({process.returncode}) before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def holds_lock(out: Path, pid: int) -> bool:
    try:
        return json.loads((out / ".vipkit.lock").read_text())["pid"] == pid
    except (OSError, ValueError, KeyError):
        return False


def paragraph(stderr: str, start: str = "error:") -> str:
    """The one message a failure ends with: the last line, one paragraph, no traceback anywhere."""
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(start), stderr[-3000:]
    return last


def assert_same_run(run: Path, reference: Path) -> None:
    """The uninterrupted run's models bit for bit, and one metrics line per (stage, step), as it has."""
    for model in ("model", "stages/stage-001/model", "stages/stage-002/model"):
        files = sorted(p.relative_to(reference) for p in (reference / model).rglob("*.safetensors"))
        assert files, model
        for file in files:
            ours, theirs = load_file(str(run / file)), load_file(str(reference / file))
            assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs), file

    def steps(folder: Path) -> list[tuple[int, int]]:
        return [(r["stage"], r["step"]) for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())]

    assert sorted(steps(run)) == sorted(steps(reference)) == sorted(set(steps(reference)))


@pytest.fixture
def mount_tmpfs(tmp_path):
    """Mount a real tmpfs (``options`` as for ``mount -o``) under ``tmp_path``; root only."""
    points: list[Path] = []

    def mount(name: str, options: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a real read-only or full file system (tmpfs) needs root")
        point = tmp_path / name
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        points.append(point)
        return point

    yield mount
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_one_process_per_run_folder_and_signals_stop_cleanly_then_resume(micro_reference, tmp_path):
    out = tmp_path / "run"
    first = start(out, tmp_path / "first.log")
    wait_until(lambda: holds_lock(out, first.pid), first, tmp_path / "first.log", "lock taken")

    # a second process on the same folder is refused at once, naming the holder, before building anything
    second = run_vipkit("compress", "--recipe", MICRO_RECIPE, "--out", str(out))
    message = paragraph(second.stderr)
    assert second.returncode == 2 and BUILDING not in second.stderr
    assert f"{out} is in use by another vipkit process (pid {first.pid} on " in message
    assert "--out" in message and "compress --recipe" in message

    # the holder dies without a word (kill -9) once stage 1's pairs are stored: its lock dies with it
    wait_until(lambda: (out / "stages" / "stage-001.pairs").is_dir(), first, tmp_path / "first.log", "stage 1 pairs")
    first.kill()
    assert first.wait(60) == -signal.SIGKILL

    # a third run takes the folder over and resumes; SIGTERM stops it cleanly (143), as Ctrl-C does (130)
    for sig, code, name, log in [
        (signal.SIGTERM, 143, "SIGTERM", tmp_path / "third.log"),
        (signal.SIGINT, 130, "Ctrl-C (SIGINT)", tmp_path / "fourth.log"),
    ]:
        process = start(out, log)
        wait_until(lambda log=log: "stage 1: reusing the stored" in log.read_text(), process, log, "resumed stage 1")
        process.send_signal(sig)
        assert process.wait(60) == code, log.read_text()[-3000:]
        message = paragraph(log.read_text(), f"interrupted by {name}: stopped cleanly. Kept in {out}: ")
        assert "stage 1's pruning decision and pairs" in message and message.endswith(
            "Run the same command again to resume."
        )

    final = run_vipkit("compress", "--recipe", MICRO_RECIPE, "--out", str(out))
    assert final.returncode == 0, final.stderr[-3000:]
    assert_same_run(out, micro_reference)


def test_full_disk_in_a_checkpoint_write_then_a_damaged_prune_json(micro_reference, mount_tmpfs):
    disk = mount_tmpfs("disk", "size=2m")  # stage 1's pairs fit; its first checkpoint (3.9 MB) does not
    out = disk / "run"
    full = run_vipkit("compress", "--recipe", MICRO_RECIPE, "--out", str(out))
    message = paragraph(full.stderr)
    assert full.returncode == 2
    assert message.startswith(f"error: No space left on device (ENOSPC) at {out}/checkpoints/.stage-001-step-")
    assert f"Kept in {out}: stage 1's pruning decision and pairs;" in message
    assert message.endswith(
        "Free space on that disk (or use an --out on another one), then run the same command again to resume."
    )

    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space freed
    prune = out / "stages" / "stage-001.pairs" / "prune.json"
    prune.write_text(prune.read_text()[:40])  # damaged by hand (or a disk): no JSON object any more
    started = time.monotonic()
    damaged = run_vipkit("compress", "--recipe", MICRO_RECIPE, "--out", str(out))
    message = paragraph(damaged.stderr)
    assert damaged.returncode == 2 and BUILDING not in damaged.stderr, damaged.stderr[-2000:]
    assert message.startswith(f"error: {prune} is damaged (")
    assert f"Delete the folder {prune.parent} to prune and curate stage 1 anew" in message
    print(f"damaged prune.json refused in {time.monotonic() - started:.1f} s")

    for path in sorted(prune.parent.iterdir()):  # as the message says
        path.unlink()
    prune.parent.rmdir()
    final = run_vipkit("compress", "--recipe", MICRO_RECIPE, "--out", str(out))
    assert final.returncode == 0, final.stderr[-3000:]
    assert_same_run(out, micro_reference)


def test_the_run_folder_is_checked_before_any_model_is_built(micro_reference, mount_tmpfs, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    if os.geteuid() == 0:
        read_only, meaning = mount_tmpfs("read-only", "ro,size=1m") / "run", "Read-only file system (EROFS)"
    else:  # a folder this user may not write to (root writes anyway: hence the real read-only mount above)
        (tmp_path / "locked").mkdir(mode=0o555)
        read_only, meaning = tmp_path / "locked" / "run", "Permission denied (EACCES)"
    cases = [
        ((a_file,), f"error: --out {a_file} is a file, not a folder"),
        ((micro_reference, "--set", "seed=4"), f"error: {micro_reference} holds a run of a different recipe"),
        ((read_only,), f"error: cannot use {read_only} as the run folder: {meaning} at {read_only}"),
    ]
    for (out, *extra), expected in cases:
        result = run_vipkit("compress", "--recipe", MICRO_RECIPE, "--out", str(out), *extra)
        assert result.returncode == 2 and BUILDING not in result.stderr, result.stderr[-2000:]
        assert paragraph(result.stderr).startswith(expected), result.stderr[-2000:]
    assert not read_only.exists() and a_file.read_text() == "not a folder"


def test_a_bench_folder_is_locked_too(tmp_path):
    from vipkit.run_lock import FolderLock

    matrix = tmp_path / "matrix.toml"
    matrix.write_text(
        'seed = 1\n[prompts]\neval = ["a red ball"]\n[[models]]\nlabel = "tiny"\nname = "animatediff"\n'
        'preset = "tiny"\n[reward]\nname = "clip"\npreset = "tiny"\n'
    )
    out = tmp_path / "bench"
    with FolderLock.acquire(out, "bench"):  # this test process holds it, as a running bench would
        result = run_vipkit("bench", "--matrix", str(matrix), "--out", str(out))
    assert result.returncode == 2, result.stderr[-2000:]
    assert paragraph(result.stderr).startswith(f"error: {out} is in use by another vipkit process (pid {os.getpid()} ")
    assert not out.exists()  # the lock made the folder and took it away again: nothing was written


def test_a_bug_is_one_paragraph_with_exit_code_1_and_debug_shows_the_traceback(tmp_path):
    """An exception vipkit does not expect (here: made to happen inside load_recipe) is reported, not dumped."""
    code = (
        "import sys\nimport vipkit.recipe\n"
        "def broken(*args, **kwargs):\n    raise ZeroDivisionError('division by zero')\n"
        "vipkit.recipe.load_recipe = broken\nfrom vipkit.cli import main\n"
        f"sys.argv = ['vipkit', 'validate', {MICRO_RECIPE!r}]\nmain()\n"
    )
    for debug in ("", "1"):
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "VIPKIT_DEBUG": debug}
        )
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(
            "error: internal error: ZeroDivisionError: division by zero (raised at <string>:4 in broken)"
        )
        assert "please report it" in last and "--debug" in last
        assert ("Traceback" in result.stderr) == bool(debug)
