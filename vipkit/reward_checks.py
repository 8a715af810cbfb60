"""Every score a run uses goes through one check: a reward that raises, returns NaN, misses a dimension,
returns the wrong shape or leaves its declared range stops the run with a message naming the reward,
the dimension and the prompt, instead of silently steering pruning and pairs with garbage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from vipkit.deadline import DeadlineExceeded, deadline
from vipkit.errors import VipkitError
from vipkit.interfaces import RewardModel, Scores

if TYPE_CHECKING:
    from torch import Tensor

RANGE_TOLERANCE = 1e-4  # float rounding at the edges of a declared range is not a broken reward


class RewardOutputError(VipkitError):
    """A reward broke its contract while a run was scoring videos."""


class CheckedReward(RewardModel):
    """Wraps a built reward; ``score`` returns the inner scores only once they passed every check."""

    def __init__(self, inner: RewardModel, source: str, timeout_s: float | None = None) -> None:
        super().__init__(inner.config)
        self.inner = inner
        self.timeout_s = timeout_s  # seconds one score call may take (None: no limit)
        self.name = inner.name  # type: ignore[misc]  # instance attributes mirror the wrapped reward
        self.dimensions = tuple(inner.dimensions)  # type: ignore[misc]
        self.value_ranges = dict(inner.value_ranges)  # type: ignore[misc]
        self.source = source

    def score(self, videos: Tensor, prompts: Sequence[str]) -> Scores:
        hung = (
            f"{self._who()} did not return within {self.timeout_s:g} s while scoring {len(prompts)} videos (first "
            f"prompt {prompts[0]!r}), so the run stopped instead of waiting for ever; if it is only slow, raise "
            "reward_timeout_s (a top-level recipe or bench matrix key)"
            if self.timeout_s is not None
            else ""
        )
        try:
            with deadline(self.timeout_s, hung):
                scores = self.inner.score(videos, prompts)
        except DeadlineExceeded:
            raise
        except VipkitError as exc:
            raise VipkitError(f"{self._who()}: {exc}") from exc
        except SystemExit as exc:  # a plugin must not end the run behind its back
            raise RewardOutputError(
                f"{self._who()} called sys.exit({exc.code!r}) while scoring {len(prompts)} videos (first prompt "
                f"{prompts[0]!r}); a reward must raise an exception instead"
            ) from exc
        except Exception as exc:  # a plugin's failure, reported as its own with the reason
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise RewardOutputError(
                f"{self._who()} raised {type(exc).__name__} while scoring {len(prompts)} videos "
                f"(first prompt {prompts[0]!r}): {reason}"
            ) from exc
        check_scores(scores, self, prompts)
        return scores

    def _who(self) -> str:
        return f"reward {self.name!r} (plugin {self.source})"


def check_scores(scores: object, reward: CheckedReward, prompts: Sequence[str]) -> None:
    """Raise ``RewardOutputError`` unless ``scores`` keeps the RewardModel contract for ``prompts``."""
    import torch

    who = reward._who()
    if not isinstance(scores, Mapping):
        raise RewardOutputError(f"{who} returned {type(scores).__name__}, not a dict of one tensor per dimension")
    missing = [dim for dim in reward.dimensions if dim not in scores]
    extra = [str(dim) for dim in scores if dim not in reward.dimensions]
    if missing or extra:
        raise RewardOutputError(
            f"{who} returned dimensions {sorted(map(str, scores))} but declares {list(reward.dimensions)}"
            + (f" (missing: {', '.join(missing)})" if missing else "")
            + (f" (undeclared: {', '.join(extra)})" if extra else "")
        )
    for dim in reward.dimensions:
        values = scores[dim]
        if not isinstance(values, torch.Tensor) or values.shape != (len(prompts),) or not values.is_floating_point():
            described = (
                f"{values.dtype} tensor of shape {tuple(values.shape)}"
                if isinstance(values, torch.Tensor)
                else type(values).__name__
            )
            raise RewardOutputError(
                f"{who} returned a {described} for dimension {dim!r}; expected a float tensor of shape ({len(prompts)},), "
                "one score per video"
            )
        _check_values(values, dim, reward, prompts)


def _check_values(values: Tensor, dim: str, reward: CheckedReward, prompts: Sequence[str]) -> None:
    import torch

    values = values.detach().float().cpu()
    bad = ~torch.isfinite(values)
    low, high = reward.value_ranges.get(dim, (-float("inf"), float("inf")))
    outside = (values < low - RANGE_TOLERANCE) | (values > high + RANGE_TOLERANCE)
    for mask, what in ((bad, "a non-finite score"), (outside, f"a score outside its declared range [{low}, {high}]")):
        if mask.any():
            i = int(mask.nonzero()[0])
            raise RewardOutputError(
                f"{reward._who()} returned {what} ({values[i].item()}) for dimension {dim!r} on prompt {prompts[i]!r} "
                f"(video {i} of {len(prompts)}; {int(mask.sum())} such videos in this batch)"
            )
