"""The videos a run keeps: 8-bit frames on disk that read back bit for bit, and no model state rendered twice."""

from __future__ import annotations

import hashlib
import json
import struct
from collections import Counter
from pathlib import Path

import torch
from conftest import MICRO_RECIPE

import vipkit
from vipkit import sharded
from vipkit.engine import compress
from vipkit.generation_cache import GenerationCache
from vipkit.media import eight_bit
from vipkit.pair_store import load_pairs, save_pairs
from vipkit.recipe import load_recipe
from vipkit.testing import tiny_model


def stored_dtypes(path: Path) -> dict[str, str]:
    """Each tensor's dtype as the safetensors header records it."""
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])
    return {name: entry["dtype"] for name, entry in header.items() if name != "__metadata__"}


def test_pairs_store_videos_as_uint8_and_read_back_what_the_run_holds(tmp_path):
    generator = torch.Generator().manual_seed(0)
    videos = eight_bit(torch.rand(2, 3, 4, 3, 16, 16, generator=generator))  # a run's videos: on the 8-bit grid
    latents = torch.randn(2, 3, 4, 4, 8, 8, generator=generator)
    pairs = vipkit.PairSet(["a", "b", "c"], [1, 2, 3], latents[0], latents[1], videos[0], videos[1], ["x"])
    save_pairs(pairs, tmp_path)
    assert stored_dtypes(tmp_path / "pairs.safetensors") == {
        "winner_latents": "F32",
        "loser_latents": "F32",
        "winner_videos": "U8",
        "loser_videos": "U8",
    }
    back = load_pairs(tmp_path)
    for name in ("winner_latents", "loser_latents", "winner_videos", "loser_videos"):
        assert torch.equal(getattr(back, name), getattr(pairs, name)), name  # training reads exactly the same
    # a quarter of the float32 bytes for the videos: 2 × 3 × 4 × 3 × 16 × 16 values, 1 byte each
    assert (tmp_path / "pairs.safetensors").stat().st_size < 2 * 3 * 4 * 3 * 16 * 16 + latents.numel() * 4 + 1024


def test_teacher_cache_reads_back_the_generated_videos_bit_for_bit(tmp_path):
    model = tiny_model("animatediff", height=16, width=16, num_frames=4, num_inference_steps=2)
    cache = GenerationCache(tmp_path, {"name": "tiny"})
    fresh = cache.generate(model, ["a red ball", "a blue cube"], [5, 6])
    assert torch.equal(fresh.videos, eight_bit(model.generate(["a red ball", "a blue cube"], [5, 6]).videos))
    again = cache.generate(model, ["a red ball", "a blue cube"], [5, 6])  # from disk now
    assert torch.equal(again.videos, fresh.videos) and torch.equal(again.latents, fresh.latents)
    assert {dtype for entry in tmp_path.glob("*.safetensors") for dtype in stored_dtypes(entry).values()} == {
        "U8",
        "F32",
    }


def weights_state(model: vipkit.VideoModel) -> tuple[str, tuple[str, ...]]:
    """What a model's videos depend on: a digest of its weights, and its removed blocks."""
    digest = hashlib.sha256()
    for tensor in model.denoiser().state_dict().values():
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest(), tuple(sorted(model.removed_blocks))


def test_a_run_renders_the_baseline_states_once(tmp_path, monkeypatch):
    """The importance scorer's baselines are the teacher's evaluation videos (stage 1) and the distilled student's
    (stage 2): the run reuses those instead of rendering the same model state again."""
    recipe = load_recipe(MICRO_RECIPE)
    rendered: list[tuple[str, tuple[str, ...]]] = []
    generate = sharded.generate

    def spy(model, prompts, seeds):
        if list(prompts) == recipe.prompts_eval:
            rendered.append(weights_state(model))
        return generate(model, prompts, seeds)

    monkeypatch.setattr(sharded, "generate", spy)
    results = compress(recipe, Path(MICRO_RECIPE).read_text(encoding="utf-8"), tmp_path / "run", log=lambda line: None)
    counts = Counter(rendered)
    teacher = next(state for state in rendered if state[1] == ())
    assert counts[teacher] == 1  # the teacher's evaluation videos, also the stage-1 baseline
    first = results["stages"][0]
    after_stage_1 = [state for state in rendered if state[1] == tuple(sorted(first["removed_blocks"]))]
    pruned = after_stage_1[0]  # first rendered as the scorer's trial of that block
    (distilled,) = set(after_stage_1) - {pruned}  # trained: other weights
    assert counts[distilled] == 1  # the distilled summary, also the stage-2 baseline
    # evaluation renders: the teacher, each stage's trials, pruned (unless it was the last trial) and distilled summaries
    assert len(rendered) <= 1 + (len(first["importance"]) + 2) + (len(results["stages"][1]["importance"]) + 2)
