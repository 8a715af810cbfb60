"""Every score a run uses is checked: rewards that raise, return NaN, the wrong shape or leave their range."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import torch

import vipkit
from vipkit.errors import VipkitError
from vipkit.reward_checks import CheckedReward, RewardOutputError
from vipkit.testing import sample_videos

PROMPTS = ["a red square moving left", "a blue circle moving up", "a green star spinning"]


class Brightness(vipkit.RewardModel):
    """Mean pixel value per video; ``broken`` picks one way of breaking the contract."""

    name = "brightness"
    dimensions = ("brightness", "contrast")
    value_ranges = {"brightness": (0.0, 1.0)}
    broken = ""

    def score(self, videos, prompts):
        scores = {"brightness": videos.mean(dim=(1, 2, 3, 4)), "contrast": videos.std(dim=(1, 2, 3, 4))}
        if self.broken == "nan-on-second":
            scores["brightness"][1] = float("nan")
        elif self.broken == "out-of-range":
            scores["brightness"] = scores["brightness"] + 2.0
        elif self.broken == "missing":
            del scores["contrast"]
        elif self.broken == "extra":
            scores["sharpness"] = scores["contrast"]
        elif self.broken == "shape":
            scores["contrast"] = scores["contrast"][:1]
        elif self.broken == "integer":
            scores["contrast"] = torch.ones(len(prompts), dtype=torch.long)
        elif self.broken == "list":
            return [scores]
        elif self.broken == "raises":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        elif self.broken == "exits":
            sys.exit(4)
        elif self.broken == "hangs":
            threading.Event().wait()  # blocks for ever, as a deadlocked plugin does
        return scores


def checked(broken: str) -> CheckedReward:
    reward = Brightness()
    reward.broken = broken
    return CheckedReward(reward, source="test-plugin")


def test_good_scores_pass_unchanged():
    videos = sample_videos(batch=3)
    scores = checked("").score(videos, PROMPTS)
    torch.testing.assert_close(scores["brightness"], videos.mean(dim=(1, 2, 3, 4)))
    assert checked("").dimensions == ("brightness", "contrast") and checked("").name == "brightness"


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        (
            "nan-on-second",
            [
                "reward 'brightness' (plugin test-plugin)",
                "non-finite score (nan)",
                "'brightness'",
                repr(PROMPTS[1]),
                "video 1 of 3",
            ],
        ),
        ("out-of-range", ["outside its declared range [0.0, 1.0]", "'brightness'", repr(PROMPTS[0]), "3 such videos"]),
        ("missing", ["missing: contrast"]),
        ("extra", ["undeclared: sharpness"]),
        ("shape", ["shape (1,)", "'contrast'", "expected a float tensor of shape (3,)"]),
        ("integer", ["torch.int64 tensor", "'contrast'"]),
        ("list", ["returned list, not a dict"]),
        ("raises", ["raised RuntimeError while scoring 3 videos", "CUDA out of memory", repr(PROMPTS[0])]),
    ],
)
def test_broken_reward_output_is_named(broken, expected):
    with pytest.raises(RewardOutputError) as info:
        checked(broken).score(sample_videos(batch=3), PROMPTS)
    for part in expected:
        assert part in str(info.value), (part, str(info.value))


def test_a_reward_raising_vipkit_error_keeps_its_message_and_gains_its_name():
    class Picky(Brightness):
        def score(self, videos, prompts):
            raise VipkitError("model folder /x is gone")

    with pytest.raises(VipkitError, match=r"^reward 'brightness' \(plugin p\): model folder /x is gone$"):
        CheckedReward(Picky(), source="p").score(sample_videos(batch=1), PROMPTS[:1])


def test_a_reward_that_hangs_stops_at_its_time_limit_and_the_timer_is_gone_after():
    reward = Brightness()
    reward.broken = "hangs"
    started = time.perf_counter()
    with pytest.raises(VipkitError) as info:
        CheckedReward(reward, source="test-plugin", timeout_s=0.5).score(sample_videos(batch=3), PROMPTS)
    assert 0.5 <= time.perf_counter() - started < 5
    assert str(info.value).startswith(
        "reward 'brightness' (plugin test-plugin) did not return within 0.5 s while scoring 3 videos (first prompt "
        "'a red square moving left'), so the run stopped"
    )
    assert "raise reward_timeout_s" in str(info.value)
    reward.broken = ""
    CheckedReward(reward, source="test-plugin", timeout_s=0.2).score(sample_videos(batch=3), PROMPTS)
    time.sleep(0.4)  # a call that returned in time leaves no timer behind to fire later


def test_a_reward_calling_sys_exit_is_an_error_not_the_end_of_the_run():
    with pytest.raises(RewardOutputError, match=r"called sys.exit\(4\) while scoring 3 videos"):
        checked("exits").score(sample_videos(batch=3), PROMPTS)
