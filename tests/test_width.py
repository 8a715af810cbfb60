"""Width pruning (the ``width`` pruner: fewer heads, head channels and feed-forward channels, through torch-pruning) on
real tiny diffusers models: layers really shrink to the budget, the model still generates, saved models load back to
the same outputs, a stored decision replays to the same model, exports refuse, and recipes mix it with block removal
through ``[[pruners]]`` (a whole run, resumed; the plan's per-stage budgets; bad tables as exit-2 errors)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vipkit
from vipkit import VipkitError
from vipkit.engine import compress, prepare
from vipkit.export import export_model
from vipkit.interfaces import Plan
from vipkit.measure import flops_by_module
from vipkit.plugins import load_plugins
from vipkit.recipe import RecipeError, load_recipe
from vipkit.saved_model import save_model
from vipkit.testing import tiny_model

ROOT = Path(__file__).parents[1]
RECIPE = ROOT / "tests" / "recipes" / "micro_width.toml"
ANIMATEDIFF = {"height": 16, "width": 16, "num_frames": 4, "num_inference_steps": 2}
PROMPT = "a red ball rolling left"
MOTION = ("motion_module",)


def width(**options):
    cls = load_plugins().registry("pruners").get("width")
    return cls(cls.Config(**options))


def plan_for(model, kinds: tuple[str, ...], stages: int = 1) -> Plan:
    return Plan(model, None, stages, kinds, tuple(model.blocks_of(kinds)), (PROMPT,), (0,))


def scope_parameters(model, kinds: tuple[str, ...]) -> int:
    """Parameters in the outermost blocks of ``kinds`` (what the width budget counts)."""
    blocks = model.blocks_of(kinds)
    names = {b.name for b in blocks}
    return sum(b.params for b in blocks if not any(b.name.startswith(f"{n}.") for n in names))


def narrowed(model, kinds: tuple[str, ...], **options):
    """A pruned copy of ``model``, the decision lines, and the pruner's config."""
    pruner = width(**options)
    student = model.copy()
    pruner.begin_stage(plan_for(model, kinds), 1)
    return student, pruner.apply(student, []), options


@pytest.fixture(scope="module")
def animatediff():
    teacher = tiny_model("animatediff", **ANIMATEDIFF)
    student, decisions, options = narrowed(teacher, MOTION, fraction=0.5)
    return teacher, student, decisions, options


def test_motion_modules_shrink_to_the_budget_and_still_generate(animatediff) -> None:
    teacher, student, decisions, _ = animatediff
    before, after = scope_parameters(teacher, MOTION), scope_parameters(student, MOTION)
    gone = before - after
    # at least the budget; past it by less than one unit (a head here is ~1 % of the motion modules)
    assert 0.5 * before <= gone <= 0.51 * before, (before, after)
    assert teacher.num_parameters() - student.num_parameters() == gone  # nothing outside the motion modules changed
    assert teacher.num_parameters() == 1_228_388  # the teacher is untouched by its copy's pruning
    # real smaller layers, every recorded shape the module's own
    assert len(decisions) == len(student.resized_layers) == 21  # 7 motion modules × (attn1, attn2, ff)
    for path, record in student.resized_layers.items():
        layer, original = student.denoiser().get_submodule(path), teacher.denoiser().get_submodule(path)
        shapes = {name: list(p.shape) for name, p in layer.named_parameters()}
        assert shapes == record["parameters"]
        assert sum(p.numel() for p in layer.parameters()) < sum(p.numel() for p in original.parameters())
        if "heads" in record["attributes"]:
            assert layer.heads == record["attributes"]["heads"] < original.heads
            assert layer.to_q.out_features == layer.heads * (original.to_q.out_features // original.heads)
    # FLOPs per denoiser call go down with them
    flops, teacher_flops = flops_by_module(student), flops_by_module(teacher)
    motion = [b.name for b in teacher.blocks_of(MOTION)]
    motion_flops = sum(flops[p] for p in motion) / sum(teacher_flops[p] for p in motion)
    assert motion_flops < 0.75 and flops[""] < teacher_flops[""]
    videos, reference = student.generate([PROMPT], [1]).videos, teacher.generate([PROMPT], [1]).videos
    assert videos.shape == reference.shape and torch.isfinite(videos).all()
    assert not torch.equal(videos, reference)


def test_a_stored_decision_replays_to_the_same_model(animatediff) -> None:
    teacher, student, decisions, options = animatediff
    pruner, fresh = width(**options), teacher.copy()  # a new process resuming the stage: new pruner, the same lines
    pruner.begin_stage(plan_for(teacher, MOTION), 1)
    pruner.replay(fresh, decisions)
    assert fresh.resized_layers == student.resized_layers
    state, expected = fresh.denoiser().state_dict(), student.denoiser().state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in expected)


def test_saved_model_loads_back_narrow_with_the_same_videos_and_export_refuses(animatediff, tmp_path: Path) -> None:
    _, student, _, _ = animatediff
    save_model(student, tmp_path / "model")
    manifest = json.loads((tmp_path / "model" / "vipkit_model.json").read_text())
    assert manifest["resized_layers"] == student.resized_layers
    assert not (tmp_path / "model" / "model_index.json").exists()  # plain diffusers cannot take it for the full UNet
    loaded = vipkit.load_model(tmp_path / "model")
    assert loaded.num_parameters() == student.num_parameters() and loaded.resized_layers == student.resized_layers
    assert torch.equal(loaded.generate([PROMPT], [4]).videos, student.generate([PROMPT], [4]).videos)
    with pytest.raises(VipkitError, match=r"width pruning made 21 of its layers narrower.*vipkit.load"):
        export_model(tmp_path / "model", "diffusers", tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_a_dit_family_narrows_after_block_removal_and_reloads(tmp_path: Path) -> None:
    """Wan: a block removed first (saved folders renumber the kept blocks), then heads and feed-forward channels."""
    teacher = tiny_model("wan", num_inference_steps=2)
    kinds = ("transformer_block",)
    before = scope_parameters(teacher, kinds)
    student = teacher.copy()
    student.remove_block("blocks.1")
    pruner = width(fraction=0.5)
    pruner.begin_stage(plan_for(teacher, kinds), 1)
    decisions = pruner.apply(student, [])
    assert decisions and not any(line.startswith("blocks.1.") for line in decisions)
    assert 0.5 * before <= before - scope_parameters(student, kinds) <= 0.6 * before  # a tiny head is 6 % here
    assert flops_by_module(student)[""] < flops_by_module(teacher)[""]
    save_model(student, tmp_path / "model")
    loaded = vipkit.load_model(tmp_path / "model")
    assert loaded.resized_layers == student.resized_layers and loaded.removed_blocks == ["blocks.1"]
    assert torch.equal(loaded.generate([PROMPT], [2]).videos, student.generate([PROMPT], [2]).videos)
    with pytest.raises(VipkitError, match="narrower than its wan architecture's config"):
        export_model(tmp_path / "model", "diffusers", tmp_path / "export")


def test_head_channels_break_rotary_attention_with_a_clear_error() -> None:
    teacher = tiny_model("wan", num_inference_steps=2)
    pruner = width(fraction=0.3, attention="head_channels", feed_forward=False)
    pruner.begin_stage(plan_for(teacher, ("self_attention",)), 1)
    with pytest.raises(VipkitError, match='rotary position embeddings .* use attention = "heads"'):
        pruner.apply(teacher.copy(), [])


def test_blocks_then_width_in_one_recipe_runs_resumes_and_plans_each_stage(tmp_path: Path) -> None:
    recipe, lines = load_recipe(RECIPE), []
    out = tmp_path / "run"
    results = compress(recipe, RECIPE.read_text(), out, log=lines.append)
    plan = [line for line in lines if line.startswith("stage ") and " prunes: " in line]
    assert plan[0].startswith("stage 1 prunes: block: 1 block(s) per stage") and "GFLOP per denoiser call" in plan[0]
    assert plan[1].startswith("stage 2 prunes: width (heads + feed-forward channels, magnitude importance)")
    assert "parameters ≤ 50.0% of the teacher's 435,424" in plan[1] and "GFLOP per denoiser call" in plan[1]
    removed = [json.loads((out / "stages" / f"stage-00{s}.pairs" / "prune.json").read_text()) for s in (1, 2)]
    assert [line.split()[0] for line in removed[0]["removed_blocks"]] == ["[block]"]
    assert {line.split()[0] for line in removed[1]["removed_blocks"]} == {"[width]"}
    final = vipkit.load_model(out / "model")
    assert scope_parameters(final, MOTION) <= 0.51 * 435_424 and final.resized_layers
    assert results["final"]["parameters"] == final.num_parameters()
    # stage 2 again from its stored decision and pairs (as after a kill): the same model, bit for bit
    first = (out / "model" / "unet" / "vipkit_pruned_unet.safetensors").read_bytes()
    shutil.rmtree(out / "stages" / "stage-002")
    compress(recipe, RECIPE.read_text(), out, log=lines.append)
    assert any("stage 2: reusing the stored pruning decision" in line for line in lines)
    assert (out / "model" / "unet" / "vipkit_pruned_unet.safetensors").read_bytes() == first
    # a budget the narrowed layers cannot give is found before anything runs, under its recipe key
    plugins = load_plugins()
    too_much = load_recipe(RECIPE, overrides=["pruners[1].fraction=0.95", "pruners[1].attention=none"])
    with pytest.raises(RecipeError, match=r"pruners\[1\]\.fraction: 0.95 of the 435,424 parameters"):
        prepare(too_much, plugins, log=lambda line: None)


BAD_PRUNERS = """
[[pruners]]
name = "block"
blocks_per_stage = 1
stages = [1, 5]

[[pruners]]
name = "width"
fraction = 1.5
stages = [1]

[[pruners]]
name = "width"
fractoin = 0.5
stages = "all"
"""


def test_bad_pruners_tables_are_one_paragraph_errors_with_exit_code_2(tmp_path: Path) -> None:
    text = RECIPE.read_text()
    start, end = text.index("[[pruners]]"), text.index("[curator]")
    bad, both, gap = tmp_path / "bad.toml", tmp_path / "both.toml", tmp_path / "gap.toml"
    bad.write_text(text[:start] + BAD_PRUNERS.lstrip() + "\n" + text[end:])
    both.write_text(text[:start] + '[pruner]\nname = "block"\n\n' + text[start:])
    gap.write_text(text[:start] + '[[pruners]]\nname = "block"\nstages = [1]\n\n' * 2 + text[end:])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for path, expected in (
        (
            bad,
            [
                "pruners[0].stages: stage 5 is outside the schedule's stages 1-2",
                "pruners[1].fraction",
                "pruners[2].fractoin",
                "did you mean 'fraction'",
                "pruners[2].stages: must be a list of distinct stage numbers",
            ],
        ),
        (both, ["pruner: has both [pruner] and [[pruners]]"]),
        (gap, ["pruners: stage 2 of the 2 stages (schedule.stages) has no pruner", "pruners[1]: a second 'block'"]),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "vipkit", "validate", str(path)], capture_output=True, text=True, env=env, cwd=ROOT
        )
        assert result.returncode == 2, result.stderr
        assert all(part in result.stderr for part in expected), result.stderr
        assert "Traceback" not in result.stderr


def _traced(model, calibration):
    """The motion modules' first attention layer with more than one head and first feed-forward layer, traced."""
    from vipkit_width.layers import LayerGraph, find_layers

    roots = [block.name for block in model.blocks_of(MOTION)][:1]
    layers = find_layers(model.denoiser(), roots, "heads", True)
    chosen = [next(layer for layer in layers if layer.kind == kind) for kind in ("attention", "feed_forward")]
    inputs, _ = calibration.first_call(model, [layer.module for layer in chosen])
    return [LayerGraph(layer, given) for layer, given in zip(chosen, inputs, strict=True)]


def test_loss_drop_importance_is_the_loss_rise_of_really_removing_each_group() -> None:
    """Zeroing what the output Linear reads is exactly removing the units: each head's importance equals the
    calibration loss's rise when a copy of the model loses that head for real, and each channel group's likewise."""
    from vipkit_width.calibration import Calibration
    from vipkit_width.importance import _unit_groups, unit_importance

    teacher = tiny_model("animatediff", **ANIMATEDIFF)
    calibration = Calibration.render(teacher, [PROMPT, "a blue square moving up"], [0, 1], levels=2)
    base = calibration.loss(teacher)
    attention, feed_forward = graphs = _traced(teacher, calibration)
    importance = unit_importance("loss-drop", graphs, teacher, calibration, groups=3)
    assert calibration.loss(teacher) == base  # the hooks are gone: the model computes as before

    def rise_without(layer_index: int, units: list[int]) -> float:
        copy = teacher.copy()
        graph = _traced(copy, calibration)[layer_index]
        graph.remove(units)
        return calibration.loss(copy) - base

    assert attention.layer.units > 1
    for head in range(attention.layer.units):
        assert importance[0][head].item() == pytest.approx(rise_without(0, [head]), rel=1e-3, abs=1e-7)
    magnitude = unit_importance("magnitude", graphs, teacher, calibration, groups=3)[1]
    groups = _unit_groups(feed_forward.layer, magnitude, 3)
    assert len(groups) == 3 and sorted(c for g in groups for c in g) == list(range(feed_forward.layer.units))
    for units in groups:
        scores = importance[1][units]
        assert (scores.max() - scores.min()).item() < 1e-8  # one loss per group; magnitude only breaks ties
        assert scores[0].item() == pytest.approx(rise_without(1, units), rel=1e-3, abs=1e-7)


def test_taylor_importance_reads_the_calibration_loss_gradient() -> None:
    """A feed-forward channel the output Linear ignores (its column zeroed) has weight x gradient zero on every
    coupled tensor, so Taylor scores it 0 while its input rows keep their magnitude; every live channel scores above
    0; the pruner takes the dead channels first; and no gradient or requires_grad change is left behind."""
    from vipkit_width.calibration import Calibration
    from vipkit_width.decisions import parse_decision
    from vipkit_width.importance import unit_importance

    teacher = tiny_model("animatediff", **ANIMATEDIFF)
    first_ff = _traced(teacher, Calibration.render(teacher, [PROMPT], [0], levels=1))[1]
    dead = [3, 11]
    with torch.no_grad():
        first_ff.layer.output.weight[:, dead] = 0
    calibration = Calibration.render(teacher, [PROMPT], [0], levels=2)
    graphs = _traced(teacher, calibration)
    flags = [p.requires_grad for p in teacher.denoiser().parameters()]
    taylor = unit_importance("taylor", graphs, teacher, calibration, groups=3)[1]
    magnitude = unit_importance("magnitude", graphs, teacher, calibration, groups=3)[1]
    live = [c for c in range(len(taylor)) if c not in dead]
    assert taylor[dead].abs().max().item() == 0 and magnitude[dead].min().item() > 0
    assert taylor[live].min().item() > 0
    assert [p.requires_grad for p in teacher.denoiser().parameters()] == flags
    assert all(p.grad is None for p in teacher.denoiser().parameters())
    # the whole pruner with taylor importance, feed-forward channels only, one at a time: the dead ones go first
    pruner = width(fraction=0.02, importance="taylor", attention="none", multiple_of=1, calibration_videos=1)
    pruner.begin_stage(plan_for(teacher, MOTION), 1)
    student = teacher.copy()
    lines = pruner.apply(student, [])
    removed = {path: units for path, _, units in map(parse_decision, lines)}
    assert set(dead) <= set(removed[first_ff.layer.path])
