"""The layers width pruning narrows, and the narrowing itself, through torch-pruning's dependency graph (DepGraph).

Two kinds of layer are found by their structure, so every family built on diffusers' (or the official) layers
has them: attention (``to_q``, ``to_k``, ``to_v``, ``to_out`` and ``heads``: diffusers' ``Attention``,
``WanAttention``, ...) and feed-forward (``net`` = an input projection with a ``proj`` Linear, ..., an output
Linear: diffusers' ``FeedForward`` with GELU or GEGLU). For each, torch-pruning traces the layer on the inputs it
received in a real denoiser call and finds every tensor coupled to the channels its output Linear reads: the query,
key and value projections (and norms over all heads) of an attention layer, both halves (value and gate) of a GEGLU
projection. Removing channels through that group makes every coupled tensor smaller at once: real smaller layers,
whose ``heads`` (and ``inner_dim``) are updated so the layer's own attention code still runs.

A layer's units are what is removed together: a whole head, the same channel of every head (each head narrower),
or one feed-forward channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner.function import BasePruningFunc

from vipkit import VipkitError

Unit = Literal["head", "head channel", "channel"]
SIZE_ATTRIBUTES = ("heads", "inner_dim", "inner_kv_dim", "kv_inner_dim", "head_dim")
"""Integer attributes an attention layer may keep about its width; those it has are updated when it narrows."""


class LastDimNormPruner(BasePruningFunc):
    """torch-pruning's pruning of a norm over the last dimension that it does not know: torch's ``RMSNorm`` and
    diffusers' ``RMSNorm`` (a query/key norm over all heads, as Wan and LTX-Video have)."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = torch.tensor(sorted(set(range(layer.weight.shape[0])) - set(idxs)), device=layer.weight.device)
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
        if getattr(layer, "bias", None) is not None:
            layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
        if hasattr(layer, "normalized_shape"):
            layer.normalized_shape = (len(keep),)
        if isinstance(getattr(layer, "dim", None), torch.Size):
            layer.dim = torch.Size((len(keep),))
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.weight.shape[0]

    get_in_channels = get_out_channels


def _norm_pruners() -> dict[type, BasePruningFunc]:
    from diffusers.models.normalization import RMSNorm

    pruner = LastDimNormPruner()
    return {nn.RMSNorm: pruner, RMSNorm: pruner}


@dataclass
class WidthLayer:
    """One attention or feed-forward layer of the denoiser, at ``path``, and how it is cut into units."""

    path: str
    module: nn.Module
    kind: Literal["attention", "feed_forward"]
    unit: Unit

    @property
    def output(self) -> nn.Linear:
        """The Linear reading the layer's inner channels: the group's root."""
        if self.kind == "attention":
            out = self.module.to_out
            return out[0] if isinstance(out, nn.ModuleList | nn.Sequential) else out
        return [m for m in self.module.net if isinstance(m, nn.Linear)][-1]

    @property
    def channels(self) -> int:
        return self.output.in_features

    @property
    def heads(self) -> int:
        return int(self.module.heads) if self.kind == "attention" else 1

    @property
    def units(self) -> int:
        if self.unit == "head":
            return self.heads
        return self.channels // self.heads if self.unit == "head channel" else self.channels

    def step(self, multiple: int) -> int:
        """How many units go together so the kept channels stay a multiple of ``multiple`` (whole heads: one; a layer
        whose units are not a multiple of it, or no more than it: one)."""
        if self.unit == "head" or self.units % multiple or self.units <= multiple:
            return 1
        return multiple

    def unit_channels(self, unit: int) -> list[int]:
        """The output Linear's input channels that make up ``unit``."""
        width = self.channels // self.heads
        if self.unit == "head":
            return list(range(unit * width, (unit + 1) * width))
        if self.unit == "head channel":
            return [head * width + unit for head in range(self.heads)]
        return [unit]

    def channels_of(self, units: Sequence[int]) -> list[int]:
        return sorted(channel for unit in units for channel in self.unit_channels(unit))

    @property
    def head_norms(self) -> list[nn.Module]:
        """Norms inside an attention layer over one head's channels, shared by every head (CogVideoX's query and key
        LayerNorms): a head's removal leaves them as they are, a head channel's removes that channel from them."""
        if self.kind != "attention" or self.heads == 1:
            return []
        width = self.channels // self.heads
        return [
            module
            for module in self.module.modules()
            if isinstance(getattr(module, "weight", None), nn.Parameter) and tuple(module.weight.shape) == (width,)
        ]


def find_layers(denoiser: nn.Module, roots: Sequence[str], attention: str, feed_forward: bool) -> list[WidthLayer]:
    """The attention (``attention``: "heads", "head_channels" or "none") and feed-forward layers inside the modules at
    ``roots``, in module order; attention with one head has no head to lose and is left out with ``heads``."""
    found: list[WidthLayer] = []
    for root in roots:
        for name, module in denoiser.get_submodule(root).named_modules():
            path = f"{root}.{name}" if name else root
            if attention != "none" and _is_attention(module):
                unit: Unit = "head" if attention == "heads" else "head channel"
                layer = WidthLayer(path, module, "attention", unit)
                if layer.units > 1:
                    found.append(layer)
            elif feed_forward and _is_feed_forward(module):
                found.append(WidthLayer(path, module, "feed_forward", "channel"))
    return found


def _is_attention(module: nn.Module) -> bool:
    linear = all(isinstance(getattr(module, name, None), nn.Linear) for name in ("to_q", "to_k", "to_v"))
    out = getattr(module, "to_out", None)
    out = out[0] if isinstance(out, nn.ModuleList | nn.Sequential) and len(out) else out
    heads = getattr(module, "heads", None)
    return (
        linear
        and isinstance(out, nn.Linear)
        and isinstance(heads, int)
        and heads > 0
        and module.to_q.out_features == out.in_features
        and out.in_features % heads == 0
    )


def _is_feed_forward(module: nn.Module) -> bool:
    net = getattr(module, "net", None)
    if not isinstance(net, nn.ModuleList | nn.Sequential) or len(net) < 2:
        return False
    return isinstance(getattr(net[0], "proj", None), nn.Linear) and any(isinstance(m, nn.Linear) for m in net[1:])


class LayerGraph:
    """torch-pruning's dependency graph of one layer, traced on the inputs it got in a real denoiser call."""

    def __init__(self, layer: WidthLayer, inputs: tuple[tuple[Any, ...], dict[str, Any]]) -> None:
        self.layer = layer
        self.inputs = inputs
        module = layer.module
        flags = [p.requires_grad for p in module.parameters()]
        try:
            module.requires_grad_(True)  # torch-pruning traces through autograd
            with torch.enable_grad():
                self.graph = tp.DependencyGraph().build_dependency(
                    module,
                    example_inputs=inputs,
                    forward_fn=lambda m, given: m(*given[0], **given[1]),
                    customized_pruners=_norm_pruners(),
                    ignored_layers=layer.head_norms,  # torch-pruning would map the inner channels onto them
                    verbose=False,
                )
        finally:
            for parameter, flag in zip(module.parameters(), flags, strict=True):
                parameter.requires_grad_(flag)
        expected = [module.to_q, module.to_k, module.to_v] if layer.kind == "attention" else [module.net[0].proj]
        found = {dep.target.module for dep, _ in self.group(range(layer.channels))}
        missing = [m for m in expected if m not in found]
        if missing:
            raise VipkitError(
                f"width pruning cannot narrow {layer.path}: torch-pruning's dependency graph does not couple its "
                f"{', '.join(self.graph._module2name.get(m, type(m).__name__) for m in missing)} to the channels "
                f"{layer.path} reads, so its layers could not shrink together; leave its blocks out of block_kinds"
            )

    def group(self, channels: Sequence[int]) -> Any:
        """The group of every tensor coupled to the output Linear's input ``channels``."""
        return self.graph.get_pruning_group(self.layer.output, tp.prune_linear_in_channels, idxs=list(channels))

    def parameters_per_unit(self) -> int:
        """Parameters that removing one unit removes (the same for every unit of the layer)."""
        total = 0
        for dep, idxs in self.group(self.layer.unit_channels(0)):
            module, handler = dep.target.module, dep.handler
            if isinstance(module, nn.Linear):
                per = (
                    module.in_features + (module.bias is not None)
                    if self.graph.is_out_channel_pruning_fn(handler)
                    else module.out_features
                )
            elif isinstance(getattr(module, "weight", None), nn.Parameter) and module.weight.ndim == 1:  # a norm
                per = 1 + (getattr(module, "bias", None) is not None)
            else:
                continue
            total += per * len(idxs)
        if self.layer.unit == "head channel":  # each head norm loses the channel too
            total += sum(1 + (getattr(norm, "bias", None) is not None) for norm in self.layer.head_norms)
        return total

    @torch.no_grad()
    def output_on_inputs(self) -> list[torch.Tensor]:
        """The layer's output tensors on its recorded inputs (an attention layer of two streams returns two)."""
        from torch.utils._pytree import tree_leaves

        args, kwargs = self.inputs
        return [leaf for leaf in tree_leaves(self.layer.module(*args, **kwargs)) if isinstance(leaf, torch.Tensor)]

    def remove(self, units: Sequence[int]) -> dict[str, int]:
        """Remove ``units`` (numbered before this call) from the layer for real; check that the narrower layer still
        runs on its inputs to an output of the same shape, finite; return its updated size attributes."""
        layer = self.layer
        before = self.output_on_inputs()
        heads, width = layer.heads, layer.channels // layer.heads
        head_norms = layer.head_norms
        self.group(layer.channels_of(units)).prune()
        if layer.unit == "head channel":
            for norm in head_norms:
                LastDimNormPruner().prune_out_channels(norm, units)
        module = layer.module
        updated: dict[str, int] = {}
        if layer.kind == "attention":
            inner, kv_inner = module.to_q.out_features, module.to_k.out_features
            sizes = {
                "heads": heads - len(units) if layer.unit == "head" else heads,
                "inner_dim": inner,
                "inner_kv_dim": kv_inner,
                "kv_inner_dim": kv_inner,
                "head_dim": width if layer.unit == "head" else width - len(units),
            }
            updated = {name: value for name, value in sizes.items() if isinstance(getattr(module, name, None), int)}
            for name, value in updated.items():
                setattr(module, name, value)
        try:
            after = self.output_on_inputs()
        except Exception as exc:  # the layer's own code cannot run at the new width
            raise VipkitError(
                f"width pruning broke {layer.path}: after losing {len(units)} {layer.unit}s it fails on its inputs "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                + (
                    'attention = "head_channels" needs attention without rotary position embeddings (they fix the '
                    'head size): use attention = "heads"'
                    if layer.unit == "head channel"
                    else "leave its blocks out of block_kinds"
                )
            ) from exc
        shapes = [tuple(t.shape) for t in before], [tuple(t.shape) for t in after]
        if shapes[0] != shapes[1] or not all(torch.isfinite(t).all() for t in after):
            raise VipkitError(
                f"width pruning broke {layer.path}: its output changed shape {shapes[0]} → {shapes[1]} or is not "
                f"finite after losing {len(units)} {layer.unit}s"
            )
        return updated


def structural_parameters_per_unit(layer: WidthLayer) -> int:
    """Parameters one unit of ``layer`` holds, read off its layers without tracing it (for the plan's check): the input
    projections' rows (both halves of a GEGLU), the output Linear's columns, and norms as wide as the inner channels."""
    module, channels = layer.module, layer.channels
    if layer.kind == "attention":
        inputs = [module.to_q, module.to_k, module.to_v]
    else:
        inputs = [module.net[0].proj]
    per_channel = sum(
        (linear.in_features + (linear.bias is not None)) * linear.out_features // channels for linear in inputs
    )
    per_channel += layer.output.out_features
    per_channel += sum(
        1 + (getattr(norm, "bias", None) is not None)
        for norm in module.children()
        if isinstance(getattr(norm, "weight", None), nn.Parameter) and tuple(norm.weight.shape) == (channels,)
    )
    return per_channel * len(layer.unit_channels(0))
