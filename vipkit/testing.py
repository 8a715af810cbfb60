"""Helpers for plugin authors' tests (and vipkit's own): tiny models, sample videos, contract checks."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from vipkit.contracts import ContractError, component_violations
from vipkit.interfaces import DistillLoss, LossOutput, PairBatch, RewardModel, Scores, VideoModel
from vipkit.model_contract import check_model
from vipkit.plugins import load_plugins

__all__ = ["ContractError", "check_loss", "check_model", "check_reward", "sample_videos", "tiny_model"]

SAMPLE_PROMPTS = ("a red square moving left", "a blue circle moving up", "a green star spinning")


def tiny_model(family: str, **options: Any) -> VideoModel:
    """A registered model family's tiny random preset (built from configs, no download), e.g. ``tiny_model("animatediff")``."""
    cls = load_plugins().registry("models").get(family)
    return cls.from_options({"preset": "tiny", **options})  # type: ignore[return-value]


def sample_videos(batch: int = 2, frames: int = 4, height: int = 32, width: int = 32, seed: int = 0) -> Tensor:
    """Deterministic videos ``(B, F, 3, H, W)`` in [0, 1]: a bright square drifting over a gradient."""
    generator = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height).view(1, height, 1)
    xs = torch.linspace(0, 1, width).view(1, 1, width)
    videos = torch.empty(batch, frames, 3, height, width)
    for b in range(batch):
        colour = torch.rand(3, generator=generator)
        for f in range(frames):
            frame = (
                torch.cat(
                    [ys.expand(1, height, width), xs.expand(1, height, width), (ys * xs).expand(1, height, width)]
                )
                * 0.5
            )
            top, left = (f * 2 + b * 3) % (height // 2), (f * 3 + b * 5) % (width // 2)
            frame[:, top : top + height // 4, left : left + width // 4] = colour.view(3, 1, 1)
            videos[b, f] = frame
    return videos


Range = tuple[float, float]


def check_reward(
    cls: type[RewardModel],
    options: dict[str, Any] | None = None,
    prompts: Sequence[str] = SAMPLE_PROMPTS[:2],
    *,
    ranges: Range | Mapping[str, Range] | None = None,
    atol: float = 1e-5,
) -> Scores:
    """Check that ``cls`` keeps the whole RewardModel contract; return its scores of ``sample_videos``.

    Every violation is collected and raised at once as a ``ContractError`` (an AssertionError,
    so pytest shows it as a failed test). Checked: a non-empty ``name``; ``dimensions`` a non-empty
    tuple of distinct names, which building from options may narrow to a subset but never extend; a ``Config`` subclassing ``vipkit.Config`` (unknown keys rejected, every
    option described); built from ``options``; ``score`` returns exactly the declared dimensions, each
    a finite floating CPU tensor of shape ``(batch,)`` without autograd history, within ``ranges``
    (one ``(low, high)`` for every dimension, or one per dimension) when given; it leaves the videos
    unchanged, gives the same scores twice, the same scores to a reordered batch and to each video
    alone (within ``atol``), and raises ``ValueError`` when prompts and videos differ in number.
    """
    if not (isinstance(cls, type) and issubclass(cls, RewardModel)):
        raise ContractError(type(cls), [f"{cls!r} is not a vipkit.RewardModel subclass"])
    violations = _class_violations(cls)
    try:
        reward = cls.from_options(options)
    except Exception as exc:  # noqa: BLE001 (any failure is the plugin's to report)
        raise ContractError(
            cls, [*violations, f"cannot be built from options {options or {}}: {type(exc).__name__}: {exc}"]
        ) from exc
    built = tuple(reward.dimensions)
    if not violations and (not built or not set(built) <= set(cls.dimensions)):
        violations.append(
            f"`dimensions` is {built} once built from options {options or {}}, but the class declares "
            f"{cls.dimensions}; a configuration may narrow the class's dimensions (recipes are checked against "
            "both), never add to them or empty them"
        )
    if violations:  # without a valid name and dimensions the scores cannot be judged
        raise ContractError(cls, violations)

    videos = sample_videos(batch=len(prompts))
    before = videos.clone()
    scores = _scores_or_violation(reward, videos, list(prompts), "score(videos, prompts)", violations)
    if scores is None:
        raise ContractError(cls, violations)
    if not torch.equal(videos, before):
        violations.append("score() modified its input videos; work on a copy")
    comparable = _score_violations(reward, scores, len(prompts), _range_of(ranges, reward.dimensions), violations)

    def same(
        call: str, problem: str, expected: Callable[[Tensor], Tensor], videos_: Tensor, prompts_: list[str]
    ) -> None:
        other = _scores_or_violation(reward, videos_, prompts_, f"score() {call}", violations)
        for dim in comparable if other is not None else ():
            difference = _difference(other.get(dim), expected(scores[dim]), atol)
            if difference:
                violations.append(f"score()[{dim!r}] {problem}: {difference}")

    same("called again", "called twice is not deterministic", lambda v: v, videos, list(prompts))
    order = list(reversed(range(len(prompts))))
    same(
        "of the reordered batch",
        "of a reordered batch differs from the batch (a score must not depend on the other videos)",
        lambda v: v[order],
        videos[order],
        [prompts[i] for i in order],
    )
    for i, prompt in enumerate(prompts):
        same(
            f"of video {i} alone",
            f"of video {i} alone differs from the same video in a batch",
            lambda v, i=i: v[i : i + 1],
            videos[i : i + 1],
            [prompt],
        )
    _prompt_count_violation(reward, videos, list(prompts), violations)
    if violations:
        raise ContractError(cls, violations)
    return scores


def _class_violations(cls: type[RewardModel]) -> list[str]:
    found = component_violations(cls)
    dims = getattr(cls, "dimensions", None)
    if not (isinstance(dims, tuple) and dims and all(isinstance(d, str) and d for d in dims)):
        found.append(f"`dimensions` must be a non-empty tuple of non-empty str, got {dims!r}")
    elif len(set(dims)) != len(dims):
        found.append(f"`dimensions` has duplicates: {dims}")
    return found


def _scores_or_violation(
    reward: RewardModel, videos: Tensor, prompts: list[str], label: str, violations: list[str]
) -> Scores | None:
    try:
        scores = reward.score(videos, prompts)
    except Exception as exc:  # noqa: BLE001
        violations.append(f"{label} raised {type(exc).__name__}: {exc}")
        return None
    if not isinstance(scores, Mapping):
        violations.append(f"{label} returned {type(scores).__name__}, not a dict {{dimension: Tensor(batch)}}")
        return None
    return dict(scores)


def _range_of(ranges: Range | Mapping[str, Range] | None, dims: Sequence[str]) -> dict[str, Range]:
    if ranges is None:
        return {}
    if isinstance(ranges, Mapping):
        return dict(ranges)
    return dict.fromkeys(dims, ranges)


def _score_violations(
    reward: RewardModel, scores: Scores, batch: int, ranges: dict[str, Range], violations: list[str]
) -> list[str]:
    """Check each returned tensor; return the dimensions whose scores can be compared across calls."""
    declared = list(reward.dimensions)
    missing = [d for d in declared if d not in scores]
    extra = [d for d in scores if d not in declared]
    if missing or extra:
        violations.append(
            f"score() returned the dimensions {sorted(scores)}, but the declared dimensions are {declared} (missing: {missing or 'none'}, undeclared: {extra or 'none'})"
        )
    comparable = []
    for dim in (d for d in declared if d in scores):
        values = scores[dim]
        if not isinstance(values, torch.Tensor) or values.shape != (batch,):
            violations.append(
                f"score()[{dim!r}] must be a tensor of shape ({batch},) (one score per video), got {getattr(values, 'shape', type(values).__name__)}"
            )
            continue
        problems = []
        if not values.is_floating_point():
            problems.append(f"dtype {values.dtype} is not floating point")
        elif not torch.isfinite(values).all():
            problems.append(f"has non-finite values {values.tolist()}")
        else:
            comparable.append(dim)
        if values.device.type != "cpu":
            problems.append(f"is on {values.device}; return scores on the CPU")
        if values.requires_grad:
            problems.append("carries autograd history; score under torch.no_grad() or detach")
        low, high = ranges.get(dim, (-float("inf"), float("inf")))
        if values.is_floating_point() and not ((values >= low) & (values <= high)).all():
            problems.append(f"has values {values.tolist()} outside the documented range [{low}, {high}]")
        if problems:
            violations.append(f"score()[{dim!r}] " + "; ".join(problems))
    return comparable


def _difference(actual: Any, expected: Tensor, atol: float) -> str | None:
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        return (
            f"expected a tensor of shape {tuple(expected.shape)}, got {getattr(actual, 'shape', type(actual).__name__)}"
        )
    gap = (actual.double() - expected.double()).abs().max().item()
    return (
        None if gap <= atol else f"{actual.tolist()} vs {expected.tolist()} (max difference {gap:.3g} > atol {atol:g})"
    )


def _prompt_count_violation(reward: RewardModel, videos: Tensor, prompts: list[str], violations: list[str]) -> None:
    fewer = prompts[:-1]
    try:
        reward.score(videos, fewer)
    except ValueError:
        return
    except Exception as exc:  # noqa: BLE001
        violations.append(
            f"score() of {len(prompts)} videos with {len(fewer)} prompts raised {type(exc).__name__}: {exc}; raise ValueError naming both counts"
        )
        return
    violations.append(
        f"score() of {len(prompts)} videos with {len(fewer)} prompts returned scores; raise ValueError naming both counts"
    )


def _is_metric(value: Any) -> bool:
    """A finite float, or a finite floating 0-dim tensor without autograd history (which would keep the graph alive)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return (
        isinstance(value, torch.Tensor)
        and value.ndim == 0
        and value.is_floating_point()
        and not value.requires_grad
        and bool(torch.isfinite(value))
    )


def check_loss(
    cls: type[DistillLoss],
    options: dict[str, Any] | None = None,
    *,
    family: str,
    scope: str | None = None,
    **model_options: Any,
) -> LossOutput:
    """Check that ``cls`` keeps the DistillLoss contract on a tiny teacher and its pruned copy; return the output.

    Every violation is raised at once as a ``ContractError``. Checked: ``name`` and ``Config`` as for
    every component; built from ``options``; ``begin_stage`` then ``compute`` on a batch of two pairs
    returns a ``LossOutput`` whose ``loss`` is a finite floating scalar with autograd history and whose
    ``metrics`` are finite floats or detached 0-dim floating tensors; the same generator seed gives the same loss; ``compute`` changes no
    weight; ``backward`` gives the student's ``scope`` parameters (default: the family's trainable scope)
    finite gradients, not all zero. ``model_options`` go to ``tiny_model`` (e.g. smaller ``num_frames`` for speed).
    """
    if not (isinstance(cls, type) and issubclass(cls, DistillLoss)):
        raise ContractError(type(cls), [f"{cls!r} is not a vipkit.DistillLoss subclass"], DistillLoss)
    violations = component_violations(cls)
    try:
        loss = cls.from_options(options)
    except Exception as exc:  # noqa: BLE001
        raise ContractError(
            cls,
            [*violations, f"cannot be built from options {options or {}}: {type(exc).__name__}: {exc}"],
            DistillLoss,
        ) from exc
    teacher = tiny_model(family, **model_options)
    scope = scope or teacher.default_trainable
    student = teacher.copy()
    student.remove_block(student.blocks()[0].name)  # as in a run: the student is pruned, so it differs from the teacher
    for param in [*teacher.trainable_parameters("all"), *student.trainable_parameters("all")]:
        param.requires_grad_(False)
    params = student.trainable_parameters(scope)
    for param in params:
        param.requires_grad_(True)
    prompts = list(SAMPLE_PROMPTS[:2])
    winners = teacher.generate(prompts, [0, 1]).latents
    losers = winners + 0.1 * torch.randn(winners.shape, generator=torch.Generator().manual_seed(0))
    conditioning = student.encode_prompts(prompts)
    weights = [p.detach().clone() for p in [*student.trainable_parameters("all"), *teacher.trainable_parameters("all")]]

    def compute() -> LossOutput:
        return loss.compute(
            student, teacher, PairBatch(winners, losers, conditioning, torch.Generator().manual_seed(0))
        )

    student.train_mode(True)
    try:
        loss.begin_stage(student, teacher)
        first, again = compute(), compute()
    except Exception as exc:  # noqa: BLE001
        raise ContractError(
            cls, [*violations, f"begin_stage/compute raised {type(exc).__name__}: {exc}"], DistillLoss
        ) from exc
    finally:
        student.train_mode(False)
    if not isinstance(first, LossOutput):
        raise ContractError(
            cls, [*violations, f"compute() returned {type(first).__name__}, not a vipkit.LossOutput"], DistillLoss
        )
    value = first.loss
    if not (
        isinstance(value, torch.Tensor) and value.ndim == 0 and value.is_floating_point() and torch.isfinite(value)
    ):
        violations.append(f"compute().loss must be a finite floating scalar tensor, got {value!r}")
    elif not value.requires_grad:
        violations.append("compute().loss has no autograd history: the student cannot learn from it")
    elif not torch.equal(value.detach(), again.loss.detach()):
        violations.append(
            f"compute() with the same generator seed gave {value.item()} then {again.loss.item()}; draw all randomness from batch.generator"
        )
    bad_metrics = {k: v for k, v in first.metrics.items() if not (isinstance(k, str) and _is_metric(v))}
    if bad_metrics:
        violations.append(
            "compute().metrics must map names to finite floats or detached 0-dim floating tensors (they go to "
            f"metrics.jsonl), got {bad_metrics}"
        )
    now = [*student.trainable_parameters("all"), *teacher.trainable_parameters("all")]
    if any(not torch.equal(before, after.detach()) for before, after in zip(weights, now, strict=True)):
        violations.append("compute() changed model weights; only the optimizer may change the student")
    if not violations:
        value.backward()
        grads = [p.grad for p in params if p.grad is not None]
        if not grads or all(float(g.abs().sum()) == 0 for g in grads):
            violations.append(f"backward() of the loss gives the student's {scope!r} parameters no gradient")
        elif not all(torch.isfinite(g).all() for g in grads):
            violations.append("backward() of the loss gives non-finite gradients")
    for param in params:
        param.requires_grad_(False)
    if violations:
        raise ContractError(cls, violations, DistillLoss)
    return first
