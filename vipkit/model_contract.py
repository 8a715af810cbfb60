"""``check_model``: the whole VideoModel contract on a family's tiny preset, as diffusers' pipeline tester mixin
checks a pipeline, so each family's own tests keep only what is specific to it."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vipkit.contracts import ContractError, component_violations
from vipkit.errors import VipkitError
from vipkit.interfaces import Block, Generation, VideoModel
from vipkit.plugins import load_plugins

PROMPTS = ("a red square moving left", "a blue circle moving up")
SEEDS = (3, 4)
BATCH_ATOL = 1e-3
"""Videos of a batch vs. rendered alone: the same math in other kernel shapes, so float rounding differs (guidance
amplifies it); a quarter of an 8-bit step."""


def check_model(family: str, options: dict[str, Any] | None = None) -> VideoModel:
    """Check that the registered model family ``family`` keeps the whole VideoModel contract on its tiny preset
    (``options`` override the preset's settings, e.g. fewer frames for speed); return the built model.

    Every violation is raised at once as a ``ContractError``. Checked: ``name`` and ``Config`` as for every
    component, and the declared defaults (``default_block_kinds`` among the model's block kinds,
    ``default_trainable`` a scope, ``lora_targets`` naming Linear layers of the denoiser); ``blocks`` are
    unique ``Block``s with parameters; removing a block takes exactly its parameters away and
    restoring it gives the same videos bit for bit, an unknown name is a ``VipkitError``; ``generate``
    gives float32 CPU videos ``(B, F, 3, H, W)`` in [0, 1] and latents, the same call twice is
    bit-identical, a video of a batch equals the video rendered alone (within ``BATCH_ATOL``), mismatched
    prompts and seeds are a ``VipkitError``; ``generation_settings`` is JSON; ``copy`` is independent;
    ``encode_prompts``, ``predict_noise`` (with ``features``), ``add_noise`` and ``training_target`` keep
    the latents' shape, and training gradients reach the default scope; an unknown scope is a
    ``VipkitError``; ``save`` then ``load_saved`` rebuilds the pruned model with the same videos.
    """
    cls = load_plugins().registry("models").get(family)
    violations = component_violations(cls)
    try:
        model = cls.from_options({"preset": "tiny", **(options or {})})
    except Exception as exc:  # noqa: BLE001 - any failure is the family's to report
        raise ContractError(
            cls, [*violations, f"cannot build the tiny preset: {type(exc).__name__}: {exc}"], VideoModel
        ) from exc

    def check(label: str, test: Callable[[], None]) -> None:
        try:
            test()
        except AssertionError as problem:
            violations.append(f"{label}: {problem}")
        except Exception as exc:  # noqa: BLE001
            violations.append(f"{label} raised {type(exc).__name__}: {exc}")

    check("blocks", lambda: _blocks(model))
    check("generate", lambda: _generation(model))
    check("remove_block / restore_block", lambda: _removal(model))
    check("copy", lambda: _copy(model))
    check("training methods", lambda: _training(model))
    check("save / load_saved", lambda: _persistence(model))
    if violations:
        raise ContractError(cls, violations, VideoModel)
    return model


def _blocks(model: VideoModel) -> None:
    blocks = model.blocks()
    assert blocks and all(isinstance(b, Block) for b in blocks), f"blocks() must list Block objects, got {blocks!r}"
    names = [b.name for b in blocks]
    assert len(set(names)) == len(names), f"block names repeat: {sorted(n for n in names if names.count(n) > 1)}"
    assert all(b.params > 0 and b.kind for b in blocks), (
        "every block needs a kind and parameters that removing it removes"
    )
    kinds = {b.kind for b in blocks}
    assert set(model.default_block_kinds) <= kinds, (
        f"default_block_kinds {model.default_block_kinds} are not all among the model's kinds {sorted(kinds)}"
    )
    assert model.blocks_of(model.default_block_kinds), "default_block_kinds select no block"
    model.trainable_parameters(model.default_trainable)
    if model.lora_targets:
        linear = [name for name, layer in model.denoiser().named_modules() if isinstance(layer, torch.nn.Linear)]
        unmatched = [t for t in model.lora_targets if not any(n == t or n.endswith(f".{t}") for n in linear)]
        assert not unmatched, f"lora_targets {unmatched} name no Linear layer of the denoiser"


def _generation(model: VideoModel) -> None:
    both = model.generate(list(PROMPTS), list(SEEDS))
    assert isinstance(both, Generation), f"generate() returned {type(both).__name__}, not a vipkit.Generation"
    videos = both.videos
    assert videos.ndim == 5 and videos.shape[0] == 2 and videos.shape[2] == 3, (
        f"videos must be (B, F, 3, H, W), got {tuple(videos.shape)}"
    )
    assert videos.dtype == torch.float32 and videos.device.type == "cpu", (
        f"videos must be float32 on the CPU, got {videos.dtype} on {videos.device}"
    )
    assert 0 <= float(videos.min()) and float(videos.max()) <= 1, "videos must lie in [0, 1]"
    assert both.latents.shape[0] == 2 and both.latents.device.type == "cpu", "latents: one per video, on the CPU"
    again = model.generate(list(PROMPTS), list(SEEDS))
    assert torch.equal(again.videos, videos), "the same prompts and seeds gave other videos"
    alone = model.generate([PROMPTS[1]], [SEEDS[1]]).videos
    gap = float((alone[0] - videos[1]).abs().max())
    assert gap <= BATCH_ATOL, (
        f"video 1 of a batch differs from the same prompt and seed alone by {gap:.3g} (draw each video from its own seed)"
    )
    json.dumps(model.generation_settings)
    try:
        model.generate(list(PROMPTS), [SEEDS[0]])
    except VipkitError:
        return
    raise AssertionError("2 prompts with 1 seed must raise VipkitError")


def _removal(model: VideoModel) -> None:
    before = model.generate([PROMPTS[0]], [SEEDS[0]]).videos
    params = model.num_parameters()
    for block in _one_per_kind(model):
        model.remove_block(block.name)
        assert model.removed_blocks == [block.name], (
            f"removed_blocks is {model.removed_blocks} after removing {block.name}"
        )
        assert block.name not in {b.name for b in model.blocks()}, f"{block.name} is still listed after its removal"
        assert model.num_parameters() == params - block.params, (
            f"removing {block.name} took {params - model.num_parameters():,} parameters, its Block says {block.params:,}"
        )
        model.restore_block(block.name)
        assert model.removed_blocks == [] and model.num_parameters() == params, (
            f"restoring {block.name} did not bring the model back"
        )
    assert torch.equal(model.generate([PROMPTS[0]], [SEEDS[0]]).videos, before), (
        "after removing and restoring blocks the videos changed"
    )
    try:
        model.remove_block("no.such.block")
    except VipkitError:
        return
    raise AssertionError("removing an unknown block must raise VipkitError")


def _one_per_kind(model: VideoModel) -> list[Block]:
    seen: dict[str, Block] = {}
    for block in model.blocks():
        seen.setdefault(block.kind, block)
    return list(seen.values())


def _copy(model: VideoModel) -> None:
    clone = model.copy()
    block = model.blocks_of(model.default_block_kinds)[0]
    clone.remove_block(block.name)
    assert model.removed_blocks == [] and block.name in {b.name for b in model.blocks()}, (
        "removing a block from a copy changed the original"
    )
    assert clone.num_parameters() < model.num_parameters()


def _training(model: VideoModel) -> None:
    latents = model.generate([PROMPTS[0]], [SEEDS[0]]).latents
    conditioning = model.encode_prompts([PROMPTS[0]])
    assert conditioning.shape[0] == 1 and conditioning.device.type == "cpu", (
        "encode_prompts: one encoding per prompt, on the CPU"
    )
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
    timesteps = torch.tensor([model.num_train_timesteps // 2])
    noisy = model.add_noise(latents, noise, timesteps)
    assert noisy.shape == latents.shape and model.training_target(latents, noise, timesteps).shape == latents.shape
    try:
        model.trainable_parameters("__no_such_scope__")
        raise AssertionError("an unknown trainable scope must raise VipkitError")
    except VipkitError:
        pass
    params = model.trainable_parameters(model.default_trainable)
    for param in params:
        param.requires_grad_(True)
    model.train_mode(True)
    try:
        prediction, features = model.predict_noise(noisy, timesteps, conditioning, features=True)
        assert prediction.shape == latents.shape and prediction.dtype == latents.dtype, (
            "predict_noise must answer in the latents' shape and dtype"
        )
        assert isinstance(features, list), "predict_noise(features=True) must also return a list of block outputs"
        prediction.float().pow(2).mean().backward()
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in params), (
            f"no gradient reaches the {model.default_trainable!r} scope"
        )
    finally:
        model.train_mode(False)
        for param in params:
            param.grad = None
            param.requires_grad_(False)


def _persistence(model: VideoModel) -> None:
    pruned = model.copy()
    pruned.remove_block(pruned.blocks_of(pruned.default_block_kinds)[0].name)
    with tempfile.TemporaryDirectory() as folder:
        pruned.save(Path(folder) / "model")
        back = type(model).load_saved(Path(folder) / "model")
    assert back.removed_blocks == pruned.removed_blocks and back.num_parameters() == pruned.num_parameters(), (
        "load_saved lost the removals"
    )
    videos = pruned.generate([PROMPTS[0]], [SEEDS[0]]).videos
    assert torch.equal(back.generate([PROMPTS[0]], [SEEDS[0]]).videos, videos), "the reloaded model makes other videos"
