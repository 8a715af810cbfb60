"""The loss plugins: the pure functions on hand-computed numbers, the components on the tiny AnimateDiff."""

from __future__ import annotations

import math

import pytest
import torch

import vipkit
from vipkit.errors import VipkitError
from vipkit.plugins import load_plugins
from vipkit.testing import tiny_model
from vipkit_losses.functional import diffusion_dpo_loss, feature_mse, kd_loss, per_sample_mse, sft_loss

# ---------------------------------------------------------------------------------------------
# Pure functions


def test_per_sample_mse_reduces_all_but_the_batch_dim_in_float32():
    pred = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]], dtype=torch.float16)  # (2, 1, 2)
    mse = per_sample_mse(pred, torch.zeros(2, 1, 2, dtype=torch.float16))
    assert mse.dtype == torch.float32
    assert mse.tolist() == [2.5, 12.5]


def test_per_sample_mse_rejects_shapes_that_would_broadcast():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 1\)"):
        per_sample_mse(torch.zeros(2, 3), torch.zeros(2, 1))


# Four pairs whose inside terms (salesforce, beta 4 -> scale 2) are [1, 0, -0.5, 2]: a win, a tie, a loss, a
# win carried by the reference. All values are exact in binary, so the expectations are exact too.
MODEL_W = torch.tensor([0.25, 0.5, 0.5, 0.25])
MODEL_L = torch.tensor([0.75, 0.5, 0.25, 0.75])
REF_W = torch.tensor([0.5, 0.5, 0.5, 0.75])
REF_L = torch.tensor([0.5, 0.5, 0.5, 0.25])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_diffusion_dpo_salesforce_convention_on_hand_computed_pairs():
    loss, metrics = diffusion_dpo_loss(MODEL_W, MODEL_L, REF_W, REF_L, beta=4.0, convention="salesforce")
    expected = (softplus(-1) + math.log(2) + softplus(0.5) + softplus(-2)) / 4  # -logsigmoid(x) = softplus(-x)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(0.5268534658, abs=1e-6)
    assert metrics == {
        "implicit_acc": 0.625,  # 2 wins + half a tie, of 4
        "inside": 0.625,
        "model_diff": -0.1875,
        "ref_diff": 0.125,
    }


def test_diffusion_dpo_diffusers_convention_has_twice_the_scale():
    loss, metrics = diffusion_dpo_loss(MODEL_W, MODEL_L, REF_W, REF_L, beta=4.0, convention="diffusers")
    expected = (softplus(-2) + math.log(2) + softplus(1) + softplus(-4)) / 4
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert metrics["inside"] == 1.25
    assert metrics["implicit_acc"] == 0.625


def test_salesforce_beta_is_exactly_twice_diffusers_beta():
    torch.manual_seed(0)
    mw, ml, rw, rl = torch.rand(4, 8).unbind()
    salesforce, _ = diffusion_dpo_loss(mw, ml, rw, rl, beta=5000.0, convention="salesforce")
    diffusers, _ = diffusion_dpo_loss(mw, ml, rw, rl, beta=2500.0, convention="diffusers")
    assert salesforce.item() == diffusers.item()
    assert salesforce.item() > 1.0  # random MSEs at beta 5000: far from log 2, so the check compares something


def test_diffusion_dpo_is_log2_when_model_equals_reference():
    torch.manual_seed(0)
    mw, ml = torch.rand(2, 8).unbind()
    loss, metrics = diffusion_dpo_loss(mw, ml, mw.clone(), ml.clone(), beta=5000.0, convention="salesforce")
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert metrics["implicit_acc"] == 0.5
    assert metrics["inside"] == 0.0


def test_diffusion_dpo_gradient_lowers_winner_error_and_raises_loser_error():
    mw, ml = MODEL_W.clone().requires_grad_(), MODEL_L.clone().requires_grad_()
    loss, _ = diffusion_dpo_loss(mw, ml, REF_W, REF_L, beta=4.0, convention="salesforce")
    loss.backward()
    assert (mw.grad > 0).all() and (ml.grad < 0).all()
    # d/dmw softplus(-2 * (ref_diff - (mw - ml))) / 4 = 2 * sigmoid(-inside) / 4; pair 2 has inside 0
    assert mw.grad[1].item() == pytest.approx(0.25, abs=1e-7)


def test_diffusion_dpo_rejects_an_unknown_convention():
    with pytest.raises(ValueError, match="'trl'.*salesforce, diffusers"):
        diffusion_dpo_loss(MODEL_W, MODEL_L, REF_W, REF_L, beta=1.0, convention="trl")


def test_sft_loss_is_the_mean_of_per_sample_mses():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert sft_loss(pred, torch.ones(2, 2)).item() == 3.5  # per sample [0.5, 6.5]


STUDENT_FEATS = [torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0, 3.0]])]  # MSEs 2 and 2.25
TEACHER_FEATS = [torch.zeros(1, 2), torch.zeros(1, 4)]


def test_feature_mse_averages_per_layer_mses():
    assert feature_mse(STUDENT_FEATS, TEACHER_FEATS).item() == 2.125


def test_kd_loss_weights_output_and_features():
    student_out, teacher_out = torch.ones(1, 2), torch.zeros(1, 2)  # output MSE 1
    loss, metrics = kd_loss(student_out, teacher_out, STUDENT_FEATS, TEACHER_FEATS, feature_weight=2.0)
    assert loss.item() == 5.25  # 1 + 2 * 2.125
    assert metrics == {"output_mse": 1.0, "feature_mse": 2.125}
    loss, _ = kd_loss(student_out, teacher_out, STUDENT_FEATS, TEACHER_FEATS, feature_weight=2.0, output_weight=0.5)
    assert loss.item() == 4.75


def test_kd_loss_rejects_unpaired_feature_lists():
    with pytest.raises(ValueError, match="student has 2 feature maps but teacher has 1"):
        kd_loss(torch.ones(1, 2), torch.zeros(1, 2), STUDENT_FEATS, TEACHER_FEATS[:1], feature_weight=1.0)
    with pytest.raises(ValueError, match="no feature maps"):
        feature_mse([], [])


# ---------------------------------------------------------------------------------------------
# Components on the tiny AnimateDiff: winners from the teacher, losers from a copy without a motion module

PROMPTS = ["a red square moving left", "a blue circle moving up"]
PRUNED_BLOCK = "up_blocks.0.motion_modules.1"
SEED = 7


@pytest.fixture(scope="module")
def teacher() -> vipkit.VideoModel:
    model = tiny_model("animatediff", height=16, width=16, num_frames=4, num_inference_steps=2)
    for parameter in model.trainable_parameters("all"):  # left trainable on purpose: the losses must not touch it
        assert parameter.requires_grad
    return model


@pytest.fixture(scope="module")
def pairs(teacher):
    """(winner latents, loser latents, conditioning) of the two prompts."""
    pruned = teacher.copy()
    pruned.remove_block(PRUNED_BLOCK)
    winners = teacher.generate(PROMPTS, [0, 1]).latents
    losers = pruned.generate(PROMPTS, [0, 1]).latents
    return winners, losers, teacher.encode_prompts(PROMPTS)


def batch_of(pairs, seed: int = SEED) -> vipkit.PairBatch:
    winners, losers, conditioning = pairs
    return vipkit.PairBatch(winners, losers, conditioning, torch.Generator().manual_seed(seed))


def pruned_student(teacher) -> vipkit.VideoModel:
    """A student as the engine trains it: a pruned copy with only its motion modules trainable."""
    student = teacher.copy()
    student.remove_block(PRUNED_BLOCK)
    for parameter in student.trainable_parameters("all"):
        parameter.requires_grad_(False)
    for parameter in student.trainable_parameters("motion"):
        parameter.requires_grad_(True)
    return student


def redrawn_noise(model: vipkit.VideoModel, winners: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise and timesteps a loss draws from ``batch_of``'s generator, drawn again by hand."""
    generator = torch.Generator().manual_seed(SEED)
    noise = torch.randn(winners.shape, generator=generator)
    return noise, torch.randint(0, model.num_train_timesteps, (winners.shape[0],), generator=generator)


@torch.no_grad()
def predicted(model, latents, noise, timesteps, conditioning) -> torch.Tensor:
    return model.predict_noise(model.add_noise(latents, noise, timesteps), timesteps, conditioning)


def build(name: str, **options):
    return load_plugins().registry("losses").get(name).from_options(options)


class ForwardCounter:
    """Batch size of every UNet forward of a model, through a forward hook on its pipeline's UNet."""

    def __init__(self, model: vipkit.VideoModel) -> None:
        self.batch_sizes: list[int] = []
        self.handle = model.pipeline().unet.register_forward_hook(
            lambda module, args, output: self.batch_sizes.append(args[0].shape[0])
        )

    def __enter__(self) -> ForwardCounter:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def test_losses_are_registered_with_validated_configs():
    assert {"redpo", "sft", "kd"} <= set(load_plugins().registry("losses").names())
    redpo = build("redpo")
    assert (redpo.config.beta, redpo.config.beta_convention, redpo.config.sft_weight) == (5000.0, "salesforce", 1e4)
    for name, bad in [
        ("redpo", {"beta": 0}),
        ("redpo", {"reference": "ema"}),
        ("sft", {"target": "x0"}),
        ("kd", {"feature_weight": -1}),
        ("kd", {"temperature": 2}),
    ]:
        with pytest.raises(ValueError):
            build(name, **bad)


def test_redpo_shares_the_teacher_forward_and_matches_the_loss_computed_by_hand(teacher, pairs):
    student = pruned_student(teacher)
    with ForwardCounter(teacher) as calls:
        output = build("redpo").compute(student, teacher, batch_of(pairs))
    assert calls.batch_sizes == [4]  # one teacher forward on [winners; losers], reused as the SFT target

    # by hand, computing the teacher twice (reference on each half, SFT target on the winners)
    winners, losers, conditioning = pairs
    noise, timesteps = redrawn_noise(student, winners)
    student_w, student_l = (predicted(student, x, noise, timesteps, conditioning) for x in (winners, losers))
    teacher_w, teacher_l = (predicted(teacher, x, noise, timesteps, conditioning) for x in (winners, losers))
    teacher_w_again = predicted(teacher, winners, noise, timesteps, conditioning)
    mse = per_sample_mse  # epsilon model: the target is the noise
    inside = 2500 * ((mse(teacher_w, noise) - mse(teacher_l, noise)) - (mse(student_w, noise) - mse(student_l, noise)))
    dpo = -torch.nn.functional.logsigmoid(inside).mean().item()
    sft = (student_w - teacher_w_again).pow(2).mean().item()

    assert output.metrics["dpo"] == pytest.approx(dpo, rel=1e-3)
    assert output.metrics["sft"] == pytest.approx(sft, rel=1e-4)
    assert output.loss.item() == pytest.approx(dpo + 1e4 * sft, rel=1e-3)
    assert 0.1 < output.metrics["dpo"] < 5 and output.metrics["dpo"] != pytest.approx(math.log(2), abs=1e-3)
    assert set(output.metrics) == {"loss", "dpo", "sft", "implicit_acc", "inside", "model_diff", "ref_diff"}
    assert all(
        isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad for v in output.metrics.values()
    )  # read once per step


def test_redpo_gradients_reach_only_the_student(teacher, pairs):
    student = pruned_student(teacher)
    build("redpo").compute(student, teacher, batch_of(pairs)).loss.backward()
    assert all(parameter.grad is None for parameter in teacher.trainable_parameters("all"))
    motion_grads = [parameter.grad for parameter in student.trainable_parameters("motion")]
    assert all(grad is not None for grad in motion_grads)
    assert sum(grad.abs().sum().item() for grad in motion_grads) > 0


def test_redpo_student_init_reference_starts_at_log2_and_is_frozen(teacher, pairs):
    student = pruned_student(teacher)
    loss = build("redpo", reference="student_init")
    with pytest.raises(VipkitError, match="begin_stage"):
        loss.compute(student, teacher, batch_of(pairs))
    loss.begin_stage(student, teacher)
    reference = loss.student_init
    with ForwardCounter(teacher) as teacher_calls, ForwardCounter(reference) as reference_calls:
        output = loss.compute(student, teacher, batch_of(pairs))
    assert output.metrics["dpo"] == pytest.approx(math.log(2), abs=1e-6)
    assert output.metrics["implicit_acc"] == 0.5
    assert reference_calls.batch_sizes == [4]
    assert teacher_calls.batch_sizes == [2]  # the SFT target: the teacher on the winners only
    assert output.metrics["sft"] > 0
    output.loss.backward()
    assert all(
        not parameter.requires_grad and parameter.grad is None for parameter in reference.trainable_parameters("all")
    )


def test_redpo_noise_target_anchors_to_the_true_noise(teacher, pairs):
    student = pruned_student(teacher)
    with ForwardCounter(teacher) as calls:
        output = build("redpo", sft_target="noise", dpo_weight=0.0, sft_weight=2.0).compute(
            student, teacher, batch_of(pairs)
        )
    assert calls.batch_sizes == [4]  # the reference only
    winners, _, conditioning = pairs
    noise, timesteps = redrawn_noise(student, winners)
    prediction = predicted(student, winners, noise, timesteps, conditioning)
    expected = (prediction - noise).pow(2).mean().item()
    assert output.metrics["sft"] == pytest.approx(expected, rel=1e-4)
    assert output.loss.item() == pytest.approx(2.0 * expected, rel=1e-4)  # dpo_weight 0 drops the DPO term


def test_redpo_uncond_anchor_regresses_the_empty_prompt_prediction_to_the_teachers(teacher, pairs):
    student = pruned_student(teacher)
    plain = build("redpo").compute(student, teacher, batch_of(pairs))
    loss = build("redpo", uncond_weight=3.0)
    with pytest.raises(VipkitError, match="begin_stage"):
        loss.compute(student, teacher, batch_of(pairs))
    loss.begin_stage(student, teacher)
    with ForwardCounter(teacher) as teacher_calls:
        output = loss.compute(student, teacher, batch_of(pairs))
    assert teacher_calls.batch_sizes == [4, 2]  # the shared reference, then the empty prompt on the winners
    winners, _, conditioning = pairs
    noise, timesteps = redrawn_noise(student, winners)
    empty = teacher.encode_prompts([""]).expand_as(conditioning)
    expected = (
        (predicted(student, winners, noise, timesteps, empty) - predicted(teacher, winners, noise, timesteps, empty))
        .pow(2)
        .mean()
        .item()
    )
    assert expected > 0 and output.metrics["uncond"] == pytest.approx(expected, rel=1e-4)
    assert output.loss.item() == pytest.approx(plain.loss.item() + 3.0 * expected, rel=1e-4)


def test_redpo_conventions_agree_at_salesforce_5000_and_diffusers_2500(teacher, pairs):
    student = pruned_student(teacher)
    salesforce = build("redpo", beta=5000, beta_convention="salesforce").compute(student, teacher, batch_of(pairs))
    diffusers = build("redpo", beta=2500, beta_convention="diffusers").compute(student, teacher, batch_of(pairs))
    doubled = build("redpo", beta=5000, beta_convention="diffusers").compute(student, teacher, batch_of(pairs))
    assert salesforce.loss.item() == diffusers.loss.item()
    assert salesforce.metrics["inside"] == diffusers.metrics["inside"]
    assert doubled.metrics["inside"].item() == pytest.approx(2 * salesforce.metrics["inside"].item(), rel=1e-6)


def test_redpo_adamw_steps_on_one_pair_lower_the_loss(teacher, pairs):
    student = pruned_student(teacher)
    loss = build("redpo")
    optimizer = torch.optim.AdamW(student.trainable_parameters("motion"), lr=1e-4)
    student.train_mode(True)
    history = []
    for _ in range(4):
        output = loss.compute(student, teacher, batch_of(pairs))  # same noise and timesteps every step
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        history.append(output.loss.item())
    assert history[-1] < 0.8 * history[0]
    assert history == sorted(history, reverse=True)


def test_sft_targets(teacher, pairs):
    copy = teacher.copy()
    assert build("sft").compute(copy, teacher, batch_of(pairs)).loss.item() == 0.0  # an identical student
    student = pruned_student(teacher)
    with ForwardCounter(teacher) as calls:
        to_teacher = build("sft").compute(student, teacher, batch_of(pairs))
    assert calls.batch_sizes == [2]  # winners only
    to_noise = build("sft", target="noise").compute(student, teacher, batch_of(pairs))
    winners, _, conditioning = pairs
    noise, timesteps = redrawn_noise(student, winners)
    student_pred = predicted(student, winners, noise, timesteps, conditioning)
    teacher_pred = predicted(teacher, winners, noise, timesteps, conditioning)
    assert to_teacher.loss.item() == pytest.approx((student_pred - teacher_pred).pow(2).mean().item(), rel=1e-4)
    assert to_noise.loss.item() == pytest.approx((student_pred - noise).pow(2).mean().item(), rel=1e-4)
    assert to_noise.loss.item() > 10 * to_teacher.loss.item()  # the pruned student is close to its teacher


def test_kd_distils_a_block_removed_student(teacher, pairs):
    assert build("kd").compute(teacher.copy(), teacher, batch_of(pairs)).loss.item() == 0.0
    student = pruned_student(teacher)
    winners, _, conditioning = pairs
    timesteps = torch.tensor([500, 500])
    _, student_feats = student.predict_noise(winners, timesteps, conditioning, features=True)
    _, teacher_feats = teacher.predict_noise(winners, timesteps, conditioning, features=True)
    assert [f.shape for f in student_feats] == [f.shape for f in teacher_feats] and len(teacher_feats) == 5

    with ForwardCounter(teacher) as calls:
        output = build("kd", feature_weight=0.5).compute(student, teacher, batch_of(pairs))
    assert calls.batch_sizes == [2]
    metrics = output.metrics
    assert metrics["output_mse"] > 0 and metrics["feature_mse"] > 0
    assert output.loss.item() == pytest.approx((metrics["output_mse"] + 0.5 * metrics["feature_mse"]).item(), rel=1e-6)
    output.loss.backward()
    assert all(parameter.grad is None for parameter in teacher.trainable_parameters("all"))
    assert any(
        parameter.grad is not None and parameter.grad.abs().sum() > 0
        for parameter in student.trainable_parameters("motion")
    )

    with ForwardCounter(teacher) as calls:
        both = build("kd", on="both", output_weight=0.0).compute(student, teacher, batch_of(pairs))
    assert calls.batch_sizes == [4]
    assert both.loss.item() == pytest.approx(both.metrics["feature_mse"].item(), rel=1e-6)


def split_invariant_batch(pairs, rows: list[int]) -> vipkit.PairBatch:
    """Rows of the pairs with one generator per pair, seeded by the pair's index (as the trainer does)."""
    winners, losers, conditioning = pairs
    return vipkit.PairBatch(
        winners[rows],
        losers[rows],
        conditioning[rows],
        torch.Generator().manual_seed(0),
        pair_generators=[torch.Generator().manual_seed(SEED * 100 + row) for row in rows],
    )


@pytest.mark.parametrize("name", ["redpo", "sft", "kd"])
def test_pair_generators_make_a_split_batch_give_the_whole_batch_loss(teacher, pairs, name):
    """The loss of two pairs together equals the mean of each pair alone: what DDP and accumulation rely on."""
    loss = build(name)
    student = pruned_student(teacher)
    whole = loss.compute(student, teacher, split_invariant_batch(pairs, [0, 1])).loss
    alone = [loss.compute(student, teacher, split_invariant_batch(pairs, [row])).loss for row in (0, 1)]
    # Batches of 2 and of 1 (or reordered rows) run the UNet's kernels with other blockings, so each pair's MSE
    # differs in the last float32 bits (~1e-7 relative); ReDPO multiplies MSE differences by beta = 5000, which
    # has made that 9e-5 on a loaded 2-core machine. 1e-3 stays far below what a wrong split gives (13-75 %, below).
    torch.testing.assert_close(whole, (alone[0] + alone[1]) / 2, rtol=1e-3, atol=1e-6)
    reordered = loss.compute(student, teacher, split_invariant_batch(pairs, [1, 0])).loss
    torch.testing.assert_close(reordered, whole, rtol=1e-3, atol=1e-6)
    # with the shared generator the split changes the draws, so the halves do not add up
    shared_alone = [
        loss.compute(student, teacher, batch_of((w[[r]], lose[[r]], c[[r]]))).loss
        for r in (0, 1)
        for w, lose, c in [pairs]
    ]
    assert not torch.allclose(whole, (shared_alone[0] + shared_alone[1]) / 2, rtol=1e-2)


def test_pair_generators_draw_noise_then_timestep_per_pair(teacher, pairs):
    from vipkit_losses.noising import draw_noise

    batch = split_invariant_batch(pairs, [0, 1])
    noise, timesteps = draw_noise(batch, teacher.num_train_timesteps)
    for position, row in enumerate((0, 1)):
        generator = torch.Generator().manual_seed(SEED * 100 + row)
        assert torch.equal(noise[position], torch.randn(pairs[0].shape[1:], generator=generator))
        assert timesteps[position] == torch.randint(0, teacher.num_train_timesteps, (1,), generator=generator).item()
    with pytest.raises(ValueError, match="1 pair generators for 2 pairs"):
        draw_noise(vipkit.PairBatch(*pairs, torch.Generator(), pair_generators=batch.pair_generators[:1]), 1000)
