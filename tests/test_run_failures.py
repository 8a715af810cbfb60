"""Runs that fail half-way stop with exit code 2 and a clear message, and keep every finished stage.

The broken reward is a real third-party plugin: a package with an entry point, found through
``importlib.metadata`` on ``PYTHONPATH`` and admitted by ``VIPKIT_PLUGINS``, in real subprocesses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vipkit.engine import compress
from vipkit.errors import VipkitError
from vipkit.recipe import parse_recipe
from vipkit.saved_model import verify_saved_model
from vipkit_animatediff.persistence import PRUNED_UNET_WEIGHTS

ROOT = Path(__file__).parents[1]
UNET = Path("model") / "unet" / PRUNED_UNET_WEIGHTS  # a stage's model is pruned

FLAKY_PLUGIN = '''
"""A reward that turns NaN once the file named by FLAKY_NAN_AFTER exists (e.g. stage 1's checkpoint)."""
import os

import vipkit


class Flaky(vipkit.RewardModel):
    name = "flaky"
    dimensions = ("brightness",)
    value_ranges = {"brightness": (0.0, 1.0)}

    def score(self, videos, prompts):
        brightness = videos.mean(dim=(1, 2, 3, 4))
        marker = os.environ.get("FLAKY_NAN_AFTER")
        if marker and os.path.exists(marker):
            brightness[-1] = float("nan")
        return {"brightness": brightness}


@vipkit.hookimpl
def register_rewards(register):
    register(Flaky)
'''

RECIPE = """
seed = 0
[model]
name = "animatediff"
preset = "tiny"
num_inference_steps = 2
num_frames = 4
[reward]
name = "{reward}"
{reward_options}
[prompts]
train = ["a red ball rolling left", "a blue square moving up"]
eval = ["a white star spinning"]
[schedule]
stages = {stages}
[scorer]
name = "param-count"
[pruner]
name = "block"
blocks_per_stage = 1
[curator]
name = "degraded-dimensions"
margin = -1.0
tau = -1.0
[[losses]]
name = "redpo"
[train]
epochs = 2
batch_size = 1
learning_rate = {learning_rate}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """An installed distribution `vipkit-flaky` (package + dist-info with its entry point), as pip lays it out."""
    site = tmp_path_factory.mktemp("site")
    (site / "vipkit_flaky").mkdir()
    (site / "vipkit_flaky" / "__init__.py").write_text(textwrap.dedent(FLAKY_PLUGIN))
    info = site / "vipkit_flaky-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vipkit-flaky\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vipkit]\nflaky = vipkit_flaky\n")
    return site


def vipkit(args: list[str], cwd: Path, site: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(site), "VIPKIT_PLUGINS": "vipkit-flaky", **env}
    environment.pop("FLAKY_NAN_AFTER", None)
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "vipkit", *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=900
    )


def digests(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def failed_in_stage_2(site, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """A 2-stage run whose reward returns NaN as soon as stage 1 is finished."""
    folder = tmp_path_factory.mktemp("flaky")
    recipe = folder / "recipe.toml"
    recipe.write_text(RECIPE.format(reward="flaky", reward_options="", stages=2, learning_rate=1e-4))
    out = folder / "run"
    result = vipkit(
        ["compress", "--recipe", str(recipe), "--out", str(out)],
        folder,
        site,
        FLAKY_NAN_AFTER=str(out / "stages" / "stage-001" / "stage.json"),
    )
    return recipe, out, result


def test_nan_reward_stops_naming_reward_dimension_prompt_and_keeps_stage_1(failed_in_stage_2):
    _, out, result = failed_in_stage_2
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for part in (
        "stage 2:",
        "reward 'flaky' (plugin vipkit-flaky:flaky)",
        "non-finite score (nan)",
        "dimension 'brightness'",
        "prompt 'a white star spinning'",
        f"Kept in {out}: stage 1.",
    ):
        assert part in message, (part, message[-1500:])
    assert (out / "stages" / "stage-001" / "stage.json").exists() and not (out / "stages" / "stage-002").exists()
    verify_saved_model(out / "stages" / "stage-001" / "model")  # every file matches its digest


def test_rerun_with_a_fixed_reward_resumes_from_stage_1(failed_in_stage_2, site, tmp_path):
    recipe, failed, _ = failed_in_stage_2
    out = Path(shutil.copytree(failed, tmp_path / "run"))
    stage_1 = digests(out / "stages" / "stage-001")
    result = vipkit(["compress", "--recipe", str(recipe), "--out", str(out)], tmp_path, site)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming after stage 1" in result.stderr
    assert digests(out / "stages" / "stage-001") == stage_1
    assert (out / "stages" / "stage-002" / "stage.json").exists() and (out / "results.json").exists()


def test_damaged_newest_checkpoint_is_refused_and_left_in_place(failed_in_stage_2, site, tmp_path):
    recipe, failed, _ = failed_in_stage_2
    out = Path(shutil.copytree(failed, tmp_path / "run"))
    weights = out / "stages" / "stage-001" / UNET
    weights.write_bytes(weights.read_bytes()[:4096])
    result = vipkit(["compress", "--recipe", str(recipe), "--out", str(out)], tmp_path, site)
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for part in (
        "cannot resume: the checkpoint of stage 1 is damaged",
        str(weights),
        "is corrupt",
        f"delete the folder {out / 'stages' / 'stage-001'}",
        "from the teacher",
    ):
        assert part in message, (part, message[-1500:])
    assert weights.stat().st_size == 4096 and (out / "stages" / "stage-001" / "stage.json").exists()  # nothing deleted


def test_diverging_loss_stops_naming_stage_and_metrics_and_keeps_the_pairs(tmp_path):
    text = RECIPE.format(reward="clip", reward_options='preset = "tiny"', stages=1, learning_rate=1e4)
    out = tmp_path / "run"
    with pytest.raises(VipkitError) as info:
        compress(parse_recipe(text, "diverging.toml"), text, out, log=lambda line: None)
    message = str(info.value)
    for part in (
        "stage 1: training diverged: the training loss became nan",
        "redpo/",
        "Lower train.learning_rate (now 10000)",
        f"Kept in {out}: no finished stage and stage 1's pruning decision and pairs.",
    ):
        assert part in message, (part, message)
    assert isinstance(info.value.__cause__, FloatingPointError)
    assert (out / "stages" / "stage-001.pairs" / "pairs.safetensors").exists() and not (
        out / "stages" / "stage-001"
    ).exists()
