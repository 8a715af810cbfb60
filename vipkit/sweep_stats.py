"""Means, spreads and 95 % t-intervals over a sweep's seeds, alone and as differences between two variants.

A sweep has few seeds (3 to 10), where the normal quantile (1.96) makes intervals far too narrow: with 3 seeds the
t quantile is 4.30. scipy is no dependency of vipkit, so Student's t distribution is computed here: its tail from the
regularized incomplete beta function (continued fraction, modified Lentz) and its quantile by bisection on that tail,
both to ~1e-12 relative. Two variants run under the same seed see the same prompts and video seeds, so their
difference is taken seed by seed (paired): the spread between seeds cancels, and the interval is narrower than the
unpaired (Welch) one, which is used only where a variant changes the prompts.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values (or pairs) with the values' sample standard deviation and the mean's two-sided
    ``CONFIDENCE`` t-interval; ``std``, ``low`` and ``high`` are None where they are undefined (one value).
    A Welch difference has no single standard deviation: ``std`` None, ``n`` the runs of both sides."""

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None

    def holds(self, value: float) -> bool:
        """Whether ``value`` (0 for a difference: no effect) lies inside the interval; True when there is none."""
        return self.low is None or self.high is None or self.low <= value <= self.high

    def as_dict(self) -> dict[str, float | int | None]:
        return {"n": self.n, "mean": self.mean, "std": self.std, "low": self.low, "high": self.high}


def describe(values: Sequence[float]) -> Interval:
    """Mean, sample standard deviation (n − 1) and the mean's t-interval with n − 1 degrees of freedom."""
    if not values:
        raise ValueError("no values to describe")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(len(values), mean, None, None, None)
    std = statistics.stdev(values)
    half = t_quantile(0.5 + CONFIDENCE / 2, len(values) - 1) * std / math.sqrt(len(values))
    return Interval(len(values), mean, std, mean - half, mean + half)


def paired_difference(values: Mapping[int, float], baseline: Mapping[int, float]) -> Interval | None:
    """``values − baseline`` seed by seed, over the seeds both have; None when they share none."""
    seeds = [seed for seed in values if seed in baseline]
    return describe([values[seed] - baseline[seed] for seed in seeds]) if seeds else None


def welch_difference(values: Sequence[float], baseline: Sequence[float]) -> Interval | None:
    """``mean(values) − mean(baseline)`` for unpaired samples, with Welch–Satterthwaite degrees of freedom; no
    interval unless both sides have two values or more. None when a side is empty."""
    if not values or not baseline:
        return None
    mean = statistics.fmean(values) - statistics.fmean(baseline)
    n = len(values) + len(baseline)
    if len(values) < 2 or len(baseline) < 2:
        return Interval(n, mean, None, None, None)
    a, b = statistics.variance(values) / len(values), statistics.variance(baseline) / len(baseline)
    if a + b == 0:
        return Interval(n, mean, None, mean, mean)
    df = (a + b) ** 2 / (a**2 / (len(values) - 1) + b**2 / (len(baseline) - 1))
    half = t_quantile(0.5 + CONFIDENCE / 2, df) * math.sqrt(a + b)
    return Interval(n, mean, None, mean - half, mean + half)


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    if not 0 < p < 1 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    tail = 1 - p
    if tail == 0.5:
        return 0.0
    low, high = 0.0, 1.0
    while t_upper_tail(high, df) > tail:
        low, high = high, 2 * high
    while high - low > 1e-13 * high:
        middle = (low + high) / 2
        if t_upper_tail(middle, df) > tail:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def t_upper_tail(t: float, df: float) -> float:
    """P(T > t) for t >= 0: half the regularized incomplete beta I_x(df/2, 1/2) at x = df / (df + t²)."""
    return 0.5 * regularized_beta(df / (df + t * t), df / 2, 0.5)


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for 0 <= x <= 1 and a, b > 0."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):  # where the continued fraction converges fast; else use I_x(a, b) = 1 − I_1−x(b, a)
        return front * _beta_fraction(x, a, b) / a
    return 1 - front * _beta_fraction(1 - x, b, a) / b


def _beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of I_x(a, b), evaluated by the modified Lentz method."""
    tiny = 1e-300

    def nonzero(value: float) -> float:
        return value if abs(value) > tiny else tiny

    c, d = 1.0, 1 / nonzero(1 - (a + b) * x / (a + 1))
    result = d
    for m in range(1, 1000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 / nonzero(1 + numerator * d)
            c = nonzero(1 + numerator / c)
            result *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return result
