import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_vipkit

import vipkit
from vipkit.errors import VipkitError
from vipkit.plugins import DEFAULT_PLUGINS, discover_plugins, load_plugins
from vipkit.registry import Registry

ROOT = Path(__file__).parents[1]
IN_TREE_COMPONENTS = {
    "vipkit_animatediff": {"models": ["animatediff"]},
    "vipkit_clip": {"rewards": ["clip"]},
    "vipkit_cogvideox": {"models": ["cogvideox"]},
    "vipkit_losses": {"losses": ["redpo", "sft", "kd"]},
    "vipkit_ltx": {"models": ["ltx-video"]},
    "vipkit_shapes": {"rewards": ["shapes", "shapes-smoothness"]},
    "vipkit_strategies": {
        "scorers": ["reward-drop", "param-count", "prediction-drop", "two-pass"],
        "pruners": ["block"],
        "curators": ["degraded-dimensions"],
    },
    "vipkit_vbench": {"rewards": ["vbench"]},
    "vipkit_videocrafter2": {"models": ["videocrafter2"]},
    "vipkit_videoscore": {"rewards": ["videoscore"]},
    "vipkit_wan": {"models": ["wan"]},
    "vipkit_width": {"pruners": ["width"]},
}
REGISTER_AND_VALIDATE = """
import json, sys
import vipkit.cli
from vipkit.plugins import load_plugins
from vipkit.recipe import load_recipe

errors = [info.error for info in load_plugins().infos if info.error]
for path in sys.argv[1:]:
    load_recipe(path)
print(json.dumps({"errors": errors, "heavy": [name for name in ("torch", "diffusers", "transformers") if name in sys.modules]}))
"""


def test_in_tree_plugins_register_every_component():
    plugins = load_plugins()
    assert all(info.error is None for info in plugins.infos), [i.error for i in plugins.infos if i.error]
    assert plugins.registry("models").names() == ["animatediff", "cogvideox", "ltx-video", "videocrafter2", "wan"]
    assert "clip" in plugins.registry("rewards").names()
    assert {"redpo", "sft", "kd"} <= set(plugins.registry("losses").names())
    assert "reward-drop" in plugins.registry("scorers").names()
    assert "block" in plugins.registry("pruners").names()
    assert "degraded-dimensions" in plugins.registry("curators").names()


def test_registering_and_validating_every_shipped_recipe_import_no_heavy_library():
    """`vipkit plugins` and `vipkit validate` answer in well under 2 s only while no plugin imports torch,
    diffusers or transformers when it registers (importing them costs ~15 s on a cold 2-core machine)."""
    recipes = sorted(str(path) for path in (ROOT / "recipes").glob("*.toml"))
    result = subprocess.run(
        [sys.executable, "-c", REGISTER_AND_VALIDATE, *recipes], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == {"errors": [], "heavy": []}


def test_vipkit_plugins_lists_every_in_tree_component():
    result = run_vipkit("plugins", "--json", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    listed = {info["name"]: info["components"] for info in json.loads(result.stdout)}
    assert listed == IN_TREE_COMPONENTS  # and nothing else: the test session loads no entry-point plugin


def test_the_test_session_loads_no_entry_point_plugin():
    assert all(info.source == "in-tree" for info in load_plugins().infos)


def test_a_plugin_calling_sys_exit_at_import_is_reported_not_fatal(tmp_path, monkeypatch):
    (tmp_path / "vipkit_exits_at_import.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = discover_plugins((*DEFAULT_PLUGINS, "vipkit_exits_at_import"), include_entry_points=False)
    broken = [info for info in plugins.infos if info.error]
    assert [info.name for info in broken] == ["vipkit_exits_at_import"]
    assert broken[0].error == "called sys.exit(3) while loading; a plugin must raise an exception instead"
    assert "animatediff" in plugins.registry("models")  # the others still load


def test_broken_plugin_is_reported_not_fatal():
    plugins = discover_plugins((*DEFAULT_PLUGINS, "vipkit_no_such_plugin"), include_entry_points=False)
    broken = [info for info in plugins.infos if info.error]
    assert [info.name for info in broken] == ["vipkit_no_such_plugin"]
    assert "ModuleNotFoundError" in broken[0].error
    assert "redpo" in plugins.registry("losses")


def test_plugin_defined_in_a_test_registers_and_unregisters():
    class Brightness(vipkit.RewardModel):
        name = "brightness"
        dimensions = ("brightness",)

        def score(self, videos, prompts):
            if len(prompts) != len(videos):
                raise ValueError(f"{len(videos)} videos but {len(prompts)} prompts")
            return {"brightness": videos.mean(dim=(1, 2, 3, 4))}

    class Plugin:
        __name__ = "brightness_plugin"

        @vipkit.hookimpl
        def register_rewards(self, register):
            register(Brightness)

    plugins = load_plugins()
    info = plugins.add(Plugin(), name="brightness_plugin")
    try:
        assert info.components == {"rewards": ["brightness"]}
        assert plugins.registry("rewards").get("brightness") is Brightness
        from vipkit.testing import check_reward, sample_videos

        scores = check_reward(Brightness)
        assert scores["brightness"].tolist() == pytest.approx(sample_videos(2).mean(dim=(1, 2, 3, 4)).tolist())
    finally:
        plugins.remove("brightness_plugin")
    assert "brightness" not in plugins.registry("rewards")


def test_registry_rejects_duplicates_and_non_components():
    registry = Registry("rewards", vipkit.RewardModel)

    class A(vipkit.RewardModel):
        name = "a"
        dimensions = ("x",)

        def score(self, videos, prompts):
            return {}

    registry.register(A, source="one")
    with pytest.raises(ValueError, match="already registered by one"):
        registry.register(A, source="two")
    with pytest.raises(TypeError, match="not a RewardModel"):
        registry.register(int, source="two")
    with pytest.raises(VipkitError, match="Did you mean 'a'"):
        registry.get("aa")


def test_check_reward_catches_a_broken_reward():
    from vipkit.testing import check_reward

    class Wrong(vipkit.RewardModel):
        name = "wrong"
        dimensions = ("x", "y")

        def score(self, videos, prompts):
            return {"x": videos.mean(dim=(1, 2, 3, 4))}

    with pytest.raises(AssertionError, match="declared dimensions"):
        check_reward(Wrong)
