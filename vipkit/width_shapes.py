"""Layers smaller than their architecture's config says (width pruning), recorded so that a loader rebuilds them.

Width pruning (fewer attention heads, fewer feed-forward channels) makes real, smaller layers: the parameters
are smaller tensors and a few attributes change with them (an attention layer's ``heads``, ``inner_dim``). A model
family's config cannot say that one layer has 3 heads and its neighbour 8, so a saved model records it: for every
resized layer, by its module path, the shapes of its parameters and the attributes that changed
(``LayerRecord``). Loading builds the architecture from its config as usual (on the meta device too), then
``resize_layers`` gives the recorded layers their recorded shapes (empty tensors) and attributes, after which the
saved state dict loads strictly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

LayerRecord = dict[str, Any]
"""``{"parameters": {relative parameter name: shape}, "attributes": {attribute name: value}}`` of one resized layer."""


def snapshot(layer: nn.Module, attributes: Mapping[str, int]) -> LayerRecord:
    """The record of ``layer`` as it is now: every parameter's shape, and the given changed attributes."""
    return {
        "parameters": {name: list(parameter.shape) for name, parameter in layer.named_parameters()},
        "attributes": dict(attributes),
    }


def resize_layers(root: nn.Module, record: Mapping[str, LayerRecord]) -> None:
    """Give each recorded layer of ``root`` its recorded parameter shapes (new empty tensors of the same dtype and
    device, meta included) and attributes; parameters of the recorded shape are kept as they are."""
    for path, layer_record in record.items():
        layer = root.get_submodule(path)
        for name, shape in layer_record["parameters"].items():
            owner_path, _, leaf = name.rpartition(".")
            owner = layer.get_submodule(owner_path) if owner_path else layer
            parameter = getattr(owner, leaf)
            if list(parameter.shape) != list(shape):
                empty = torch.empty(shape, dtype=parameter.dtype, device=parameter.device)
                setattr(owner, leaf, nn.Parameter(empty, requires_grad=parameter.requires_grad))
                _fit_size_attributes(owner)
        for name, value in layer_record["attributes"].items():
            setattr(layer, name, value)


def renamed(record: Mapping[str, LayerRecord], rename: Callable[[str], str]) -> dict[str, LayerRecord]:
    """The same record with every layer path renamed (a transformer saved with its blocks renumbered)."""
    return {rename(path): layer_record for path, layer_record in record.items()}


def _fit_size_attributes(layer: nn.Module) -> None:
    """The size attributes torch layers keep beside their weights, set from the weights' new shapes."""
    weight = getattr(layer, "weight", None)
    if weight is None:
        return
    if isinstance(layer, nn.Linear):
        layer.out_features, layer.in_features = weight.shape
    elif hasattr(layer, "normalized_shape"):  # LayerNorm, torch's RMSNorm
        layer.normalized_shape = tuple(weight.shape)
    elif isinstance(getattr(layer, "dim", None), torch.Size):  # diffusers' RMSNorm
        layer.dim = torch.Size(weight.shape)
