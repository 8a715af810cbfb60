"""The example third-party plugin (examples/vipkit-sharpness) installed for real with pip and used by the CLI.

pip installs it into a temporary folder (no network: no dependencies, the venv's setuptools builds it);
every check then runs in a subprocess with that folder on PYTHONPATH, so vipkit discovers the plugin
through its entry point exactly as it would after ``pip install vipkit-sharpness``.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "vipkit-sharpness"


def run(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """The environment of a process in which vipkit-sharpness is pip-installed."""
    work = tmp_path_factory.mktemp("example")
    source = work / "source"
    shutil.copytree(
        EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )  # the build writes beside the sources
    target = work / "site"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = run(
        "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--target", str(target), str(source), env=env
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return {
        **env,
        "PYTHONPATH": str(target),
        "VIPKIT_PLUGINS": "vipkit-sharpness",
    }  # the tests load no entry point unless named


def test_vipkit_plugins_lists_it_as_an_entry_point_plugin(installed):
    result = run("-m", "vipkit", "plugins", "--json", env=installed)
    assert result.returncode == 0, result.stderr[-2000:]
    plugin = next(info for info in json.loads(result.stdout) if info["source"] == "entry point")
    assert plugin == {
        "name": "vipkit-sharpness:sharpness",
        "source": "entry point",
        "version": "0.1.0",
        "components": {"rewards": ["sharpness"]},
        "error": None,
    }


def test_its_own_tests_pass_against_the_installed_copy(installed, tmp_path):
    shutil.copytree(EXAMPLE / "tests", tmp_path / "tests")  # outside the sources: the import comes from the install
    result = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", env=installed, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "6 passed" in result.stdout, result.stdout[-1000:]  # none skipped: the entry-point test ran too


def small_recipe() -> str:
    """recipes/tiny_vip.toml cut to 1 stage and 2 prompts, with the clip and sharpness rewards combined."""
    text = (ROOT / "recipes" / "tiny_vip.toml").read_text()
    text = text.replace("num_inference_steps = 4", "num_inference_steps = 2\nnum_frames = 4\nheight = 16\nwidth = 16")
    text = text.replace(
        '[reward]\nname = "clip"\npreset = "tiny"\n',
        (
            '[[rewards]]\nname = "clip"\npreset = "tiny"\n\n[[rewards]]\nname = "sharpness"\nas = "crisp"\n\n'
            '[objective]\nweights = { "crisp.sharpness" = 2.0, "clip.clip_score" = 1.0 }\n'
        ),
    )
    text = re.sub(r"train = \[[^\]]*\]", 'train = ["a red ball rolling left"]', text)
    text = text.replace(
        'eval = ["a red ball rolling left", "a white star spinning"]', 'eval = ["a white star spinning"]'
    )
    text = text.replace("stages = 2", "stages = 1").replace("epochs = 2", "epochs = 1")
    assert text.count("[[rewards]]") == 2 and "stages = 1" in text
    return text


def test_a_recipe_compresses_with_it_and_reports_its_dimensions(installed, tmp_path):
    recipe = tmp_path / "sharp.toml"
    recipe.write_text(small_recipe())
    result = run("-m", "vipkit", "compress", "--recipe", str(recipe), "--out", str(tmp_path / "run"), env=installed)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    dims = {"clip.clip_score", "clip.frame_consistency", "crisp.sharpness", "crisp.contrast"}
    assert set(results["teacher"]["scores"]) == dims
    assert set(results["stages"][0]["distilled"]["scores"]) == dims
    teacher = results["teacher"]["scores"]
    assert results["teacher"]["objective"] == pytest.approx(
        (2 * teacher["crisp.sharpness"] + teacher["clip.clip_score"]) / 3
    )
    assert all(0 <= teacher[d] <= 1 for d in ("crisp.sharpness", "crisp.contrast"))
    assert "| crisp.sharpness |" in result.stdout  # the printed results table has a column per combined dimension
    cached = {
        json.loads((folder / "reward.json").read_text())["reward"]
        for folder in (tmp_path / "run" / "cache" / "scores").iterdir()
    }
    assert cached == {"clip", "sharpness"}  # each part's scores cached on its own

    shipped = run("-m", "vipkit", "validate", str(EXAMPLE / "shapes_sharpness.toml"), env=installed)
    assert shipped.returncode == 0, shipped.stderr[-2000:]
