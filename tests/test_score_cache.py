"""The score cache: a reward never scores the same (video, prompt) twice, in one run or after a resume."""

import hashlib
import json
import shutil
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from pydantic import Field

import vipkit
from vipkit.engine import compress
from vipkit.plugins import discover_plugins, load_plugins
from vipkit.recipe import parse_recipe
from vipkit.reward_stack import reward_stack
from vipkit.score_cache import CachedReward
from vipkit.testing import sample_videos


def fingerprint(video: torch.Tensor, prompt: str) -> str:
    return hashlib.sha256(video.numpy().tobytes() + prompt.encode()).hexdigest()


class Counting(vipkit.RewardModel):
    """Brightness and contrast; records every (video, prompt) it is asked to score."""

    name = "counting"
    dimensions = ("brightness", "contrast")
    scored: ClassVar[list[str]] = []

    class Config(vipkit.Config):
        gain: float = Field(1.0, gt=0, description="multiplies the brightness")

    def score(self, videos, prompts):
        Counting.scored.extend(fingerprint(video, prompt) for video, prompt in zip(videos, prompts, strict=True))
        brightness = videos.mean(dim=(1, 2, 3, 4)) * self.config.gain + torch.tensor([len(p) / 7 for p in prompts])
        return {"brightness": brightness, "contrast": videos.double().std(dim=(1, 2, 3, 4))}  # float64 on purpose


@pytest.fixture(autouse=True)
def _fresh_count():
    Counting.scored.clear()


PROMPTS = ["a red square moving left", "a blue circle moving up", "a green star spinning"]


def test_cached_scores_equal_fresh_scores_bit_for_bit_and_are_computed_once(tmp_path):
    videos = sample_videos(3)
    fresh = Counting().score(videos, PROMPTS)
    Counting.scored.clear()

    cached = CachedReward(Counting(), tmp_path)
    first = cached.score(videos, PROMPTS)
    again = cached.score(videos[[2, 0]], [PROMPTS[2], PROMPTS[0]])
    assert len(Counting.scored) == 3 and (cached.misses, cached.hits) == (3, 2)
    for dim in Counting.dimensions:
        assert first[dim].dtype == fresh[dim].dtype and torch.equal(first[dim], fresh[dim])
        assert torch.equal(again[dim], fresh[dim][[2, 0]])

    from_disk = CachedReward(Counting(), tmp_path)  # a new process after a resume: memory empty, disk full
    reread = from_disk.score(videos, PROMPTS)
    assert len(Counting.scored) == 3 and (from_disk.misses, from_disk.hits) == (0, 3)
    for dim in Counting.dimensions:
        assert reread[dim].dtype == fresh[dim].dtype and torch.equal(reread[dim], fresh[dim])
    stored = json.loads(next(p for p in (tmp_path / cached.key).glob("*.json") if p.name != "reward.json").read_text())
    assert set(stored["scores"]) == {"brightness", "contrast"} and stored["dtypes"] == {
        "brightness": "float32",
        "contrast": "float64",
    }
    assert json.loads((tmp_path / cached.key / "reward.json").read_text())["config"] == {"gain": 1.0}


def test_a_damaged_cache_entry_is_scored_again(tmp_path):
    videos = sample_videos(3)
    expected = CachedReward(Counting(), tmp_path).score(videos, PROMPTS)
    entries = sorted(
        p for p in (tmp_path / CachedReward(Counting(), tmp_path).key).glob("*.json") if p.name != "reward.json"
    )
    entries[0].write_text('{"scores": {"brightness": [')  # torn
    entries[1].write_text('{"scores": {}, "dtypes": {}}')  # a dimension missing
    Counting.scored.clear()
    cached = CachedReward(Counting(), tmp_path)
    again = cached.score(videos, PROMPTS)
    assert (cached.misses, cached.hits) == (2, 1) and len(Counting.scored) == 2
    for dim in Counting.dimensions:
        assert torch.equal(again[dim], expected[dim])
    assert json.loads(entries[0].read_text())["scores"]  # rewritten whole


def test_other_config_other_prompt_or_changed_pixel_misses(tmp_path):
    videos = sample_videos(2)
    CachedReward(Counting(), tmp_path).score(videos, PROMPTS[:2])
    other_config = CachedReward(Counting.from_options({"gain": 2.0}), tmp_path)
    doubled = other_config.score(videos, PROMPTS[:2])
    assert other_config.misses == 2 and len(Counting.scored) == 4
    assert len(list(tmp_path.iterdir())) == 2  # one folder per (reward, config)
    torch.testing.assert_close(
        doubled["brightness"], Counting.from_options({"gain": 2.0}).score(videos, PROMPTS[:2])["brightness"]
    )

    same = CachedReward(Counting(), tmp_path)
    changed = videos.clone()
    changed[1, 0, 0, 0, 0] += 1e-6
    same.score(changed, [PROMPTS[1], PROMPTS[1]])  # video 0 with another prompt, video 1 with one pixel changed
    assert same.misses == 2


def test_a_video_repeated_in_one_batch_is_scored_once():
    videos = sample_videos(2)
    cached = CachedReward(Counting())  # memory only
    scores = cached.score(videos[[0, 1, 0]], [PROMPTS[0], PROMPTS[1], PROMPTS[0]])
    assert len(Counting.scored) == 2 and torch.equal(scores["brightness"][0], scores["brightness"][2])
    with pytest.raises(ValueError, match="3 videos but 2 prompts"):
        cached.score(videos[[0, 1, 0]], PROMPTS[:2])


def test_a_combined_reward_caches_each_part_on_its_own(tmp_path):
    from vipkit.combined_reward import CombinedReward

    plugins = discover_plugins((), include_entry_points=False)
    plugins.add(CountingPlugin(), name="counting_plugin")
    videos = sample_videos(2)
    combined = reward_stack(
        CombinedReward({"a": Counting(), "b": Counting.from_options({"gain": 3.0})}), plugins, tmp_path
    )
    scores = combined.score(videos, PROMPTS[:2])
    assert combined.dimensions == ("a.brightness", "a.contrast", "b.brightness", "b.contrast")
    assert len(Counting.scored) == 4
    changed_b = reward_stack(
        CombinedReward({"a": Counting(), "b": Counting.from_options({"gain": 4.0})}), plugins, tmp_path
    )
    rescored = changed_b.score(videos, PROMPTS[:2])
    assert len(Counting.scored) == 6  # only part b was scored again
    assert torch.equal(rescored["a.brightness"], scores["a.brightness"])


def test_a_new_version_of_the_rewards_plugin_rescores_instead_of_reusing_old_scores(tmp_path):
    videos = sample_videos(2)
    CachedReward(Counting(), tmp_path, provider="counting-plugin 1.0").score(videos, PROMPTS[:2])
    same = CachedReward(Counting(), tmp_path, provider="counting-plugin 1.0")
    same.score(videos, PROMPTS[:2])
    upgraded = CachedReward(Counting(), tmp_path, provider="counting-plugin 1.1")
    upgraded.score(videos, PROMPTS[:2])
    assert (same.hits, same.misses, upgraded.hits, upgraded.misses) == (2, 0, 0, 2)
    assert len(Counting.scored) == 4
    assert sorted(json.loads((d / "reward.json").read_text())["provider"] for d in tmp_path.iterdir()) == [
        "counting-plugin 1.0",
        "counting-plugin 1.1",
    ]


RECIPE = """
seed = 0
[model]
name = "animatediff"
preset = "tiny"
num_inference_steps = 2
num_frames = 4
height = 16
width = 16
[reward]
name = "counting"
[prompts]
train = ["a red ball rolling left", "a blue square moving up"]
eval = ["a white star spinning"]
[schedule]
stages = 2
[scorer]
name = "reward-drop"
[pruner]
name = "block"
blocks_per_stage = 1
[curator]
name = "degraded-dimensions"
margin = -1.0
tau = -1.0
[[losses]]
name = "sft"
[train]
epochs = 1
batch_size = 2
learning_rate = 1e-4
"""


class CountingPlugin:
    __name__ = "counting_plugin"

    @vipkit.hookimpl
    def register_rewards(self, register):
        register(Counting)


def test_an_engine_run_and_its_resume_score_each_distinct_video_exactly_once(tmp_path):
    plugins = load_plugins()
    plugins.add(CountingPlugin(), name="counting_plugin")
    try:
        recipe = parse_recipe(RECIPE, plugins=plugins)
        out = tmp_path / "run"
        lines = []
        first = compress(recipe, RECIPE, out, log=lines.append)
        scored_first = list(Counting.scored)
        # Without the cache: the stage-1 baseline repeats the teacher's evaluation, each "pruned" summary
        # repeats a ranking evaluation, stage 2's baseline repeats stage 1's distilled summary, and the
        # teacher's training videos are scored again in stage 2.
        assert len(scored_first) == len(set(scored_first)), "a video was scored twice"
        # New videos per stage: one per candidate block, the student's training videos, and the distilled
        # student's evaluation if training changed it (the baseline and the pruned summary are cache hits).
        per_stage = [len(s["importance"]) + 2 + (s["train"]["steps"] > 0) for s in first["stages"]]
        assert len(scored_first) == 1 + 2 + sum(per_stage)  # + the teacher's evaluation and training videos
        # Answered from the cache per stage: the baseline, the pruned summary (if no training: the distilled
        # one too), and from stage 2 on the teacher's two training videos.
        hits = sum(2 + (s["train"]["steps"] == 0) for s in first["stages"]) + 2 * (len(first["stages"]) - 1)
        assert (
            lines[-1] == f"rewards: counting: {len(scored_first)} videos scored, {hits} answered from the score cache"
        )

        resumed = tmp_path / "resumed"
        shutil.copytree(out, resumed)
        for leftover in ("stages/stage-002", "stages/stage-002.pairs", "model"):
            shutil.rmtree(resumed / leftover)
        (resumed / "results.json").unlink()
        Counting.scored.clear()
        second = compress(recipe, RECIPE, resumed, log=lambda line: None)
        assert Counting.scored == []  # stage 2 regenerates bit-identical videos: every score comes from disk
        assert second["stages"][1]["distilled"]["scores"] == first["stages"][1]["distilled"]["scores"]
        assert second["teacher"]["scores"] == first["teacher"]["scores"]
        (folder,) = Path(resumed, "cache", "scores").iterdir()
        assert (
            json.loads((folder / "reward.json").read_text())["provider"] == "counting_plugin"
        )  # the plugin that registered it
        assert plugins.provider("rewards", "shapes") == f"vipkit_shapes {vipkit.__version__}"
    finally:
        plugins.remove("counting_plugin")


def _score_after(barrier, root: Path, failures) -> None:
    barrier.wait()
    try:
        CachedReward(Counting(), root).score(sample_videos(3), PROMPTS)
    except Exception as exc:  # reported to the parent, which fails the test with it
        failures.put(repr(exc))


def test_ranks_storing_into_one_fresh_cache_folder_at_once_do_not_collide(tmp_path):
    """Every rank stores its share of the scores (some the same videos) into the run's cache folder."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    failures = context.Queue()
    for round_ in range(40):
        root = tmp_path / f"round-{round_}"
        barrier = context.Barrier(3)
        workers = [context.Process(target=_score_after, args=(barrier, root, failures)) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert [worker.exitcode for worker in workers] == [0, 0, 0]
        assert failures.empty(), failures.get()
        (folder,) = root.iterdir()
        assert len([p for p in folder.iterdir() if p.suffix == ".json"]) == 4 and not [
            p for p in folder.iterdir() if p.suffix != ".json"
        ]
        reread = CachedReward(Counting(), root)
        reread.score(sample_videos(3), PROMPTS)
        assert (reread.hits, reread.misses) == (3, 0)
