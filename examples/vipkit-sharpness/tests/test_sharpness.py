"""The sharpness plugin's own tests, written with vipkit's plugin-author kit (vipkit.testing)."""

import pytest
import torch
import torch.nn.functional as F

from vipkit.plugins import load_plugins
from vipkit.testing import check_reward, sample_videos
from vipkit_sharpness import Sharpness


def test_keeps_the_reward_contract():
    # Every promise of a vipkit reward, including the documented range of each dimension.
    check_reward(Sharpness, {"reference_variance": 0.01}, ranges=(0.0, 1.0))


def test_checkerboard_and_flat_frames_have_known_scores():
    checker = (torch.arange(8).view(8, 1) + torch.arange(8).view(1, 8)) % 2  # 0/1 pixels
    video = checker.float().expand(1, 2, 3, 8, 8)  # gray = the pattern itself (luma weights sum to 1)
    flat = torch.full((1, 2, 3, 8, 8), 0.5)
    scores = Sharpness.from_options({"reference_variance": 16.0}).score(torch.cat([video, flat]), ["", ""])
    # Laplacian of a 0/1 checkerboard is ±4 everywhere inside: variance 16 → 16 / (16 + 16) = 0.5.
    torch.testing.assert_close(scores["sharpness"], torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(scores["contrast"], torch.tensor([1.0, 0.0]))  # std 0.5, times 2


def test_blur_lowers_sharpness_but_not_brightness():
    videos = sample_videos(2, height=32, width=32)
    blurred = F.avg_pool2d(videos.flatten(0, 1), 3, stride=1, padding=1, count_include_pad=False).view_as(videos)
    reward = Sharpness()
    sharp, soft = reward.score(videos, ["", ""]), reward.score(blurred, ["", ""])
    assert (soft["sharpness"] < 0.8 * sharp["sharpness"]).all(), (sharp, soft)
    assert (soft["contrast"] < sharp["contrast"]).all()


def test_chunking_does_not_change_the_scores():
    videos = sample_videos(3, frames=5)
    whole = Sharpness().score(videos, ["a", "b", "c"])
    chunked = Sharpness.from_options({"frames_per_chunk": 2}).score(videos, ["a", "b", "c"])
    for dim in Sharpness.dimensions:
        torch.testing.assert_close(chunked[dim], whole[dim], rtol=0, atol=1e-7)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="reference_variance"):
        Sharpness.from_options({"reference_variance": 0})


def test_registered_through_the_entry_point_once_installed():
    plugins = load_plugins()
    info = next((i for i in plugins.infos if "sharpness" in i.components.get("rewards", [])), None)
    if info is None:
        pytest.skip("vipkit-sharpness is not installed (pip install -e .) so its entry point is not visible")
    assert info.source == "entry point" and info.error is None
    assert plugins.registry("rewards").get("sharpness") is Sharpness
