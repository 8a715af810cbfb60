"""Shared fixtures: CPU threads pinned, no network access and no entry-point plugins for any test."""

import os
import signal

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# A plugin installed on this machine must not change test results: only the in-tree ones load, here and
# in every subprocess (they inherit the environment). A test that needs one sets VIPKIT_PLUGINS itself.
os.environ["VIPKIT_PLUGINS"] = ""
# A shell without job control starts background commands (`cmd &`, nohup, some CI wrappers) with SIGINT ignored, and
# every process they start inherits that, so the vipkit processes the tests Ctrl-C would not hear it. Heard here,
# SIGINT reaches them as in a terminal (a handler, unlike SIG_IGN, is reset to the default in a child).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Test models are tiny: one thread is as fast, and two spinning threads slow down ~50x when
    another process shares the two cores."""
    import torch

    torch.set_num_threads(1)


MICRO_RECIPE = os.path.join(os.path.dirname(__file__), "recipes", "micro_vip.toml")
"""The smallest whole V.I.P. run (2 stages, checkpoint every step): kill/resume and multi-process tests."""


def run_vipkit(*args: str, launcher: tuple[str, ...] = (), env: dict[str, str] | None = None, timeout: int = 600):
    """``python -m vipkit ...`` (optionally under a launcher such as torchrun) in a real subprocess, one thread each."""
    import subprocess
    import sys

    command = [sys.executable, *launcher, "-m", "vipkit", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )


def rank_errors(result) -> str:
    """What each rank of a torchrun launch printed last: torchrun's own report would hide a crashed rank's traceback."""
    ranks: dict[str, list[str]] = {}
    for line in result.stderr.splitlines():
        if line.startswith("[rank") and "]:" in line:
            ranks.setdefault(line[: line.index("]:") + 1], []).append(line)
    shown = ["\n".join(lines[-30:]) for lines in ranks.values()]
    return "\n".join(shown) + "\n--- end of stderr ---\n" + result.stderr[-1500:]


@pytest.fixture(scope="session")
def micro_reference(tmp_path_factory):
    """An uninterrupted one-process run of the micro recipe, made once per test session."""
    out = tmp_path_factory.mktemp("micro") / "reference"
    result = run_vipkit("compress", "--recipe", MICRO_RECIPE, "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out
