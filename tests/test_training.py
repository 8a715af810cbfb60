"""The trainer on the tiny AnimateDiff, one process: accumulation, schedules, LoRA, bf16, checkpoints, resume."""

from __future__ import annotations

import math

import pytest
import torch

import vipkit
from vipkit.checkpoint import CheckpointStore
from vipkit.plugins import load_plugins
from vipkit.recipe import TrainSection
from vipkit.saved_model import load_saved_model, save_model
from vipkit.testing import tiny_model
from vipkit.training import WeightedLoss, derive_seed, describe_split, lr_factor, micro_batches, train_on_pairs

PRUNED_BLOCK = "up_blocks.0.motion_modules.1"


@pytest.fixture(scope="module")
def teacher() -> vipkit.VideoModel:
    return tiny_model("animatediff", height=16, width=16, num_frames=4, num_inference_steps=2)


@pytest.fixture(scope="module")
def pairs(teacher) -> vipkit.PairSet:
    """Four pairs of seeded random latents in the tiny model's layout (B, C, F, h, w)."""
    generator = torch.Generator().manual_seed(11)
    winners, losers = torch.randn(2, 4, 4, 4, 8, 8, generator=generator)
    prompts = ["a red ball", "a blue square", "a green circle", "a white star"]
    return vipkit.PairSet(prompts, [0, 1, 2, 3], winners, losers, torch.zeros(4), torch.zeros(4), ["clip_score"])


def student_of(teacher: vipkit.VideoModel) -> vipkit.VideoModel:
    student = teacher.copy()
    student.remove_block(PRUNED_BLOCK)
    return student


def train(teacher, pairs, student=None, log=None, store=None, **settings) -> tuple[vipkit.VideoModel, dict]:
    student = student or student_of(teacher)
    loss = load_plugins().registry("losses").get("redpo").from_options({"sft_weight": 1.0})
    options = {"epochs": 2, "batch_size": 4, "learning_rate": 1e-3, **settings}
    summary = train_on_pairs(
        student,
        teacher,
        pairs,
        [WeightedLoss(1.0, loss)],
        TrainSection(**options),
        seed=5,
        log=log or (lambda m: None),
        stage=1,
        checkpoints=store,
        pairs_hash="h",
    )
    return student, summary


def weights(model: vipkit.VideoModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.denoiser().state_dict().items()}


def test_lr_factor_warms_up_then_follows_the_schedule():
    constant = lr_factor("constant", 2, 6)
    assert [constant(s) for s in range(4)] == [1 / 3, 2 / 3, 1.0, 1.0]
    linear = lr_factor("linear", 2, 6)
    assert [linear(s) for s in (2, 4, 6)] == [1.0, 0.5, 0.0]
    cosine = lr_factor("cosine", 0, 4)
    assert [round(cosine(s), 12) for s in range(5)] == [
        1.0,
        round(0.5 * (1 + math.cos(math.pi / 4)), 12),
        0.5,
        round(0.5 * (1 + math.cos(3 * math.pi / 4)), 12),
        0.0,
    ]


def test_micro_batches_deal_a_step_over_ranks_first_then_into_micro_batches_with_global_mean_weights():
    step = torch.tensor([4, 0, 2])

    def plan(accumulation: int, rank: int, world: int) -> list[tuple[list[int], float]]:
        return [(m.tolist(), w) for m, w in micro_batches(step, accumulation, rank, world)]

    assert plan(1, 0, 1) == [([4, 0, 2], 1.0)]
    assert plan(2, 0, 1) == [([4, 0], 2 / 3), ([2], 1 / 3)]
    assert plan(2, 0, 2) == [([4], 2 / 3), ([2], 2 / 3)]  # rank 0 holds pairs 4 and 2, one per micro-batch
    assert plan(2, 1, 2) == [([0], 2 / 3), ([4], 0.0)]  # rank 1 holds pair 0; its second forward is a weight-0 stand-in
    assert plan(3, 1, 2) == [([0], 2 / 3), ([4], 0.0)]  # never more micro-batches than the largest share has pairs
    assert plan(1, 1, 2) == [([0], 2 / 3)]  # one micro-batch: rank 0 trains 2 pairs in it, rank 1 one
    # a micro-batch weighs its mean loss; over ranks (DDP divides by world) the weights add up to 1: the global mean
    for accumulation in (1, 2, 3):
        assert sum(w / 2 for r in (0, 1) for _, w in plan(accumulation, r, 2)) == pytest.approx(1.0)
    # the case: 4 pairs in 4 micro-batches on 2 ranks = 2 real pairs per rank, no stand-in at all
    four = [micro_batches(torch.arange(4), 4, rank, 2) for rank in (0, 1)]
    assert [[(m.tolist(), w) for m, w in rank] for rank in four] == [[([0], 0.5), ([2], 0.5)], [([1], 0.5), ([3], 0.5)]]


def test_the_split_of_a_step_is_described_with_idle_processes_named():
    assert describe_split(4, 4, 1) == "4 pairs per step on 1 process: 4 micro-batches of ≤ 1 pair"
    assert describe_split(4, 4, 2) == "4 pairs per step on 2 processes: each runs 2 micro-batches of ≤ 1 pair"
    assert describe_split(16, 4, 2) == "16 pairs per step on 2 processes: each runs 2 micro-batches of ≤ 4 pairs"
    assert describe_split(4, 4, 8) == (
        "4 pairs per step on 8 processes: each runs 1 micro-batch of ≤ 1 pair; 4 of 8 forwards are weight-0 stand-ins "
        "(4 processes without any pair): a batch_size that is a multiple of 8 keeps every process busy"
    )
    assert "1 of 4 forwards are weight-0 stand-ins:" in describe_split(3, 2, 2)


def test_derive_seed_is_stable_and_separates_its_parts():
    assert (
        derive_seed(5, "pair", 1, 2) == derive_seed(5, "pair", 1, 2) == 4929614050137371246
    )  # pinned: changing it changes every run
    assert derive_seed(5, "pair", 1, 2) != derive_seed(5, "pair", 12)
    assert 0 <= derive_seed("x") < 2**63


def test_training_changes_only_the_scope_and_accumulation_gives_the_same_update(teacher, pairs):
    """SGD is linear in the gradient, so equal gradients show as equal weights (Adam would magnify
    float rounding of the near-zero gradients behind the motion modules' zero-initialised outputs)."""
    start = weights(student_of(teacher))
    whole, summary = train(teacher, pairs, optimizer="sgd")
    assert summary["steps"] == 2 and summary["resumed_at_step"] == 0 and math.isfinite(summary["last_loss"])
    after = weights(whole)
    changed = {k for k in start if not torch.equal(start[k], after[k])}
    assert changed and all("motion_modules" in k for k in changed)
    assert max((after[k] - start[k]).abs().max().item() for k in changed) > 5e-5
    for steps in (2, 4):  # micro-batches of 2 and of 1 pair, one optimizer step each
        accumulated, _ = train(teacher, pairs, optimizer="sgd", gradient_accumulation_steps=steps)
        for key, value in weights(accumulated).items():
            torch.testing.assert_close(value, after[key], rtol=0, atol=5e-7, msg=key)


def test_lr_schedule_and_sgd_reach_the_optimizer(teacher, pairs):
    records: list[dict] = []
    train(
        teacher,
        pairs,
        log=records.append,
        batch_size=1,
        epochs=1,
        optimizer="sgd",
        lr_schedule="linear",
        warmup_steps=1,
    )
    factor = lr_factor("linear", 1, 4)
    assert [r["lr"] for r in records] == pytest.approx([1e-3 * factor(s + 1) for s in range(4)])
    assert [r["step"] for r in records] == [0, 1, 2, 3]


@pytest.mark.parametrize("lora", [None, {"rank": 2}], ids=["full", "lora"])
def test_resume_from_a_checkpoint_is_bit_identical(teacher, pairs, tmp_path, lora):
    store = CheckpointStore(tmp_path / "checkpoints", keep=10)
    options = dict(
        batch_size=1, epochs=2, lr_schedule="cosine", warmup_steps=2, checkpoint_every=1, keep_checkpoints=10, lora=lora
    )
    reference, summary = train(teacher, pairs, store=store, **options)
    assert [p.name for p in store.complete()] == [f"stage-001-step-{s:08d}" for s in range(1, 9)]
    for late in store.complete()[3:]:
        late.rename(late.with_name(f".{late.name}.gone"))  # as if the run had been killed after step 3
    resumed, again = train(teacher, pairs, store=store, **options)
    assert (
        again["resumed_at_step"] == 3
        and again["first_loss"] == summary["first_loss"]
        and again["last_loss"] == summary["last_loss"]
    )
    for key, value in weights(reference).items():
        assert torch.equal(weights(resumed)[key], value), key
    done, finished = train(teacher, pairs, store=store, **options)  # the end-of-training checkpoint: nothing left to do
    assert finished["resumed_at_step"] == 8 and all(
        torch.equal(weights(done)[k], v) for k, v in weights(reference).items()
    )


def test_lora_trains_adapters_inside_the_scope_and_merges_them_on_exit(teacher, pairs, tmp_path):
    start = weights(student_of(teacher))
    student, _ = train(teacher, pairs, lora={"rank": 2, "alpha": 4.0, "target_modules": ["to_q", "to_v"]})
    after = weights(student)
    assert set(after) == set(start)  # merged: no adapter left, plain layers, loads without peft
    assert not any("lora" in type(m).__name__.lower() for m in student.denoiser().modules())
    changed = {k for k in start if not torch.equal(start[k], after[k])}
    assert changed and all(
        "motion_modules" in k and (".to_q." in k or ".to_v." in k) and k.endswith("weight") for k in changed
    )
    save_model(student, tmp_path / "model")
    reloaded = load_saved_model(tmp_path / "model")
    assert all(torch.equal(reloaded.denoiser().state_dict()[k], v) for k, v in after.items())


def test_lora_that_matches_nothing_is_a_clear_error(teacher, pairs):
    with pytest.raises(vipkit.errors.VipkitError, match="match no Linear layer inside the trainable scope"):
        train(teacher, pairs, lora={"target_modules": ["no_such_layer"]})


def test_bf16_autocast_and_gradient_checkpointing_train(teacher, pairs):
    reference = weights(train(teacher, pairs, optimizer="sgd")[0])
    student = student_of(teacher)
    during: list[bool] = []
    checkpointed = train(
        teacher,
        pairs,
        student,
        lambda m: during.append(student.denoiser().is_gradient_checkpointing),
        optimizer="sgd",
        gradient_checkpointing=True,
    )[0]
    assert during == [True, True] and not checkpointed.denoiser().is_gradient_checkpointing  # off again for generation
    for key, value in weights(checkpointed).items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=5e-7, msg=key)
    bf16, summary = train(teacher, pairs, optimizer="sgd", mixed_precision="bf16")
    assert math.isfinite(summary["last_loss"])
    differences = [(weights(bf16)[k] - v).abs().max().item() for k, v in reference.items()]
    assert 1e-8 < max(differences) < 1e-4  # bf16 compute: a different, nearby update (the update itself is ~1e-4)


def test_recipe_train_keys_are_validated_with_their_key_paths():
    from pathlib import Path

    from vipkit.recipe import RecipeError, parse_recipe

    tiny = (Path(__file__).parents[1] / "recipes" / "tiny_vip.toml").read_text()
    bad = tiny.replace(
        'trainable = "motion"',
        """trainable = "motion"
gradient_accumulation_steps = 3
keep_checkpoints = 1
mixed_precision = "fp16"
lr_schedule = "step"
lora = { rank = 0, dropout = 0.1 }""",
    )
    with pytest.raises(RecipeError) as error:
        parse_recipe(bad)
    message = str(error.value)
    for expected in (
        "train.keep_checkpoints: Input should be greater than or equal to 2",
        "train.mixed_precision: Input should be 'no' or 'bf16'",
        "train.lr_schedule: Input should be 'constant', 'linear' or 'cosine'",
        "train.lora.rank: Input should be greater than or equal to 1",
        "train.lora.dropout: unknown option",
    ):
        assert expected in message, message
    with pytest.raises(RecipeError, match=r"gradient_accumulation_steps \(3\) must be <= batch_size \(2\)"):
        parse_recipe(tiny.replace('trainable = "motion"', 'trainable = "motion"\ngradient_accumulation_steps = 3'))
    good = parse_recipe(
        tiny.replace('trainable = "motion"', 'trainable = "motion"\nlora = { rank = 4 }\nmixed_precision = "bf16"')
    )
    assert good.train.lora.rank == 4 and good.train.lora.target_modules == ["to_q", "to_k", "to_v", "to_out.0"]


def test_compile_trains_the_same_update_through_compiled_student_and_teacher(teacher, pairs):
    """``train.compile``: both denoisers run compiled while training (the log sees them), plain again afterwards."""
    reference = weights(train(teacher, pairs, optimizer="sgd")[0])
    student = student_of(teacher)
    seen: list[tuple[str, str, dict]] = []

    def log(metrics: dict) -> None:
        seen.append((type(student._runner).__name__, type(teacher._runner).__name__, metrics))

    compiled = train(teacher, pairs, student, log, optimizer="sgd", compile=True)[0]
    assert [(s, t) for s, t, _ in seen] == [("OptimizedModule", "OptimizedModule")] * 2
    assert all(
        type(v) is float for _, _, metrics in seen for k, v in metrics.items() if "/" in k
    )  # loss tensors read once per step
    assert student._runner is student.denoiser() and teacher._runner is teacher.denoiser()
    for key, value in weights(compiled).items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def bf16_teacher() -> vipkit.VideoModel:
    return tiny_model("animatediff", height=16, width=16, num_frames=4, num_inference_steps=2, dtype="bfloat16")


def trained_master_weights(
    teacher, pairs, **settings
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], vipkit.VideoModel]:
    """The motion weights before training and as the optimizer left them at the last step (read while training)."""
    student = teacher.copy()
    names = {id(p): n for n, p in student.denoiser().named_parameters()}
    start = {n: p.detach().float().clone() for n, p in student.denoiser().named_parameters() if "motion_modules" in n}
    last: dict[str, torch.Tensor] = {}
    train(
        teacher,
        pairs,
        student,
        lambda m: last.update({names[id(p)]: p.detach().clone() for p in student.trainable_parameters("motion")}),
        **settings,
    )
    return start, last, student


def test_a_bf16_model_trains_float32_master_weights_with_the_update_of_a_float32_run(teacher, bf16_teacher, pairs):
    """One SGD step of the bf16 model (bf16 autocast, float32 master weights) ≈ the same step of a float32 model
    with the same (bf16-rounded) weights: only the forward's rounding differs."""
    fp32 = teacher.copy()
    fp32.denoiser().load_state_dict({k: v.float() for k, v in bf16_teacher.denoiser().state_dict().items()})
    updates = []
    for model in (bf16_teacher, fp32):
        start, last, student = trained_master_weights(
            model, pairs, optimizer="sgd", epochs=1, learning_rate=1e-2, max_grad_norm=None
        )
        assert {v.dtype for v in last.values()} == {
            torch.float32
        }  # master weights while training, whatever the model's dtype
        assert {v.dtype for v in student.denoiser().state_dict().values()} == {
            model.denoiser().dtype
        }  # the model's dtype again
        updates.append(torch.cat([(last[n] - start[n]).flatten() for n in start]))
    low, full = updates
    assert full.norm() > 1.0  # a real update
    assert (low - full).norm() / full.norm() < 0.1  # measured 0.036 (bf16 autocast on the CPU)
    assert torch.nn.functional.cosine_similarity(low, full, dim=0) > 0.995  # measured 0.9994


def test_small_updates_to_a_bf16_model_are_not_rounded_away(bf16_teacher, pairs):
    """AdamW at lr 1e-5 moves every trained tensor of the float32 master weights, also those whose bf16 value
    cannot change by 1e-5 (norm weights at 1.0: bf16 steps by 2^-7 there); the model gets them back rounded."""
    start, last, student = trained_master_weights(bf16_teacher, pairs, epochs=3, batch_size=2, learning_rate=1e-5)
    assert all(not torch.equal(last[n], start[n]) for n in start), [n for n in start if torch.equal(last[n], start[n])]
    final = dict(student.denoiser().named_parameters())
    assert all(torch.equal(final[n], last[n].to(torch.bfloat16)) for n in start)  # saved in the model's dtype
    # the named opt-out trains the bf16 weights in place: most of these updates are rounded away
    start, last, _ = trained_master_weights(
        bf16_teacher, pairs, epochs=3, batch_size=2, learning_rate=1e-5, trainable_dtype="model"
    )
    assert {v.dtype for v in last.values()} == {torch.bfloat16}
    assert sum(torch.equal(last[n].float(), start[n]) for n in start) > 10
