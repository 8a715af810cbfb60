"""The ``clip`` reward on a tiny random CLIP saved to disk and loaded by path (no network)."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

from vipkit.errors import VipkitError
from vipkit.plugins import load_plugins
from vipkit.testing import check_reward
from vipkit_clip.reward import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ClipReward, load_clip
from vipkit_clip.tiny import save_tiny_clip

SAVED_MEAN = (0.5, 0.4, 0.3)
SAVED_STD = (0.2, 0.25, 0.3)
PROMPTS = ["a cat", "a red square moving left on a blue background", "hello world"]


@pytest.fixture(scope="module")
def clip_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same tiny CLIP twice: with a saved image-processor config (custom statistics) and without."""
    dirs = {
        "with_processor": tmp_path_factory.mktemp("clip_with_processor"),
        "plain": tmp_path_factory.mktemp("clip_plain"),
    }
    for directory in dirs.values():
        save_tiny_clip(directory, seed=0)
    CLIPImageProcessorPil(image_mean=list(SAVED_MEAN), image_std=list(SAVED_STD)).save_pretrained(
        dirs["with_processor"]
    )
    return dirs


def reward(directory: Path, **options) -> ClipReward:
    return ClipReward.from_options({"model": str(directory), "device": "cpu", **options})


def random_videos(batch: int, frames: int = 4, height: int = 40, width: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, frames, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_registered_under_its_name() -> None:
    assert load_plugins().registry("rewards").get("clip") is ClipReward


def test_keeps_the_reward_contract(clip_dirs: dict[str, Path]) -> None:
    check_reward(ClipReward, {"model": str(clip_dirs["plain"]), "device": "cpu"})


def test_one_float_score_per_video_for_every_dimension(clip_dirs: dict[str, Path]) -> None:
    scores = reward(clip_dirs["with_processor"]).score(random_videos(3), PROMPTS)
    assert set(scores) == {"clip_score", "frame_consistency"} == set(ClipReward.dimensions)
    for values in scores.values():
        assert values.shape == (3,) and values.dtype == torch.float32 and values.device.type == "cpu"


def test_static_video_is_perfectly_consistent_and_noise_is_not(clip_dirs: dict[str, Path]) -> None:
    static = random_videos(1, frames=1).expand(1, 6, 3, 40, 40)
    scores = reward(clip_dirs["plain"]).score(torch.cat([static, random_videos(1, frames=6)]), PROMPTS[:2])
    assert scores["frame_consistency"][0].item() == pytest.approx(1.0, abs=1e-5)
    assert scores["frame_consistency"][1].item() < 0.99


@pytest.mark.parametrize(
    ("which", "mean", "std"),
    [("with_processor", SAVED_MEAN, SAVED_STD), ("plain", OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)],
)
def test_scores_equal_a_hand_computation_with_the_models_own_features(
    clip_dirs: dict[str, Path], which: str, mean: tuple[float, ...], std: tuple[float, ...]
) -> None:
    video, prompt = random_videos(1, seed=3)[0], "a cat"
    model = CLIPModel.from_pretrained(clip_dirs[which], local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(clip_dirs[which], local_files_only=True)
    pixels = F.interpolate(video, size=(32, 32), mode="bicubic", antialias=True)
    pixels = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        images = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        text = F.normalize(model.get_text_features(**tokenizer([prompt], return_tensors="pt")).pooler_output, dim=-1)
    expected_alignment = (images @ text[0]).clamp(min=0).mean().item()
    expected_consistency = (images[:-1] * images[1:]).sum(dim=-1).mean().item()
    assert expected_alignment > 0.05  # the check below would be vacuous at 0

    scores = reward(clip_dirs[which]).score(video[None], [prompt])
    assert scores["clip_score"].item() == pytest.approx(expected_alignment, abs=1e-5)
    assert scores["frame_consistency"].item() == pytest.approx(expected_consistency, abs=1e-5)


def test_scoring_a_batch_equals_scoring_one_video_at_a_time(clip_dirs: dict[str, Path]) -> None:
    videos = random_videos(3, frames=5, seed=1)
    together = reward(clip_dirs["with_processor"], batch_size=3).score(videos, PROMPTS)  # chunks straddle videos
    alone = [reward(clip_dirs["with_processor"]).score(videos[i : i + 1], PROMPTS[i : i + 1]) for i in range(3)]
    for dimension, values in together.items():
        torch.testing.assert_close(values, torch.cat([scores[dimension] for scores in alone]), atol=1e-5, rtol=0)


def test_clip_score_is_on_the_cosine_scale(clip_dirs: dict[str, Path]) -> None:
    videos = random_videos(6, frames=2, seed=2)
    prompts = [*PROMPTS, "a dog", "", "an orange star spinning slowly"]
    clip_score = reward(clip_dirs["plain"]).score(videos, prompts)["clip_score"]
    assert bool(((clip_score >= 0) & (clip_score <= 1)).all())
    assert clip_score.max().item() > 0


def test_frames_option_scores_evenly_spaced_frames(clip_dirs: dict[str, Path]) -> None:
    videos = random_videos(2, frames=8, seed=4)
    sampled = reward(clip_dirs["plain"], frames=3).score(videos, PROMPTS[:2])
    chosen = reward(clip_dirs["plain"]).score(videos[:, [0, 4, 7]], PROMPTS[:2])
    everything = reward(clip_dirs["plain"]).score(videos, PROMPTS[:2])
    torch.testing.assert_close(sampled, chosen)
    assert not torch.allclose(sampled["frame_consistency"], everything["frame_consistency"])


def test_wide_frames_are_centre_cropped_not_squashed(clip_dirs: dict[str, Path]) -> None:
    wide = random_videos(2, frames=3, height=32, width=64, seed=5)
    scores = reward(clip_dirs["plain"]).score(wide, PROMPTS[:2])
    torch.testing.assert_close(scores, reward(clip_dirs["plain"]).score(wide[..., 16:48], PROMPTS[:2]))


def test_bfloat16_weights_score_close_to_float32(clip_dirs: dict[str, Path]) -> None:
    videos = random_videos(2, seed=6)
    full = reward(clip_dirs["plain"]).score(videos, PROMPTS[:2])
    half = reward(clip_dirs["plain"], dtype="bfloat16").score(videos, PROMPTS[:2])
    assert all(values.dtype == torch.float32 for values in half.values())
    torch.testing.assert_close(half, full, atol=0.03, rtol=0)
    assert not torch.equal(half["clip_score"], full["clip_score"])  # the weights really were cast


@pytest.mark.parametrize(
    "options",
    [{"device": "gpu"}, {"frames": 0}, {"batch_size": 0}, {"dtype": "int8"}, {"frame": 4}, {"preset": "large"}],
)
def test_rejects_bad_options(options: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        ClipReward.Config.model_validate(options)


def test_a_missing_model_is_a_user_error_when_the_reward_is_built(tmp_path: Path) -> None:
    with pytest.raises(VipkitError, match=r"`model`.*no_clip_here.*is not a directory"):
        reward(tmp_path / "no_clip_here")
    with pytest.raises(
        VipkitError, match=r"HF_HUB_OFFLINE is set.*`hf download nobody/no-clip --local-dir models/no-clip`"
    ):
        ClipReward.from_options({"model": "nobody/no-clip"})  # HF_HUB_OFFLINE=1 in the tests


def test_a_directory_without_a_model_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(VipkitError, match=r"`model`.*could not load a CLIP model"):
        reward(tmp_path).score(random_videos(1), PROMPTS[:1])


def test_tiny_preset_scores_like_the_saved_tiny_model(clip_dirs: dict[str, Path]) -> None:
    videos = random_videos(2)
    from_preset = ClipReward.from_options({"preset": "tiny", "device": "cpu"}).score(videos, PROMPTS[:2])
    from_disk = reward(clip_dirs["plain"]).score(videos, PROMPTS[:2])
    for dim in ClipReward.dimensions:
        torch.testing.assert_close(from_preset[dim], from_disk[dim], atol=1e-6, rtol=0)
    assert from_preset["clip_score"].abs().sum() > 0


def test_random_preset_is_openai_clip_vit_large_on_the_meta_device() -> None:
    """openai/clip-vit-large-patch14's published sizes, built by the reward's own loading path without allocating."""
    assert ClipReward.Config(preset="random").preset == "random"
    clip = load_clip("unused", "meta", "bfloat16", preset="random")
    model = clip.model
    count = {name: sum(p.numel() for p in module.parameters()) for name, module in model.named_children()}
    assert count["text_model"] == 123_060_480 and count["vision_model"] == 303_179_776
    assert sum(p.numel() for p in model.parameters()) == 427_616_513  # with the projections to 768 and the logit scale
    assert (clip.image_size, clip.max_text_length, clip.device.type, clip.dtype) == (224, 77, "meta", torch.bfloat16)
    text = model.config.text_config  # the byte-level tokenizer's ids, in the real 49,408-token table
    assert (text.bos_token_id, text.eos_token_id, text.vocab_size) == (512, 513, 49408)
    assert (clip.tokenizer.bos_token_id, clip.tokenizer.eos_token_id) == (512, 513)
