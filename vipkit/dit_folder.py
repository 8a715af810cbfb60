"""A (pruned) diffusion transformer as a plain diffusers pipeline folder, and back (``vipkit.dit_kit``).

The folder is what the pipeline class's ``save_pretrained`` writes (``model_index.json``, ``transformer/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``) with one difference that keeps the speed-up everywhere: the
transformer holds only the kept blocks, renumbered ``0 .. k-1``, and its ``config.json`` says ``num_layers = k``. Plain
``from_pretrained`` therefore builds the pruned transformer and computes exactly what vipkit's model computes:
a removed block returned its input, and a missing block does nothing either. A removed residual branch (attention,
feed-forward) inside a kept block cannot be renumbered away; its tensors are written as zeros, which compute the
same zeros the removed branch returned (exact, at the branch's cost in plain diffusers).

``vipkit_dit.json``, written last, records the original depth, which original block each kept one is, the removals
in order and the generation settings: vipkit loads the folder back with the original block names (a run's later
stages and the stored pruning decisions refer to them) and removes the zeroed branches again. A pipeline folder
without it (the hub's, anyone's) loads with its blocks numbered as they are, all-zero blocks and branches removed.
A width-pruned transformer (layers narrower than its config says, ``resized_layers`` in the manifest) keeps its
smaller tensors: plain ``from_pretrained`` refuses them with a shape error, never loading another model, and vipkit
gives those layers their recorded shapes before loading them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from accelerate import init_empty_weights
from transformers.utils import logging as transformers_logging

from vipkit.dit_blocks import kept_positions, prunable_transformer
from vipkit.dit_kit import FROZEN_COMPONENTS, DiTParts
from vipkit.errors import VipkitError
from vipkit.model_source import ModelSource, model_source
from vipkit.prunable import PassThrough
from vipkit.weights import check_weight_folder, forget_source_paths, scrub_source_paths
from vipkit.width_shapes import LayerRecord, renamed, resize_layers

if TYPE_CHECKING:
    from vipkit.dit_kit import BlockLayout, DiTFamily

MANIFEST = "vipkit_dit.json"
FORMAT_VERSION = 1
T = TypeVar("T")


def is_saved_folder(source: str | Path) -> bool:
    """Whether ``source`` is a folder ``write_pipeline_folder`` wrote (vipkit's save or ``diffusers`` export)."""
    return (Path(source).expanduser() / MANIFEST).is_file()


# -- writing -------------------------------------------------------------------------------------------------


def write_pipeline_folder(
    directory: Path, family: DiTFamily, parts: DiTParts, settings: dict[str, Any], dtype: torch.dtype
) -> None:
    """The pipeline folder of ``parts`` in ``dtype`` (the shared parts are not cast); the manifest goes last."""
    directory.mkdir(parents=True, exist_ok=True)
    transformers_logging.disable_progress_bar()  # its per-shard bar would break the run's own progress display
    layout, module = family.layout, parts.transformer.module
    kept = kept_positions(module, layout)
    state = reindexed_state(parts, layout, kept)
    resized = parts.transformer.resized  # width pruning's narrower layers, by their original block numbers
    renumber = _renumbering(layout.block_list, {old: new for new, old in enumerate(kept)})
    shell = _holding(module, state, dtype, renamed(resized, renumber), **{layout.layers_key: len(kept)})
    shell.save_pretrained(directory / "transformer")
    for name in FROZEN_COMPONENTS:
        _save_component(parts.components[name], directory / name, dtype)
    family.pipeline().save_config(directory)  # model_index.json
    scrub_source_paths(directory)  # no machine path: the same parts save to the same bytes
    manifest = {
        "family": family.name,
        "format_version": FORMAT_VERSION,
        layout.layers_key: int(module.config[layout.layers_key]),
        "kept_blocks": kept,
        "removed_blocks": parts.transformer.removed,
        **({"resized_layers": resized} if resized else {}),
        "generation_settings": settings,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def reindexed_state(parts: DiTParts, layout: BlockLayout, kept: list[int]) -> dict[str, torch.Tensor]:
    """The state dict of a transformer of ``len(kept)`` blocks: the kept blocks' tensors renumbered ``0 .. k-1``,
    zeros for removed branches inside them, everything outside the blocks as it is."""
    module = parts.transformer.module
    with torch.device("meta"):
        full = type(module).from_config(module.config)  # the original depth ...
    blocks = full.get_submodule(layout.block_list)
    for index in set(range(len(blocks))) - set(kept):  # ... without the removed blocks: no zeros made for them
        blocks[index] = PassThrough(type(blocks[index]).__name__)
    state = parts.transformer.zero_filled_state(full)  # zeros for removed branches (every kind has a zero form)
    renumber = _renumbering(layout.block_list, {old: new for new, old in enumerate(kept)})
    return {renumber(key): tensor for key, tensor in state.items()}


def _renumbering(block_list: str, position: dict[int, int]) -> Callable[[str], str]:
    """Renames ``<block_list>.<i>.rest`` to ``<block_list>.<position[i]>.rest``; other keys stay."""
    prefix = f"{block_list}."

    def renamed(key: str) -> str:
        if not key.startswith(prefix):
            return key
        index, rest = key[len(prefix) :].split(".", 1)
        return f"{prefix}{position[int(index)]}.{rest}"

    return renamed


def _holding(
    model: Any,
    state: dict[str, torch.Tensor],
    dtype: torch.dtype,
    resized: Mapping[str, LayerRecord] | None = None,
    **config: Any,
) -> Any:
    """A diffusers model of ``model``'s class and config (with ``config`` changed, and the ``resized`` layers' narrower
    shapes) holding ``state`` cast to ``dtype``: cast copies are assigned (no random initialisation), ``model`` is
    untouched."""
    with init_empty_weights():
        shell = type(model).from_config(model.config, **config)
    resize_layers(shell, resized or {})
    cast = {key: value.to(dtype) if value.is_floating_point() else value for key, value in state.items()}
    shell.load_state_dict(cast, strict=True, assign=True)
    return shell


def _save_component(component: Any, directory: Path, dtype: torch.dtype) -> None:
    """A diffusers model, a transformers model, a tokenizer or a scheduler, saved as its library saves it."""
    from diffusers import ModelMixin

    if isinstance(component, ModelMixin):
        _holding(component, component.state_dict(), dtype).save_pretrained(directory)
    elif isinstance(component, torch.nn.Module):  # a transformers model
        state = {
            key: value.to(dtype) if value.is_floating_point() else value
            for key, value in component.state_dict().items()
        }
        component.save_pretrained(directory, state_dict=state)
    else:
        component.save_pretrained(directory)


# -- loading -------------------------------------------------------------------------------------------------


def load_pipeline_parts(family: DiTFamily, base: str, dtype: torch.dtype) -> DiTParts:
    """The parts of ``base``: a folder vipkit wrote (original block names and removals back), or any diffusers
    pipeline folder or hub id of the family's pipeline class (all-zero blocks and branches removed)."""
    import diffusers

    what = f"a diffusers {family.pipeline_class} folder"
    source = model_source(base, "base", what)
    if source.local:  # any pickle in a folder vipkit wrote was put there by someone else: refused
        check = partial(check_weight_folder, Path(source.source), refuse_any_pickle=is_saved_folder(source.source))
        _guarded(source, what, check)
    source.require_available(what)
    pipeline_class = getattr(diffusers, family.pipeline_class)
    if source.local and is_saved_folder(source.source):
        manifest = json.loads((Path(source.source) / MANIFEST).read_text())
        if manifest.get("family") != family.name:
            raise VipkitError(
                f"base = {base!r} holds a {manifest.get('family')!r} model, not a {family.name!r} one: "
                f"use [model] name = {manifest.get('family')!r}"
            )
        settings = dict(manifest["generation_settings"])
        dtype = getattr(torch, settings["dtype"])  # the files' own: loaded without a cast
        folder = Path(source.source)
        transformer = _guarded(source, what, lambda: _saved_transformer(folder, family.layout, manifest, dtype))
    else:
        transformer, settings = None, dict(family.real_settings)
    loaded = {"transformer": transformer.module} if transformer is not None else {}
    pipe = _guarded(
        source,
        what,
        lambda: pipeline_class.from_pretrained(source.source, dtype=dtype, use_safetensors=True, **loaded),
    )
    if transformer is None:
        transformer = prunable_transformer(pipe.transformer, family.layout)
        transformer.remove_zeroed()  # an export of the full architecture: zeros are removed again (the speed-up)
    components = {name: getattr(pipe, name) for name in FROZEN_COMPONENTS}
    forget_source_paths(transformer.module, *components.values())  # nothing saved later names this folder
    return DiTParts(transformer, components, settings)


def _saved_transformer(directory: Path, layout: BlockLayout, manifest: dict[str, Any], dtype: torch.dtype) -> Any:
    """The transformer at its original depth with the saved removals replayed (their weights gone for good), holding
    the saved tensors of the kept blocks under their original numbers; the zeros of removed branches are dropped."""
    import diffusers

    class_name = json.loads((directory / "transformer" / "config.json").read_text())["_class_name"]
    transformer_class = getattr(diffusers, class_name)
    config = transformer_class.load_config(directory / "transformer")
    with init_empty_weights():  # parameters on the meta device (buffers real): the saved tensors are assigned
        module = transformer_class.from_config(config, **{layout.layers_key: manifest[layout.layers_key]})
    prunable = prunable_transformer(module, layout)
    for name in manifest["removed_blocks"]:
        prunable.remove(name, keep_original=False)
    prunable.resize(manifest.get("resized_layers", {}))  # width-pruned layers: narrower than the config says
    renumber = _renumbering(layout.block_list, dict(enumerate(manifest["kept_blocks"])))
    state = {renumber(key): tensor.to(dtype) for key, tensor in _saved_tensors(directory / "transformer").items()}
    own = module.state_dict().keys()
    removed = tuple(f"{name}." for name in manifest["removed_blocks"])
    unexplained = [key for key in state.keys() - own if not key.startswith(removed)]
    if unexplained:
        raise VipkitError(f"{directory / 'transformer'} holds tensors its manifest does not explain: {unexplained[:3]}")
    module.load_state_dict({key: state[key] for key in own}, strict=True, assign=True)
    return prunable


def _saved_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a diffusers model folder's safetensors files (one file or shards), read as stored: diffusers'
    own loader would refuse a width-pruned layer for not having the shape its config says."""
    from safetensors.torch import load_file

    return {key: tensor for file in sorted(folder.glob("*.safetensors")) for key, tensor in load_file(file).items()}


def _guarded(source: ModelSource, what: str, build: Callable[[], T]) -> T:
    """Run ``build``, turning every failure (hub, file, format) into a VipkitError naming the option."""
    try:
        return build()
    except VipkitError:
        raise
    except Exception as exc:  # the user's to fix: wrong folder, unreachable hub, not that kind of pipeline
        raise source.load_error(what, exc, f"Point {source.option} at a folder holding {what}.") from exc
