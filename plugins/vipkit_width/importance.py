"""How much each unit of a layer (a head, a head channel, a feed-forward channel) matters: higher is kept longer.

- ``magnitude``: torch-pruning's group magnitude (``GroupMagnitudeImportance``, L2 over every coupled tensor of
  the channel), no data;
- ``taylor``: torch-pruning's first-order Taylor importance (``GroupTaylorImportance``, |w · ∂L/∂w| over the coupled
  tensors) of the family's noise-prediction loss on the calibration videos;
- ``loss-drop``: the paper's idea at group level: how much that loss rises when a group is zeroed (the channels the
  layer's output Linear reads: exactly what removing them computes). Heads are groups of their own; channels are tried
  in ``groups`` groups per layer, by magnitude order, each channel scored by its group (magnitude breaks ties).

A head's or head channel's importance is the mean of its channels'.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch_pruning as tp
from torch import Tensor, nn

import vipkit
from vipkit_width.calibration import Calibration
from vipkit_width.layers import LayerGraph, WidthLayer


def unit_importance(
    method: str, graphs: Sequence[LayerGraph], model: vipkit.VideoModel, calibration: Calibration, groups: int
) -> list[Tensor]:
    """For each layer, one importance per unit."""
    magnitude = [
        _per_unit(g.layer, _channel_importance(tp.importance.GroupMagnitudeImportance(normalizer=None), g))
        for g in graphs
    ]
    if method == "magnitude":
        return magnitude
    if method == "taylor":
        with _gradients_of([g.layer.module for g in graphs], model):
            calibration.loss(model, backward=True)
            scorer = tp.importance.GroupTaylorImportance(normalizer=None)
            return [_per_unit(g.layer, _channel_importance(scorer, g)) for g in graphs]
    return _loss_drop(graphs, model, calibration, groups, magnitude)


def _channel_importance(scorer: tp.importance.Importance, graph: LayerGraph) -> Tensor:
    return scorer(graph.group(range(graph.layer.channels))).float().cpu()


def _per_unit(layer: WidthLayer, channels: Tensor) -> Tensor:
    if layer.unit == "channel":
        return channels
    per_head = channels.view(layer.heads, -1)
    return per_head.mean(1) if layer.unit == "head" else per_head.mean(0)


@contextmanager
def _gradients_of(layers: Sequence[nn.Module], model: vipkit.VideoModel) -> Iterator[None]:
    """Gradients for the layers' parameters only, cleared and switched back afterwards."""
    parameters = list(model.denoiser().parameters())
    flags = [p.requires_grad for p in parameters]
    wanted = {id(p) for layer in layers for p in layer.parameters()}
    try:
        for parameter in parameters:
            parameter.requires_grad_(id(parameter) in wanted)
            parameter.grad = None
        yield
    finally:
        for parameter, flag in zip(parameters, flags, strict=True):
            parameter.requires_grad_(flag)
            parameter.grad = None


@contextmanager
def _zeroed(layer: WidthLayer, channels: Sequence[int]) -> Iterator[None]:
    """The layer's output Linear reads zeros on ``channels``: the layer computes as without them."""
    index = torch.tensor(list(channels))

    def zero(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        hidden = args[0].clone()
        hidden[..., index.to(hidden.device)] = 0
        return (hidden, *args[1:])

    handle = layer.output.register_forward_pre_hook(zero)
    try:
        yield
    finally:
        handle.remove()


def _loss_drop(
    graphs: Sequence[LayerGraph],
    model: vipkit.VideoModel,
    calibration: Calibration,
    groups: int,
    magnitude: Sequence[Tensor],
) -> list[Tensor]:
    tried = [(g.layer, order, _unit_groups(g.layer, order, groups)) for g, order in zip(graphs, magnitude, strict=True)]
    pending = [(layer, units) for layer, _, unit_groups in tried for units in unit_groups]
    drops = []
    with torch.no_grad():
        base = calibration.loss(model)
        for layer, units in vipkit.track(pending, "loss drop per group", total=len(pending)):
            with _zeroed(layer, layer.channels_of(units)):
                drops.append(calibration.loss(model) - base)
    result, position = [], 0
    for layer, order, unit_groups in tried:
        importance = torch.empty(layer.units)
        scale = float(order.abs().max()) or 1.0
        for units in unit_groups:
            for unit in units:  # magnitude breaks ties inside a group, far below any loss difference
                importance[unit] = drops[position] + 1e-9 * float(order[unit]) / scale
            position += 1
        result.append(importance)
    return result


def _unit_groups(layer: WidthLayer, magnitude: Tensor, groups: int) -> list[list[int]]:
    """Heads one by one; channels and head channels in ``groups`` groups of neighbours in magnitude order."""
    if layer.unit == "head":
        return [[unit] for unit in range(layer.units)]
    order = torch.argsort(magnitude).tolist()
    count = min(groups, layer.units)
    return [order[i * len(order) // count : (i + 1) * len(order) // count] for i in range(count)]
