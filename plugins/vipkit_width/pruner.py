"""``width``: narrower attention and feed-forward layers (fewer heads, fewer channels) to a parameter or FLOPs budget.

Block removal takes whole blocks; width pruning keeps every block and takes its least important heads and
feed-forward channels, through torch-pruning's dependency graph (``vipkit_width.layers``): the pruned layers are
real, smaller layers, so parameters, FLOPs and time go down, and saved models record their shapes
(``VideoModel.note_resized``). The budget is a share of the teacher's parameters (or FLOPs per denoiser call) in the
blocks of ``block_kinds``, spread evenly over the stages the pruner acts in, counted on the model as it is: blocks
removed by a ``block`` pruner in the same schedule count toward it, so ``[[pruners]]`` can take blocks first and let
width pruning make up the rest.

Each stage narrows every layer by about the same share of its units, the least important first (``importance``),
until the stage's goal is met (``vipkit_width.budget``); every layer keeps at least one unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

import vipkit
from vipkit import VipkitError

if TYPE_CHECKING:
    from vipkit_width.calibration import Calibration
    from vipkit_width.layers import WidthLayer

PARTS = {"heads": "heads", "head_channels": "head channels", "none": ""}


class WidthPruner(vipkit.Pruner):
    """Removes heads and feed-forward channels from the attention and feed-forward layers inside the blocks of
    ``block_kinds`` until the stage's share of ``fraction`` is gone. Needs no block ranking: a stage where only this
    pruner acts runs no importance scorer."""

    name = "width"
    uses_ranking = False

    class Config(vipkit.Config):
        fraction: float = Field(
            ...,
            gt=0,
            lt=1,
            description="Share of the teacher's parameters (or FLOPs, `measure`) in blocks of `block_kinds` that is gone "
            "after the last stage this pruner acts in, an equal share per stage (after its k-th of K stages, k/K of "
            "it); blocks removed by other pruners count toward it.",
        )
        measure: Literal["parameters", "flops"] = Field(
            "parameters",
            description="What `fraction` counts: parameters, or FLOPs of one denoiser call (as torch counts them).",
        )
        block_kinds: list[str] | None = Field(
            None,
            min_length=1,
            description="Kinds of the blocks whose layers are narrowed and whose size `fraction` counts (e.g. "
            "motion_module, transformer_block); None: the schedule's (schedule.block_kinds).",
        )
        attention: Literal["heads", "head_channels", "none"] = Field(
            "heads",
            description="What attention layers lose: whole heads (layers with one head keep it), the same channels of "
            "every head (narrower heads; not for attention with rotary position embeddings), or nothing.",
        )
        feed_forward: bool = Field(True, description="Whether feed-forward layers lose hidden channels.")
        multiple_of: int = Field(
            8,
            gt=0,
            description="Feed-forward channels and head channels go in groups of this many, so each layer keeps a width "
            "that is a multiple of it (bf16 matrix products on GPUs slow down at widths that are not multiples of 8; 64 "
            "suits them best); 1: any width. Whole heads go one by one.",
        )
        importance: Literal["magnitude", "taylor", "loss-drop"] = Field(
            "magnitude",
            description="Which units go first: torch-pruning's group magnitude (no data), its Taylor importance of the "
            "noise-prediction loss on the teacher's calibration videos, or that loss's rise when a group is zeroed "
            "(heads one by one, channels in `loss_drop_groups` groups per layer).",
        )
        calibration_videos: int = Field(
            4,
            gt=0,
            description="Teacher videos of the first probe prompts (rendered once per run) that Taylor and loss-drop "
            "importance measure the loss on; magnitude renders one, to trace the layers.",
        )
        noise_levels: int = Field(2, gt=0, description="Noise levels (timesteps) per calibration video.")
        loss_drop_groups: int = Field(
            8, gt=0, description="loss-drop: groups of channels tried per layer (each costs one loss evaluation)."
        )

        @model_validator(mode="after")
        def _something_to_narrow(self) -> WidthPruner.Config:
            if self.attention == "none" and not self.feed_forward:
                raise ValueError("attention = 'none' and feed_forward = false leave nothing to narrow")
            return self

    config: Config

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        self._plan: vipkit.Plan | None = None
        self._stage = 0
        self._calibration: Calibration | None = None
        self._teacher_amount: float | None = None
        self._teacher_flops: dict[str, int] | None = None  # per module path, on the meta device (the plan's figures)

    # -- the schedule ---------------------------------------------------------------------------
    def begin_stage(self, plan: vipkit.Plan, stage: int) -> None:
        self._plan, self._stage = plan, stage

    def _kinds(self, plan: vipkit.Plan) -> tuple[str, ...]:
        return tuple(self.config.block_kinds or plan.block_kinds)

    def _scope(self, model: vipkit.VideoModel, plan: vipkit.Plan) -> list[str]:
        """The module paths of the blocks of ``block_kinds`` still present, outermost only."""
        from vipkit.prunable import PATH_JOIN

        blocks = model.blocks_of(self._kinds(plan))
        names = {block.name for block in blocks}
        outer = [b for b in blocks if not any(b.name.startswith(f"{other}.") for other in names)]
        return [path for block in outer for path in block.name.split(PATH_JOIN)]

    def _parameters_of(self, model: vipkit.VideoModel, plan: vipkit.Plan) -> int:
        denoiser = model.denoiser()
        return sum(p.numel() for path in self._scope(model, plan) for p in denoiser.get_submodule(path).parameters())

    # -- a stage --------------------------------------------------------------------------------
    def apply(self, model: vipkit.VideoModel, ranking: Sequence[vipkit.BlockImportance]) -> list[str]:
        from vipkit_width.budget import choose_units
        from vipkit_width.decisions import decision_line
        from vipkit_width.importance import unit_importance
        from vipkit_width.layers import LayerGraph, find_layers

        plan = self._begun()
        calibration = self._calibration_for(plan)
        cfg = self.config
        layers = find_layers(model.denoiser(), self._scope(model, plan), cfg.attention, cfg.feed_forward)
        if not layers:
            return []
        inputs, flops = calibration.first_call(model, [layer.module for layer in layers])
        teacher = self._teacher_total(plan, calibration)
        now = self._amount(model, plan, flops)
        goal = cfg.fraction * teacher * self._stage / plan.stages
        need = goal - (teacher - now)
        if need <= 0:  # blocks removed earlier already took this stage's share
            return []
        graphs = [LayerGraph(layer, given) for layer, given in zip(layers, inputs, strict=True)]
        if cfg.measure == "parameters":
            costs = [float(graph.parameters_per_unit()) for graph in graphs]
        else:
            costs = [flops.get(layer.path, 0) / layer.units for layer in layers]
        importance = unit_importance(cfg.importance, graphs, model, calibration, cfg.loss_drop_groups)
        steps = [layer.step(cfg.multiple_of) for layer in layers]
        chosen = choose_units(importance, costs, steps, need, self._shortfall(layers, plan))
        decisions = []
        for graph, units in zip(graphs, chosen, strict=True):
            if units:
                model.note_resized(graph.layer.path, graph.remove(units))
                decisions.append(decision_line(graph.layer.path, graph.layer.unit, units))
        return decisions

    def replay(self, model: vipkit.VideoModel, removed: Sequence[str]) -> None:
        """Narrow the layers as the stored lines say (each names its units as numbered before the stage)."""
        from vipkit_width.decisions import parse_decision
        from vipkit_width.layers import LayerGraph, WidthLayer

        if not removed:
            return
        calibration = self._calibration_for(self._begun())
        denoiser = model.denoiser()
        parsed = [parse_decision(line) for line in removed]
        layers = [
            WidthLayer(path, denoiser.get_submodule(path), "feed_forward" if unit == "channel" else "attention", unit)
            for path, unit, _ in parsed
        ]
        inputs, _ = calibration.first_call(model, [layer.module for layer in layers])
        for layer, given, (_, _, units) in zip(layers, inputs, parsed, strict=True):
            model.note_resized(layer.path, LayerGraph(layer, given).remove(units))

    def _begun(self) -> vipkit.Plan:
        if self._plan is None:
            raise VipkitError(
                "the width pruner needs begin_stage(plan, stage) before apply: it counts from the teacher"
            )
        return self._plan

    def _calibration_for(self, plan: vipkit.Plan) -> Calibration:
        """The teacher's calibration videos, rendered once per run."""
        from vipkit_width.calibration import Calibration

        if self._calibration is None:
            if not plan.probe_prompts:
                raise VipkitError("the width pruner needs the run's probe prompts (Plan.probe_prompts) to calibrate on")
            count = self.config.calibration_videos if self.config.importance != "magnitude" else 1
            prompts, seeds = plan.probe_prompts[:count], plan.probe_seeds[:count]
            self._calibration = Calibration.render(plan.model, prompts, seeds, self.config.noise_levels)
        return self._calibration

    def _amount(self, model: vipkit.VideoModel, plan: vipkit.Plan, flops: dict[str, int]) -> float:
        """What ``fraction`` counts in ``model`` now: its parameters in the scope, or the scope's FLOPs in ``flops``."""
        if self.config.measure == "parameters":
            return float(self._parameters_of(model, plan))
        return float(sum(flops.get(path, 0) for path in self._scope(model, plan)))

    def _teacher_total(self, plan: vipkit.Plan, calibration: Calibration) -> float:
        if self._teacher_amount is None:
            flops = calibration.first_call(plan.model, [])[1] if self.config.measure == "flops" else {}
            self._teacher_amount = self._amount(plan.model, plan, flops)
        return self._teacher_amount

    def _shortfall(self, layers: Sequence[WidthLayer], plan: vipkit.Plan) -> str:
        """The end of the error when even one unit per layer is too much to keep."""
        return (
            f"in the {', '.join(self._kinds(plan))} blocks' {len(layers)} layers to narrow, each keeping one unit (or "
            "multiple_of channels); "
            "lower fraction, narrow more (attention, feed_forward) or count more block kinds (block_kinds)"
        )

    # -- the plan -------------------------------------------------------------------------------
    def check_plan(self, plan: vipkit.Plan) -> list[str]:
        """The model must record narrower layers, the scope must hold layers to narrow, and (counting parameters) the
        fraction must fit in what they can lose."""
        from vipkit_width.budget import most_removable
        from vipkit_width.layers import find_layers, structural_parameters_per_unit

        if type(plan.model).note_resized is vipkit.VideoModel.note_resized:
            return [f"name: model family {plan.model.name!r} cannot record narrower layers (VideoModel.note_resized)"]
        kinds = self._kinds(plan)
        present = {block.kind for block in plan.model.blocks()}
        unknown = [kind for kind in kinds if kind not in present]
        if unknown:
            return [
                f"block_kinds: the model has no block of kind {', '.join(map(repr, unknown))} (its kinds: {', '.join(sorted(present))})"
            ]
        cfg = self.config
        layers = find_layers(plan.model.denoiser(), self._scope(plan.model, plan), cfg.attention, cfg.feed_forward)
        if not layers:
            what = {"heads": "attention layer with more than one head", "head_channels": "attention layer", "none": ""}
            wanted = " or ".join(
                w for w in (what[cfg.attention], "feed-forward layer" if cfg.feed_forward else "") if w
            )
            hint = '; attention = "head_channels" narrows single-head attention' if cfg.attention == "heads" else ""
            return [f"block_kinds: the {', '.join(kinds)} blocks hold no {wanted} to narrow{hint}"]
        if cfg.measure == "parameters":
            total = self._parameters_of(plan.model, plan)
            most = sum(
                most_removable(layer.units, layer.step(cfg.multiple_of)) * structural_parameters_per_unit(layer)
                for layer in layers
            )
            if cfg.fraction * total > most:
                return [
                    f"fraction: {cfg.fraction} of the {total:,} parameters in {', '.join(kinds)} blocks is more than "
                    f"narrowing their {len(layers)} layers to one unit each removes ({most / total:.1%}); lower "
                    "fraction, narrow more (attention, feed_forward) or count more block kinds"
                ]
        return []

    def describe_stage(self, plan: vipkit.Plan, stage: int) -> str:
        from vipkit.measure import flops_by_module

        cfg = self.config
        parts = " + ".join(p for p in (PARTS[cfg.attention], "feed-forward channels" if cfg.feed_forward else "") if p)
        share = cfg.fraction * stage / plan.stages
        kinds = ", ".join(self._kinds(plan))
        if self._teacher_flops is None:
            self._teacher_flops = flops_by_module(plan.model) or {}
        scope = self._scope(plan.model, plan)
        parameters = self._parameters_of(plan.model, plan)
        flops = sum(self._teacher_flops.get(path, 0) for path in scope) / 1e9
        figures = {
            "parameters": f"parameters ≤ {1 - share:.1%} of the teacher's {parameters:,} (≥ {share * parameters:,.0f} gone)",
            "flops": f"FLOPs ≤ {1 - share:.1%} of the teacher's {flops:.4g} GFLOP per denoiser call (≥ {share * flops:.4g} gone)",
        }
        other = {"parameters": f"{parameters:,} parameters", "flops": f"{flops:.4g} GFLOP per denoiser call"}
        alike = next(key for key in figures if key != cfg.measure)
        return (
            f"width ({parts}, {cfg.importance} importance) in {kinds} blocks: {figures[cfg.measure]} after this stage; "
            f"{'FLOPs' if alike == 'flops' else alike} shrink about alike (teacher: {other[alike]})"
        )
