"""The ``vbench`` reward: VBench's formulas on synthetic videos with known answers, tiny models built offline."""

from __future__ import annotations

import logging
from pathlib import Path

import pydantic
import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPModel

from vipkit.errors import VipkitError
from vipkit.plugins import load_plugins
from vipkit.testing import check_reward
from vipkit_clip.tiny import save_tiny_clip
from vipkit_vbench.measures import feature_consistency, is_dynamic, temporal_flickering, top_flow_magnitude
from vipkit_vbench.models import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, load_encoder
from vipkit_vbench.reward import VBenchReward
from vipkit_vbench.totals import normalized, quality_score, semantic_score, total_score

TINY = {"preset": "tiny", "device": "cpu"}
MODEL_FREE = ("temporal_flickering", "quality_score")


def constant_frames(values: list[int], height: int = 8, width: int = 8) -> torch.Tensor:
    """One video whose frame ``i`` is the 8-bit level ``values[i]`` everywhere: ``(1, F, 3, H, W)``."""
    return (
        torch.tensor(values, dtype=torch.float32).div(255).view(1, -1, 1, 1, 1).expand(1, len(values), 3, height, width)
    )


def random_videos(batch: int, frames: int = 4, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, frames, 3, height, width, generator=torch.Generator().manual_seed(seed))


# -- model-free formulas --------------------------------------------------------------------------


def test_temporal_flickering_of_a_static_video_is_one() -> None:
    static = random_videos(1, frames=1).expand(1, 5, 3, 32, 32)
    assert temporal_flickering(static).tolist() == [1.0]


def test_temporal_flickering_is_255_minus_the_mean_frame_difference_over_255() -> None:
    # differences 10, 20, 30 levels: mean 20 -> (255 - 20) / 255; a second video alternating 0/255 -> 0
    videos = torch.cat([constant_frames([0, 10, 30, 60]), constant_frames([0, 255, 0, 255])])
    torch.testing.assert_close(temporal_flickering(videos), torch.tensor([235 / 255, 0.0]), rtol=0, atol=1e-7)


def test_temporal_flickering_reads_frames_as_8_bit_levels() -> None:
    # 0.3 / 255 rounds to level 0: no flicker is visible in an 8-bit file, and none is measured
    assert temporal_flickering(constant_frames([0, 0]) + 0.3 / 255).tolist() == [1.0]


def test_feature_consistency_averages_similarity_to_the_previous_and_the_first_frame() -> None:
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    diagonal = F.normalize(torch.tensor([1.0, 1.0]), dim=0)
    features = torch.stack(
        [
            torch.stack([e1, e1, e2]),  # frame 1: (1 + 1) / 2; frame 2: (0 + 0) / 2 -> 0.5
            torch.stack([e1, diagonal, e2]),  # frame 1: (c + c) / 2; frame 2: (c + 0) / 2, c = cos 45° -> 3c / 4
            torch.stack([e1, -e1, -e1]),  # negative similarity counts as 0: frame 1: 0; frame 2: (1 + 0) / 2 -> 0.25
        ]
    )
    expected = torch.tensor([0.5, 3 * 0.5**0.5 / 4, 0.25])
    torch.testing.assert_close(feature_consistency(features * 3.0), expected, rtol=0, atol=1e-6)  # scale-free


def test_top_flow_magnitude_is_the_mean_of_the_largest_five_percent() -> None:
    flow = torch.zeros(1, 2, 20, 20)  # 400 vectors: the top 5 % are 20 of them
    flow[0, 0] = 1.0
    flow[0, :, 0, :] = torch.tensor([3.0, 4.0]).view(2, 1)  # 20 vectors of length 5
    flow[0, :, 1, :10] = torch.tensor([0.0, 2.0]).view(2, 1)
    assert top_flow_magnitude(flow).tolist() == [5.0]


@pytest.mark.parametrize(
    ("magnitudes", "size", "frames", "moves"),
    [
        ([7, 7, 7, 1], (256, 256), 16, False),  # threshold 6 px, 4 pairs needed, 3 counted
        ([7, 1, 7, 7, 7], (256, 320), 16, True),  # threshold 6 px (min side), 4 counted
        ([11, 11, 11, 11], (512, 512), 16, False),  # threshold 12 px at 512
        ([13, 13], (512, 512), 8, True),  # 8 frames: round(2.0) = 2 pairs needed
        ([7, 7, 0], (256, 256), 10, True),  # round(2.5) = 2 (Python's round, as VBench)
        ([0.1], (256, 256), 2, True),  # round(0.5) = 0 pairs needed: VBench calls any pair dynamic
        ([], (256, 256), 1, False),
    ],
)
def test_dynamic_degree_rule(magnitudes: list[float], size: tuple[int, int], frames: int, moves: bool) -> None:
    assert is_dynamic(magnitudes, *size, num_frames=frames) is moves


def test_totals_follow_the_leaderboard_formula() -> None:
    scores = {
        "subject_consistency": 0.95,
        "background_consistency": 0.96,
        "temporal_flickering": 0.97,
        "motion_smoothness": 0.98,
        "aesthetic_quality": 0.6,
        "imaging_quality": 0.65,
        "dynamic_degree": 0.5,
        "object_class": 0.8,
        "multiple_objects": 0.4,
        "human_action": 0.9,
        "color": 0.85,
        "spatial_relationship": 0.5,
        "scene": 0.5,
        "appearance_style": 0.2,
        "temporal_style": 0.25,
        "overall_consistency": 0.27,
    }
    quality = (
        (0.95 - 0.1462) / (1 - 0.1462)
        + (0.96 - 0.2615) / (1 - 0.2615)
        + (0.97 - 0.6293) / (1 - 0.6293)
        + (0.98 - 0.706) / (0.9975 - 0.706)
        + 0.6
        + 0.65
        + 0.5 * 0.5
    ) / 6.5
    semantic = (
        0.8 + 0.4 + 0.9 + 0.85 + 0.5 + 0.5 / 0.8222 + (0.2 - 0.0009) / (0.2855 - 0.0009) + 0.25 / 0.364 + 0.27 / 0.364
    ) / 9
    assert quality_score(scores) == pytest.approx(quality, abs=1e-12)
    assert semantic_score(scores) == pytest.approx(semantic, abs=1e-12)
    assert total_score(quality_score(scores), semantic_score(scores)) == pytest.approx(
        (4 * quality + semantic) / 5, abs=1e-12
    )


def test_a_partial_quality_score_renormalises_the_weights_over_the_dimensions_given() -> None:
    partial = {"temporal_flickering": torch.tensor([1.0, 0.6293]), "dynamic_degree": torch.tensor([1.0, 0.0])}
    torch.testing.assert_close(
        quality_score(partial), torch.tensor([1.0, 0.0])
    )  # (1 * 1 + 0.5 * 1) / 1.5, (0 + 0) / 1.5
    assert normalized("scene", 0.8222) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no score"):
        quality_score({"color": 0.5})


# -- the reward -------------------------------------------------------------------------------------


def test_registered_under_its_name() -> None:
    assert load_plugins().registry("rewards").get("vbench") is VBenchReward


def test_keeps_the_reward_contract_with_the_tiny_models() -> None:
    scores = check_reward(VBenchReward, TINY)
    assert set(scores) == {
        "subject_consistency",
        "background_consistency",
        "temporal_flickering",
        "aesthetic_quality",
        "quality_score",
    }


def test_keeps_the_reward_contract_with_only_the_model_free_dimension() -> None:
    assert tuple(check_reward(VBenchReward, {"dimensions": ["temporal_flickering"]})) == MODEL_FREE


def test_static_videos_are_perfectly_consistent_and_noise_is_not() -> None:
    static = random_videos(1, frames=1, seed=1).expand(1, 6, 3, 32, 32)
    scores = VBenchReward.from_options(TINY).score(torch.cat([static, random_videos(1, frames=6, seed=2)]), ["a", "b"])
    for dim in ("subject_consistency", "background_consistency", "temporal_flickering"):
        assert scores[dim][0].item() == pytest.approx(1.0, abs=1e-5)
        assert scores[dim][1].item() < 0.999


def test_quality_score_is_vbench_normalised_mean_of_the_scored_dimensions() -> None:
    scores = VBenchReward.from_options(TINY).score(random_videos(2, seed=3), ["a", "b"])
    expected = (
        (scores["subject_consistency"] - 0.1462) / (1 - 0.1462)
        + (scores["background_consistency"] - 0.2615) / (1 - 0.2615)
        + (scores["temporal_flickering"] - 0.6293) / (1 - 0.6293)
        + scores["aesthetic_quality"]
    ) / 4
    torch.testing.assert_close(scores["quality_score"], expected)


def test_missing_models_are_skipped_with_a_warning_that_says_how_to_provide_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="vipkit.vbench"):
        reward = VBenchReward.from_options({"device": "cpu"})  # hub offline in the tests, nothing cached
    assert reward.dimensions == MODEL_FREE
    text = caplog.text
    for needle in (
        "`dino_model` = 'facebook/dino-vitb16'",
        "hf download openai/clip-vit-base-patch32",
        "`aesthetic_head`",
        "sa_0_4_vit_l_14_linear.pth",
        "torchvision",
    ):
        assert needle in text
    assert set(reward.score(random_videos(2), ["a", "b"])) == set(MODEL_FREE)


def test_an_explicitly_requested_dimension_without_its_model_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(
        VipkitError,
        match=r"'subject_consistency' cannot score: reward option `dino_model` = 'facebook/dino-vitb16'.*hf download",
    ):
        VBenchReward.from_options({"dimensions": ["temporal_flickering", "subject_consistency"]})
    with pytest.raises(VipkitError, match=r"'dynamic_degree' cannot score: it needs torchvision's RAFT"):
        VBenchReward.from_options({"dimensions": ["dynamic_degree"]})
    with pytest.raises(VipkitError, match=r"`background_clip_model`.*not_a_dir.*is not a directory"):
        VBenchReward.from_options(
            {"dimensions": ["background_consistency"], "background_clip_model": str(tmp_path / "not_a_dir")}
        )


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny DINO ViT saved with save_pretrained, a full tiny CLIP checkpoint (text tower too, like the hub's
    openai/clip-* repositories), and a LAION-style head saved as a plain .pth state dict."""
    root = tmp_path_factory.mktemp("vbench_models")
    load_encoder(None, "dino", torch.device("cpu"), torch.float32, tiny_seed=1).model.save_pretrained(root / "dino")
    save_tiny_clip(root / "clip", seed=0)
    head = torch.nn.Linear(16, 1)
    with torch.no_grad():
        head.weight.normal_(generator=torch.Generator().manual_seed(0))
        head.bias.fill_(5.0)
    torch.save(head.state_dict(), root / "head.pth")
    return {"dino": root / "dino", "clip": root / "clip", "head": root / "head.pth"}


def test_models_load_from_local_paths_and_match_hand_computations(model_dirs: dict[str, Path]) -> None:
    reward = VBenchReward.from_options(
        {
            "dino_model": str(model_dirs["dino"]),
            "background_clip_model": str(model_dirs["clip"]),
            "aesthetic_clip_model": str(model_dirs["clip"]),
            "aesthetic_head": str(model_dirs["head"]),
            "device": "cpu",
        }
    )
    assert reward.dimensions == (
        "subject_consistency",
        "background_consistency",
        "temporal_flickering",
        "aesthetic_quality",
        "quality_score",
    )
    video = random_videos(1, frames=3, seed=4)  # 32 px: the tiny CLIP's own size, so no resize or crop
    scores = reward.score(video, ["a"])

    preset = VBenchReward.from_options(TINY).score(video, ["a"])  # the saved DINO is the preset's
    torch.testing.assert_close(scores["subject_consistency"], preset["subject_consistency"], rtol=0, atol=1e-6)

    clip = CLIPModel.from_pretrained(model_dirs["clip"], local_files_only=True).eval()
    levels = (video[0] * 255).round() / 255
    pixels = (levels - torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    head = torch.nn.Linear(16, 1)
    head.load_state_dict(torch.load(model_dirs["head"]))
    with torch.no_grad():
        embeds = F.normalize(clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        aesthetic = (head(embeds).squeeze(-1) / 10).mean()
    c01, c12, c02 = (
        (embeds[0] @ embeds[1]).clamp(min=0),
        (embeds[1] @ embeds[2]).clamp(min=0),
        (embeds[0] @ embeds[2]).clamp(min=0),
    )
    background = ((c01 + c01) / 2 + (c12 + c02) / 2) / 2
    assert scores["aesthetic_quality"].item() == pytest.approx(aesthetic.item(), abs=1e-5)
    assert scores["background_consistency"].item() == pytest.approx(background.item(), abs=1e-5)
    assert 0.3 < aesthetic.item() < 0.7  # the head's bias of 5 puts it near 0.5: not a vacuous comparison


def test_clip_dimensions_centre_crop_wide_frames_and_dino_sees_the_whole_frame() -> None:
    reward = VBenchReward.from_options(TINY)
    wide = random_videos(2, frames=3, height=32, width=64, seed=5)
    cropped = wide[..., 16:48].contiguous()
    on_wide, on_cropped = reward.score(wide, ["a", "b"]), reward.score(cropped, ["a", "b"])
    torch.testing.assert_close(
        on_wide["background_consistency"], on_cropped["background_consistency"], rtol=0, atol=1e-6
    )
    assert not torch.allclose(on_wide["subject_consistency"], on_cropped["subject_consistency"], atol=1e-6)


def test_a_file_that_is_not_the_aesthetic_head_is_a_user_error(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pth"
    torch.save({"weight": torch.zeros(2, 16)}, wrong)
    reward = VBenchReward.from_options(
        {
            "dimensions": ["aesthetic_quality"],
            "aesthetic_clip_model": str(model_dirs["clip"]),
            "aesthetic_head": str(wrong),
            "device": "cpu",
        }
    )
    with pytest.raises(VipkitError, match=r"`aesthetic_head`.*wrong.pth.*not a Linear\(16, 1\) state dict"):
        reward.score(random_videos(1), ["a"])


@pytest.mark.parametrize(
    "options",
    [{"dimensions": []}, {"dimensions": ["motion_smoothness"]}, {"video_fps": 0}, {"dtype": "int8"}, {"dino": "x"}],
)
def test_rejects_bad_options(options: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        VBenchReward.Config.model_validate(options)


def test_a_directory_holding_another_model_is_a_user_error(model_dirs: dict[str, Path]) -> None:
    reward = VBenchReward.from_options(
        {"dimensions": ["subject_consistency"], "dino_model": str(model_dirs["clip"]), "device": "cpu"}
    )
    with pytest.raises(VipkitError, match=r"`dino_model`.*could not load a DINO ViT"):
        reward.score(random_videos(1), ["a"])
