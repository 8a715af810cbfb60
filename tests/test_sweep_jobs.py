"""vipkit sweep --jobs: runs at the same time in processes of their own, through the real CLI; Ctrl-C to the sweep
stops every run cleanly, the next sweep resumes them, a failing run fails alone, and the statistics are those of the
runs' own results.json."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MICRO_RECIPE
from test_run_faults import ROOT, paragraph, wait_until
from test_sweep import sweep_file


def sweep(file: Path, out: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "vipkit", "sweep", str(file), "--out", str(out), "--seeds", "1", "--jobs", "2"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            cwd=ROOT,
        )


def test_jobs_run_side_by_side_stop_together_on_ctrl_c_and_resume(tmp_path):
    file, out, log = sweep_file(tmp_path), tmp_path / "sweep", tmp_path / "first.log"
    first = sweep(file, out, log)
    both_ranking = ("[redpo seed 0] stage 1: ranking", "[sft seed 0] stage 1: ranking")
    wait_until(lambda: all(line in log.read_text() for line in both_ranking), first, log, "two runs under way")
    first.send_signal(signal.SIGINT)  # to the sweep only: it must stop its runs itself
    assert first.wait(120) == 130, log.read_text()[-3000:]
    message = paragraph(log.read_text(), "interrupted by Ctrl-C (SIGINT): stopped cleanly.")
    assert "2 runs at a time, each in a process of its own with 1 torch thread(s)" in log.read_text()
    assert message.endswith("finished runs are reused, the others resume.")
    stopped = json.loads((out / "sweep.json").read_text())["runs"]
    assert [run["status"] for run in stopped] == ["pending"] * 3

    log = tmp_path / "second.log"
    second = sweep(file, out, log)
    assert second.wait(600) == 3, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text and "0 finished earlier (reused), 3 to run or resume" in text
    assert "run 1/3: redpo seed 0: resuming in" in text and "run 2/3: sft seed 0: resuming in" in text
    # side by side: the second run started before the first one finished
    assert text.index("run 2/3: sft seed 0: resuming in") < text.index("run 1/3: redpo seed 0: done in")
    assert "1 of 3 runs failed (broken seed 0;" in text

    record = json.loads((out / "sweep.json").read_text())
    assert [run["status"] for run in record["runs"]] == ["finished", "finished", "failed"]
    assert "model 'animatediff' has no block of kind 'no_such_kind'" in record["runs"][2]["error"]
    for variant in ("redpo", "sft"):
        results = json.loads((out / f"runs/{variant}/seed-0/results.json").read_text())
        final = results["stages"][-1]["distilled"]
        assert record["statistics"][variant]["heldout:objective"]["mean"] == pytest.approx(
            final["heldout"]["objective"], abs=1e-12
        )
        assert record["statistics"][variant]["eval:objective"]["mean"] == pytest.approx(final["objective"], abs=1e-12)


def test_jobs_must_be_a_positive_count(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vipkit",
            "sweep",
            "--recipe",
            MICRO_RECIPE,
            "--jobs",
            "0",
            "--out",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2 and "--jobs" in result.stderr and not (tmp_path / "s").exists()


def test_a_run_whose_process_dies_fails_alone_with_what_happened(tmp_path):
    file, out = sweep_file(tmp_path), tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "vipkit", "sweep", str(file), "--out", str(out), "--seeds", "1", "--jobs", "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "VIPKIT_TEST_KILL_AT": "curate:1"},  # each run's process: SIGKILL
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr[-3000:]
    runs = json.loads((out / "sweep.json").read_text())["runs"]
    assert [run["status"] for run in runs] == ["failed"] * 3
    for run in runs[:2]:  # killed in curation, like a power cut: the sweep goes on and says so
        assert run["error"].startswith("the run's process was killed by signal 9 before it sent a result")
    assert "model 'animatediff' has no block of kind 'no_such_kind'" in runs[2]["error"]  # failed before curating
    assert (out / "runs/redpo/seed-0/resolved.json").exists()  # a started run, to resume
