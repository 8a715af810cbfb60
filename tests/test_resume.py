"""Kill -9 a real ``vipkit compress`` at chosen and at random moments, re-run it, get the uninterrupted model.

Fault points (``VIPKIT_TEST_KILL_AT=<point>:<n>``) reach the same moment on every machine; one more
test kills at a random wall-clock time. After every kill nothing already finished may change, and
the final model must equal the uninterrupted run's bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import MICRO_RECIPE, run_vipkit
from safetensors.torch import load_file

KILLED = -signal.SIGKILL


def tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    found = {}
    for path in sorted(model_dir.rglob("*.safetensors")):
        found |= {f"{path.relative_to(model_dir)}:{k}": v for k, v in load_file(str(path)).items()}
    return found


def assert_same_model(run: Path, reference: Path) -> None:
    for model in ("model", "stages/stage-001/model", "stages/stage-002/model"):
        ours, theirs = tensors(run / model), tensors(reference / model)
        assert ours.keys() == theirs.keys() and len(ours) > 10, model
        different = [key for key, value in theirs.items() if not torch.equal(ours[key], value)]
        assert not different, f"{model}: {len(different)} tensors differ, e.g. {different[:3]}"
    ours, theirs = (json.loads((d / "results.json").read_text())["final"] for d in (run, reference))
    assert ours["removed_blocks"] == theirs["removed_blocks"] and ours["parameters"] == theirs["parameters"]


def finished_files(run: Path) -> dict[str, str]:
    """Hash of every file of the finished (renamed-into-place) stage and pair folders."""
    stages = [d for d in (run / "stages").glob("stage-*") if not d.name.startswith(".")]
    return {
        str(f.relative_to(run)): hashlib.sha256(f.read_bytes()).hexdigest()
        for d in stages
        for f in sorted(d.rglob("*"))
        if f.is_file()
    }


def compress(out: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    return run_vipkit(
        "compress", "--recipe", MICRO_RECIPE, "--out", str(out), env={"VIPKIT_TEST_KILL_AT": kill_at or ""}
    )


def test_kills_at_every_kind_of_moment_then_resume_gives_the_uninterrupted_model(micro_reference, tmp_path):
    out = tmp_path / "run"
    chain = [
        ("score:5", lambda: not (out / "stages" / "stage-001.pairs").exists()),  # inside stage 1's importance scoring
        (
            "curate:1",
            lambda: not (out / "stages" / "stage-001.pairs").exists(),
        ),  # teacher videos cached, pairs not stored
        ("train_step:2", lambda: [p.name for p in (out / "checkpoints").iterdir()] == ["stage-001-step-00000001"]),
        # resumes at stage 1 step 1, finishes stage 1, dies while writing stage 2's second checkpoint
        (
            "checkpoint_write:3",
            lambda: (
                (out / "checkpoints" / ".stage-002-step-00000002.staging").is_dir()
                and (out / "stages" / "stage-001" / "stage.json").exists()
            ),
        ),
        # resumes at stage 2 step 1, trains to the end, dies generating the distilled evaluation videos
        (
            "generate:1",
            lambda: (
                (out / "checkpoints" / "stage-002-step-00000004" / "manifest.json").exists()
                and not (out / "checkpoints" / ".stage-002-step-00000002.staging").exists()
                and not (out / "stages" / "stage-002").exists()
            ),
        ),
    ]
    finished: dict[str, str] = {}
    for kill_at, left_as_expected in chain:
        result = compress(out, kill_at)
        assert result.returncode == KILLED, f"{kill_at}: exit {result.returncode}\n{result.stderr[-2000:]}"
        assert left_as_expected(), (
            f"after the kill at {kill_at}: {sorted(str(p.relative_to(out)) for p in out.rglob('*') if 'cache' not in str(p))}"
        )
        now = finished_files(out)
        assert {k: now.get(k) for k in finished} == finished, f"the kill at {kill_at} changed finished work"
        finished = now
    result = compress(out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming after stage 1" in result.stderr and "resumed from the checkpoint at step 4" in result.stderr
    assert {k: finished_files(out).get(k) for k in finished} == finished
    assert_same_model(out, micro_reference)
    assert len(list((out / "checkpoints").iterdir())) == 2  # keep_checkpoints
    # steps redone after a kill are logged once: the same lines, the same losses as the uninterrupted run
    ours, theirs = (
        [(r["stage"], r["step"], r["loss"]) for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]
        for d in (out, micro_reference)
    )
    assert ours == theirs and len(theirs) == 6


def test_kill_at_a_random_time_then_resume_gives_the_uninterrupted_model(micro_reference, tmp_path):
    out = tmp_path / "run"
    seed = random.randrange(1_000_000)
    delay = random.Random(seed).uniform(3.0, 30.0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "vipkit", "compress", "--recipe", MICRO_RECIPE, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=Path(__file__).parents[1],
    )
    deadline = time.monotonic() + delay
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()
    result = compress(out)
    assert result.returncode == 0, f"random kill seed {seed} ({delay:.2f} s): {result.stderr[-3000:]}"
    assert_same_model(out, micro_reference)


def test_metrics_of_steps_redone_after_a_kill_and_a_torn_line_are_dropped_once(tmp_path):
    from vipkit.rundir import RunDirectory

    killed = [{"stage": 1, "step": s, "loss": 1.0} for s in range(2)] + [
        {"stage": 2, "step": s, "loss": 2.0} for s in range(4)
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in killed) + '{"stage": 2, "st')
    run = RunDirectory(tmp_path)
    run.log_metrics({"stage": 2, "step": 2, "loss": 3.0})  # resumed from the checkpoint after step 2
    run.log_metrics({"stage": 2, "step": 3, "loss": 4.0})
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"], r["loss"]) for r in lines] == [
        (1, 0, 1.0),
        (1, 1, 1.0),
        (2, 0, 2.0),
        (2, 1, 2.0),
        (2, 2, 3.0),
        (2, 3, 4.0),
    ]
