"""train.log_with: a real run's TensorBoard events hold exactly metrics.jsonl, once per global step, also after a
kill and resume; a tracker that is not installed is a recipe error before any work."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import MICRO_RECIPE, run_vipkit

from vipkit.curves import global_steps, read_metrics
from vipkit.recipe import RecipeError, parse_recipe

TINY = (Path(__file__).parents[1] / "recipes" / "tiny_vip.toml").read_text()
TENSORBOARD = "train.log_with=tensorboard"


def tensorboard_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "trackers" / "vipkit"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_run_killed_and_resumed_logs_every_step_once_with_the_values_of_metrics_jsonl(tmp_path):
    out = tmp_path / "run"
    # micro: stage 1 trains 2 steps, stage 2 four; checkpoints after every step. The 4th checkpoint write is the
    # one after stage 2's step 1, which metrics.jsonl and TensorBoard already hold: the resumed run redoes it.
    killed = run_vipkit(
        "compress", "--recipe", MICRO_RECIPE, "--out", str(out), "--set", TENSORBOARD,
        env={"VIPKIT_TEST_KILL_AT": "checkpoint_write:4"},
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert [step for step, _ in tensorboard_scalars(out)["loss"]] == [0, 1, 2, 3]
    resumed = run_vipkit("compress", "--recipe", MICRO_RECIPE, "--out", str(out), "--set", TENSORBOARD)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from the checkpoint at step 1" in resumed.stderr

    records = read_metrics(out / "metrics.jsonl")
    steps = global_steps(records)
    assert [(r["stage"], r["step"]) for r in records] == [(1, 0), (1, 1), *((2, s) for s in range(4))]
    assert steps == list(range(6))  # stage 2 goes on where stage 1 ended
    scalars = tensorboard_scalars(out)
    assert {"loss", "lr", "epoch", "stage", "grad_norm", "redpo/dpo", "redpo/sft"} <= set(scalars)
    assert set(scalars) == {key for r in records for key in r} - {"step"}
    for tag, logged in scalars.items():
        expected = [(step, r[tag]) for r, step in zip(records, steps, strict=True) if tag in r]
        assert [step for step, _ in logged] == [step for step, _ in expected], tag  # each step once, in order
        assert [value for _, value in logged] == pytest.approx([v for _, v in expected], rel=1e-6, abs=1e-6), tag
    assert len(list((out / "trackers" / "vipkit").glob("events.out.tfevents.*"))) == 3  # per stage and process
    assert "log_with" not in json.loads((out / "resolved.json").read_text())["recipe"]["train"]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_a_tracker_that_is_not_installed_fails_validation_with_the_pip_command(tmp_path):
    with pytest.raises(RecipeError) as error:
        parse_recipe(TINY + 'log_with = "wandb"\n')
    assert "train.log_with: 'wandb' is not installed" in str(error.value) and "`pip install wandb`" in str(error.value)
    out = tmp_path / "run"
    result = run_vipkit(
        "compress", "--recipe", "recipes/tiny_vip.toml", "--out", str(out), "--set", "train.log_with=wandb"
    )
    assert result.returncode == 2 and "pip install wandb" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr and not out.exists()  # before any work


def test_log_with_names_a_known_tracker_and_leaves_the_fingerprint_alone():
    with pytest.raises(RecipeError, match="train.log_with: Input should be 'tensorboard' or 'wandb'"):
        parse_recipe(TINY + 'log_with = "mlflow"\n')
    plain, watched = parse_recipe(TINY), parse_recipe(TINY + 'log_with = "tensorboard"\n')
    assert watched.train.log_with == "tensorboard" and plain.train.log_with is None
    assert watched.fingerprint() == plain.fingerprint()  # a run may resume with a tracker turned on or off
