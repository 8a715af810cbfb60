"""``vipkit.testing.check_reward``: every broken promise of a reward is found and named; good rewards pass."""

import pytest
import torch
from pydantic import ConfigDict, Field

import vipkit
from vipkit.plugins import load_plugins
from vipkit.testing import ContractError, check_loss, check_model, check_reward, sample_videos
from vipkit_animatediff import AnimateDiff
from vipkit_clip import ClipReward
from vipkit_shapes import ShapesReward


class Good(vipkit.RewardModel):
    """Keeps the whole contract: two dimensions in [0, 1], per video, prompt count checked."""

    name = "good"
    dimensions = ("brightness", "redness")

    class Config(vipkit.Config):
        gain: float = Field(1.0, gt=0, le=1, description="multiplies the brightness")

    def score(self, videos, prompts):
        if len(prompts) != videos.shape[0]:
            raise ValueError(f"{videos.shape[0]} videos but {len(prompts)} prompts")
        return {
            "brightness": videos.mean(dim=(1, 2, 3, 4)) * self.config.gain,
            "redness": videos[:, :, 0].mean(dim=(1, 2, 3)),
        }


def broken(class_name, change=None, **attributes):
    """A subclass of Good with one thing changed: its scores (``change(scores, videos, prompts)``) or class attributes."""
    body = {"__module__": __name__, **attributes}
    if change is not None:
        body["score"] = lambda self, videos, prompts: change(Good.score(self, videos, prompts), videos, prompts)
    return type(class_name, (Good,), body)


class AcceptsUnknownKeys(vipkit.Config):
    model_config = ConfigDict(extra="allow", frozen=True)


class Undescribed(vipkit.Config):
    gain: float = 1.0


class OptionDependentDimensions(Good):
    def __init__(self, config=None):
        super().__init__(config)
        self.dimensions = ("brightness", "blueness")  # narrowing is allowed, adding a dimension is not


def mutate(scores, videos, prompts):
    videos[:, 0] = 0
    return scores


def ignore_prompt_count(self, videos, prompts):
    return {"brightness": videos.mean(dim=(1, 2, 3, 4)), "redness": videos[:, :, 0].mean(dim=(1, 2, 3))}


def index_error_on_count(self, videos, prompts):
    [prompts[i] for i in range(videos.shape[0])]
    return ignore_prompt_count(self, videos, prompts)


CASES = [
    (broken("NoName", name=""), "`name` must be a non-empty str"),
    (broken("DuplicateDims", dimensions=("a", "a")), "`dimensions` has duplicates: ('a', 'a')"),
    (broken("ListDims", dimensions=["brightness"]), "`dimensions` must be a non-empty tuple"),
    (broken("NotAConfig", Config=type("Config", (), {})), "`Config` must subclass vipkit.Config"),
    (broken("OpenConfig", Config=AcceptsUnknownKeys), "`Config` accepts unknown keys"),
    (
        broken("UndescribedConfig", Config=Undescribed),
        "`Config` options without a description (Field(..., description=...)): gain",
    ),
    (
        OptionDependentDimensions,
        "`dimensions` is ('brightness', 'blueness') once built from options {}, but the class declares ('brightness', 'redness')",
    ),
    (broken("Missing", lambda s, v, p: {"brightness": s["brightness"]}), "missing: ['redness'], undeclared: none"),
    (broken("Extra", lambda s, v, p: {**s, "blue": s["redness"]}), "missing: none, undeclared: ['blue']"),
    (broken("NotADict", lambda s, v, p: list(s.values())), "score(videos, prompts) returned list, not a dict"),
    (
        broken("Column", lambda s, v, p: {**s, "redness": s["redness"][:, None]}),
        "score()['redness'] must be a tensor of shape (2,) (one score per video), got torch.Size([2, 1])",
    ),
    (
        broken("Float", lambda s, v, p: {**s, "redness": s["redness"].tolist()}),
        "score()['redness'] must be a tensor of shape (2,)",
    ),
    (
        broken("NaN", lambda s, v, p: {**s, "redness": s["redness"] / 0 * 0}),
        "score()['redness'] has non-finite values [nan, nan]",
    ),
    (
        broken("Integer", lambda s, v, p: {**s, "redness": (s["redness"] * 100).long()}),
        "score()['redness'] dtype torch.int64 is not floating point",
    ),
    (
        broken("Grad", lambda s, v, p: {**s, "redness": s["redness"].requires_grad_()}),
        "score()['redness'] carries autograd history",
    ),
    (
        broken("OutOfRange", lambda s, v, p: {**s, "brightness": s["brightness"] * 10}),
        "score()['brightness'] has values",
    ),
    (broken("Raises", lambda s, v, p: 1 / 0), "score(videos, prompts) raised ZeroDivisionError: division by zero"),
    (broken("Mutates", mutate), "score() modified its input videos"),
    (
        broken("Noisy", lambda s, v, p: {**s, "redness": s["redness"] + torch.rand(len(p)) * 1e-2}),
        "score()['redness'] called twice is not deterministic",
    ),
    (
        broken("Positional", lambda s, v, p: {**s, "redness": s["redness"] + 0.1 * torch.arange(len(p))}),
        "score()['redness'] of a reordered batch differs",
    ),
    (
        broken("BatchMean", lambda s, v, p: {**s, "redness": s["redness"] - s["redness"].mean() + 0.5}),
        "score()['redness'] of video 0 alone differs from the same video in a batch",
    ),
    (
        broken("NoCountCheck", score=ignore_prompt_count),
        "score() of 2 videos with 1 prompts returned scores; raise ValueError",
    ),
    (
        broken("WrongError", score=index_error_on_count),
        "score() of 2 videos with 1 prompts raised IndexError: list index out of range; raise ValueError",
    ),
]


@pytest.mark.parametrize(("cls", "expected"), CASES, ids=[cls.__name__ for cls, _ in CASES])
def test_each_broken_promise_is_named(cls, expected):
    with pytest.raises(ContractError) as info:
        check_reward(cls, ranges=(0.0, 1.0))
    assert any(expected in violation for violation in info.value.violations), info.value.violations
    assert f"{cls.__qualname__} breaks the RewardModel contract" in str(info.value)


def test_good_reward_passes_and_returns_its_scores():
    scores = check_reward(Good, {"gain": 0.5}, ranges={"brightness": (0, 0.5), "redness": (0, 1)})
    torch.testing.assert_close(scores["brightness"], sample_videos(2).mean(dim=(1, 2, 3, 4)) * 0.5, rtol=0, atol=0)


def test_every_violation_is_reported_at_once_in_one_message():
    many = broken("Many", lambda s, v, p: {"brightness": s["brightness"].double() * 10 + torch.arange(len(p))})
    with pytest.raises(ContractError) as info:
        check_reward(many, ranges=(0, 1))
    violations = info.value.violations
    assert len(violations) == 4, violations  # missing dimension, out of range, reordered batch, video 1 alone
    assert str(info.value).startswith(
        "test_testing_kit.Many breaks the RewardModel contract in 4 ways:\n  - score() returned the dimensions"
    )
    assert isinstance(info.value, AssertionError)  # pytest reports it as a failed assertion


def test_invalid_options_and_non_rewards_are_reported():
    with pytest.raises(ContractError, match=r"cannot be built from options \{'gain': -1\}: ValidationError"):
        check_reward(Good, {"gain": -1})
    with pytest.raises(ContractError, match="is not a vipkit.RewardModel subclass"):
        check_reward(int)


def test_in_tree_rewards_keep_the_contract():
    check_reward(ShapesReward, ranges=(0, 1))
    check_reward(
        ClipReward,
        {"preset": "tiny"},
        list(vipkit.testing.SAMPLE_PROMPTS),
        ranges={"clip_score": (0, 1), "frame_consistency": (-1, 1)},
    )


# ---------------------------------------------------------------------------------------------
# check_loss

SMALL = {
    "family": "animatediff",
    "num_frames": 4,
    "height": 16,
    "width": 16,
    "num_inference_steps": 2,
}  # check_loss options


class Mse(vipkit.DistillLoss):
    """Keeps the contract: denoising MSE on the winners, randomness from the batch's generator."""

    name = "mse"

    def prediction_and_target(self, student, batch):
        latents = batch.winner_latents
        noise = torch.randn(latents.shape, generator=batch.generator)
        timesteps = torch.randint(0, student.num_train_timesteps, (latents.shape[0],), generator=batch.generator)
        prediction = student.predict_noise(student.add_noise(latents, noise, timesteps), timesteps, batch.conditioning)
        return prediction, student.training_target(latents, noise, timesteps)

    def compute(self, student, teacher, batch):
        prediction, target = self.prediction_and_target(student, batch)
        loss = (prediction - target).pow(2).mean()
        return vipkit.LossOutput(loss, {"mse": loss.item()})


def broken_loss(class_name, change):
    def compute(self, student, teacher, batch):
        return change(self, student, batch, Mse.compute(self, student, teacher, batch))

    return type(class_name, (Mse,), {"__module__": __name__, "compute": compute})


def unseeded(self, student, batch, out):
    return vipkit.LossOutput(out.loss + 1e-3 * torch.rand(()), out.metrics)


def edits_weights(self, student, batch, out):
    with torch.no_grad():
        student.trainable_parameters("all")[0].add_(1.0)
    return vipkit.LossOutput(out.loss, {"mse": out.loss})  # a metric with autograd history keeps the graph alive


LOSS_CASES = [
    (
        broken_loss("Detached", lambda self, s, b, out: vipkit.LossOutput(out.loss.detach(), out.metrics)),
        ["compute().loss has no autograd history"],
    ),
    (
        broken_loss("Vector", lambda self, s, b, out: vipkit.LossOutput(out.loss.expand(2), out.metrics)),
        ["compute().loss must be a finite floating scalar tensor"],
    ),
    (broken_loss("Unseeded", unseeded), ["compute() with the same generator seed gave"]),
    (
        broken_loss("Flat", lambda self, s, b, out: vipkit.LossOutput(out.loss * 0, out.metrics)),
        ["backward() of the loss gives the student's 'motion' parameters no gradient"],
    ),
    (
        broken_loss("EditsWeights", edits_weights),
        [  # the edit also changes the second call's loss
            "compute() with the same generator seed gave",
            "compute().metrics must map names to finite floats",
            "compute() changed model weights",
        ],
    ),
    (
        broken_loss("VectorMetric", lambda self, s, b, out: vipkit.LossOutput(out.loss, {"mse": torch.ones(2)})),
        ["compute().metrics must map names"],
    ),
    (
        broken_loss(
            "NaNMetric", lambda self, s, b, out: vipkit.LossOutput(out.loss, {"mse": torch.tensor(float("nan"))})
        ),
        ["compute().metrics must map names"],
    ),
    (
        broken_loss("IntMetric", lambda self, s, b, out: vipkit.LossOutput(out.loss, {"mse": 3})),
        ["compute().metrics must map names"],
    ),
]


@pytest.mark.parametrize(("cls", "expected"), LOSS_CASES, ids=[cls.__name__ for cls, _ in LOSS_CASES])
def test_check_loss_names_each_broken_promise(cls, expected):
    with pytest.raises(ContractError) as info:
        check_loss(cls, **SMALL)
    assert [next((v for v in info.value.violations if e in v), None) for e in expected] == info.value.violations, (
        info.value.violations
    )
    assert "breaks the DistillLoss contract" in str(info.value)


@pytest.mark.parametrize("name", ["redpo", "sft", "kd"])
def test_in_tree_losses_keep_the_contract(name):
    output = check_loss(load_plugins().registry("losses").get(name), **SMALL)
    assert output.loss.item() > 0


def test_a_good_loss_passes_and_scope_is_the_familys():
    assert check_loss(Mse, scope="motion", **SMALL).metrics["mse"] > 0


def test_a_loss_may_report_metrics_as_detached_scalar_tensors():
    tensor_metrics = broken_loss(
        "TensorMetrics", lambda self, s, b, out: vipkit.LossOutput(out.loss, {"mse": out.loss.detach()})
    )
    assert check_loss(tensor_metrics, **SMALL).metrics["mse"].ndim == 0


# -- check_model -------------------------------------------------------------------------------

MODEL_OPTIONS = {"height": 16, "width": 16, "num_frames": 4, "num_inference_steps": 2}


class ShiftedSeedsAnimateDiff(AnimateDiff):
    """Three contract breaches: a default block kind it lacks, copies that share the model, seeds shifted by batch position."""

    name = "shifted-seeds"
    default_block_kinds = ("motion_module", "no_such_kind")

    def copy(self):
        return self

    def generate(self, prompts, seeds):
        return super().generate(prompts, [seed + i for i, seed in enumerate(seeds)])


class ShiftedSeedsPlugin:
    __name__ = "shifted_seeds_plugin"

    @vipkit.hookimpl
    def register_models(self, register):
        register(ShiftedSeedsAnimateDiff)


def test_check_model_passes_the_in_tree_families_and_lists_every_breach_of_a_broken_one():
    assert check_model("animatediff", MODEL_OPTIONS).num_parameters() == 1_228_388
    plugins = load_plugins()
    plugins.add(ShiftedSeedsPlugin(), name="shifted_seeds_plugin")
    try:
        with pytest.raises(ContractError) as info:
            check_model("shifted-seeds", MODEL_OPTIONS)
    finally:
        plugins.remove("shifted_seeds_plugin")
    message = str(info.value)
    assert "breaks the VideoModel contract in 3 ways" in message, message
    assert "default_block_kinds ('motion_module', 'no_such_kind') are not all among the model's kinds" in message
    assert "video 1 of a batch differs from the same prompt and seed alone" in message
    assert "copy: removing a block from a copy changed the original" in message
