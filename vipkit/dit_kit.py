"""A model family whose denoiser is a diffusion transformer: a list of identical residual blocks in a diffusers pipeline.

Today's open video models keep their depth in one ``nn.ModuleList`` of identical blocks, and each block adds its
attention and feed-forward branches to a residual stream. That is the best possible target for block pruning, and
the same mechanism serves every such model, so it is written once here; a family subclasses ``DiTFamily`` and
declares what is its own (the diffusers pipeline class, where the block list is, what a block returns, its residual
branches, its presets and how its transformer is called for training); docs/dit.md shows the in-tree ones:

- prunable units: every whole block (kind ``transformer_block``), and each declared residual branch of a block (a
  ``Branch``: attention or feed-forward), each with its parameters (``vipkit.dit_blocks``);
- exact removal: a removed block returns its inputs as the block returns its outputs (one stream, or two
  where a block carries text and video streams); a removed branch returns zeros, which leaves the residual stream exactly as it was (``x + gate * 0 == x``);
- generation through the diffusers pipeline itself, one generator per video (seeded, batch-invariant);
- training: the transformer's prediction with every block position's output as features (a removed block's
  position gives its input, so teacher and student lists line up), rectified-flow targets for flow-matching
  schedulers and the scheduler's own ``add_noise`` / velocity otherwise;
- saving and the ``diffusers`` export: a plain diffusers pipeline folder whose transformer holds only the kept
  blocks, re-indexed, with ``num_layers`` saying so (``vipkit.dit_folder``): plain ``from_pretrained`` loads it
  to the same outputs at the pruned cost. Removed branches cannot be re-indexed away; they are written as zeros
  (exact: every branch ends in a linear layer), which vipkit removes again when it loads the folder.

torch and diffusers are imported inside methods only: a family module that imports this one registers without them.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from vipkit.errors import VipkitError
from vipkit.family_kit import DenoiserFamily, FamilyConfig
from vipkit.interfaces import Generation

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from vipkit.prunable import PrunableModule

DIFFUSERS = "diffusers"
"""The export format: a plain diffusers pipeline folder."""
TRANSFORMER_BLOCK = "transformer_block"
"""The Block kind of a whole transformer block."""
SETTING_KEYS = (
    "height",
    "width",
    "num_frames",
    "num_inference_steps",
    "guidance_scale",
    "max_sequence_length",
    "negative_prompt",
    "dtype",
)
FROZEN_COMPONENTS = ("vae", "text_encoder", "tokenizer", "scheduler")
"""The pipeline components besides the transformer, shared by copies and never trained."""


@dataclass(frozen=True)
class Branch:
    """A residual branch of every block: removable on its own where a zero output leaves the stream unchanged."""

    attribute: str  # the branch module's name inside a block, e.g. "attn1", "ffn"
    kind: str  # its Block kind, e.g. "self_attention", "feed_forward"
    returns: tuple[str, ...] = ("hidden_states",)  # what it returns, by its forward's argument names (zeros like them)


@dataclass(frozen=True)
class BlockLayout:
    """Where a transformer keeps its blocks and how they are removed (``vipkit.dit_blocks`` reads it)."""

    block_list: str  # the ModuleList of blocks, e.g. "blocks", "transformer_blocks"
    block_kind: str  # the Block kind of a whole block
    block_returns: tuple[str, ...]  # what a block returns, by its forward's argument names
    branches: tuple[Branch, ...]
    layers_key: str  # the config key that counts the blocks, e.g. "num_layers"


@dataclass
class DiTParts:
    """The transformer (prunable), the pipeline's other components, and the source's default generation settings."""

    transformer: PrunableModule
    components: dict[str, Any]  # FROZEN_COMPONENTS by name: VAE, text encoder, tokenizer, scheduler
    default_settings: dict[str, Any] = field(default_factory=dict)


class DiTConfig(FamilyConfig):
    """Options every diffusion-transformer family has; a family's Config sets its ``base`` and ``preset`` choices."""

    base: str | None = Field(
        None,
        description="Hub id or local folder of a diffusers pipeline of this family, or a folder vipkit wrote (`save`, "
        "`vipkit export --format diffusers`).",
    )
    preset: Literal["tiny", "random"] | None = Field(
        None,
        description="Build random components from configs instead of loading `base` (no download): 'tiny' runs a "
        "whole V.I.P. schedule on a CPU; 'random' is the released architecture, built on `device`, for measuring "
        "time, memory and disk. Their videos mean nothing about quality.",
    )
    num_inference_steps: int | None = Field(
        None, gt=0, le=1000, description="Sampling steps of the pipeline's scheduler; None: the model's default."
    )
    guidance_scale: float | None = Field(
        None, ge=0, description="Classifier-free guidance scale (<= 1 turns it off); None: the model's default."
    )
    max_sequence_length: int | None = Field(
        None, gt=0, le=4096, description="Text tokens per prompt (padded or cut); None: the model's default."
    )
    generation_batch_size: int = Field(2, gt=0, description="Videos generated per pipeline call.")

    @field_validator("base")
    @classmethod
    def _local_base_exists(cls, base: str | None) -> str | None:
        """A local path that does not exist is caught at validation, before anything loads."""
        from vipkit.model_source import is_local_path

        if base is not None and is_local_path(base) and not Path(base).expanduser().exists():
            raise ValueError(
                f"{base!r}: no such local directory (relative paths start from the current folder, {Path.cwd()}); "
                "point it at a diffusers pipeline folder or give a hub id 'owner/name'"
            )
        return base


class DiTFamily(DenoiserFamily):
    """A ``VideoModel`` around a diffusers video pipeline whose transformer is a list of identical residual blocks."""

    Config: ClassVar[type[DiTConfig]] = DiTConfig
    pipeline_class: ClassVar[str]
    """The diffusers pipeline class name; its denoiser component is ``transformer``."""
    block_list: ClassVar[str] = "transformer_blocks"
    block_returns: ClassVar[tuple[str, ...]] = ("hidden_states",)
    branches: ClassVar[tuple[Branch, ...]] = ()
    layers_key: ClassVar[str] = "num_layers"
    presets_module: ClassVar[str]
    """The module whose ``preset_components(preset, seed, device)`` builds the Config's presets."""
    real_settings: ClassVar[dict[str, Any]]
    """Generation defaults of the released model (height, width, num_frames, num_inference_steps, guidance_scale,
    max_sequence_length), for a pipeline loaded from the hub or a folder vipkit did not write."""

    setting_keys = SETTING_KEYS
    trainable_scopes: ClassVar[dict[str, str]] = {
        "all": "every transformer parameter",
        "blocks": "the parameters of the transformer blocks still present",
    }
    default_trainable = "all"
    default_block_kinds = (TRANSFORMER_BLOCK,)
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0")
    export_formats: ClassVar[dict[str, str]] = {
        DIFFUSERS: "a plain diffusers pipeline folder whose transformer holds only the kept blocks (its config's "
        "num_layers says how many): the pipeline class's from_pretrained loads it at the pruned cost; removed "
        "attention / feed-forward branches are written as zeros (exact), which vipkit removes again when it loads it",
    }
    library_name = "diffusers"

    config: DiTConfig

    # -- what a family supplies --------------------------------------------------------------
    def _preset_components(self, preset: str, seed: int, device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
        """The pipeline components of ``preset`` with seeded random weights (``FROZEN_COMPONENTS`` and
        ``transformer``), built on ``device``, and the preset's generation defaults: the ``preset_components``
        function of the module ``presets_module`` names (imported now: it needs torch and diffusers)."""
        import importlib

        return importlib.import_module(self.presets_module).preset_components(preset, seed, device)

    @abstractmethod
    def _spatial_multiple(self) -> int:
        """What height and width must be multiples of: the VAE's downscaling times the transformer's patch size."""

    def _denoise(self, runner: torch.nn.Module, latents: Tensor, timesteps: Tensor, conditioning: Tensor) -> Tensor:
        """One transformer call for training, as the pipeline calls it (latents in the pipeline's own layout)."""
        output = runner(
            hidden_states=latents, timestep=timesteps, encoder_hidden_states=conditioning, return_dict=False
        )
        return output[0]

    def _encode(self, prompts: list[str]) -> Tensor:
        """The pipeline's text conditioning of ``prompts`` without guidance (what ``_denoise`` takes)."""
        return self._pipeline.encode_prompt(
            prompts,
            do_classifier_free_guidance=False,
            max_sequence_length=self._settings["max_sequence_length"],
            device=self.device,
        )[0]

    # -- the parts ---------------------------------------------------------------------------
    @property
    def layout(self) -> BlockLayout:
        return BlockLayout(self.block_list, TRANSFORMER_BLOCK, self.block_returns, self.branches, self.layers_key)

    def _load_parts(self) -> DiTParts:
        import torch

        from vipkit.dit_blocks import prunable_transformer
        from vipkit.dit_folder import load_pipeline_parts
        from vipkit.model_source import resolve_device

        config = self.config
        if config.preset is not None:
            device = resolve_device(config.device) if config.preset != "tiny" else torch.device("cpu")
            components, settings = self._preset_components(config.preset, config.preset_seed, device)
            transformer = prunable_transformer(components.pop("transformer"), self.layout)
            return DiTParts(transformer, components, settings)
        if config.base is None:
            raise VipkitError(
                f"model.base is not set: give the hub id or local folder of a {self.pipeline_class} (diffusers), "
                "or set preset = 'tiny' or 'random' for a random model (no download)"
            )
        return load_pipeline_parts(self, config.base, getattr(torch, config.dtype))

    def _attach(self, parts: DiTParts) -> None:
        """Place the parts on the device, build the diffusers pipeline around them, and the training schedule."""
        import diffusers

        from vipkit.dit_blocks import in_one_dtype

        frozen = [part for part in parts.components.values() if hasattr(part, "parameters")]
        self._adopt(parts.transformer, parts.default_settings, frozen=frozen)
        for module in (parts.transformer.module, *frozen):
            in_one_dtype(module, self.dtype)
        self._parts = parts
        pipeline_class = getattr(diffusers, self.pipeline_class)
        self._pipeline = pipeline_class(**parts.components, transformer=parts.transformer.module)
        self._pipeline.set_progress_bar_config(disable=True)
        scheduler = parts.components["scheduler"]
        self._train_scheduler = type(scheduler).from_config(scheduler.config)
        multiple = self._spatial_multiple()
        for key in ("height", "width"):
            if self._settings[key] % multiple:
                raise VipkitError(
                    f"{key} = {self._settings[key]} must be a multiple of {multiple} (the VAE's downscaling times the "
                    "transformer's patch size)"
                )

    def _copied_parts(self) -> DiTParts:
        """The transformer copied with its removals; VAE, text encoder and tokenizer shared; the scheduler anew."""
        components = dict(self._parts.components)
        scheduler = components["scheduler"]
        components["scheduler"] = type(scheduler).from_config(scheduler.config)  # it keeps state while sampling
        return DiTParts(self._prunable.copy(), components, dict(self._settings))

    def pipeline(self) -> Any:
        """The ready diffusers pipeline, with the pruned transformer."""
        return self._pipeline

    # -- generation --------------------------------------------------------------------------
    def _generate_batch(self, prompts: list[str], generators: list[torch.Generator]) -> Generation:
        """The pipeline's own sampling and decoding; the last step's latents are kept through its step callback."""
        s = self._settings
        final: dict[str, Tensor] = {}

        def keep_latents(pipe: Any, step: int, timestep: Any, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
            final["latents"] = tensors["latents"]
            return {}

        videos = self._pipeline(
            prompt=prompts,
            negative_prompt=[s["negative_prompt"]] * len(prompts),
            height=s["height"],
            width=s["width"],
            num_frames=s["num_frames"],
            num_inference_steps=s["num_inference_steps"],
            guidance_scale=s["guidance_scale"],
            max_sequence_length=s["max_sequence_length"],
            generator=generators,
            output_type="pt",
            callback_on_step_end=keep_latents,
            callback_on_step_end_tensor_inputs=["latents"],
        ).frames
        return Generation(videos=videos.float().cpu(), latents=final["latents"].float().cpu())

    # -- training ----------------------------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        """The text conditioning, float32 on the CPU; the text encoder is frozen."""
        import torch

        with torch.no_grad():
            return self._encode(list(prompts)).float().cpu()

    def predict_noise(
        self, noisy_latents: Tensor, timesteps: Tensor, conditioning: Tensor, *, features: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """The transformer's prediction on the latents' device and dtype. With ``features`` also the residual
        stream after every block position, removed positions included (there it is the block's input), so a
        teacher's and a pruned student's lists have the same length and shapes."""
        from contextlib import nullcontext

        from vipkit.dit_blocks import recorded_outputs

        home = dict(device=noisy_latents.device, dtype=noisy_latents.dtype)
        positions = list(self._prunable.module.get_submodule(self.block_list))
        with recorded_outputs(positions) if features else nullcontext([]) as recorded:
            prediction = self._denoise(
                self._runner,
                noisy_latents.to(self.device, self.dtype),
                timesteps.to(self.device),
                conditioning.to(self.device, self.dtype),
            ).to(**home)
        if not features:
            return prediction
        return prediction, [output.to(**home) for output in recorded]

    @property
    def _flow_matching(self) -> bool:
        """Whether the pipeline's scheduler samples a rectified flow (flow matching) rather than a DDPM chain."""
        scheduler = self._train_scheduler
        return "FlowMatch" in type(scheduler).__name__ or scheduler.config.get("prediction_type") == "flow_prediction"

    def add_noise(self, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """Rectified flow: ``(1 - s) x + s n`` with ``s = t / T`` (the timestep the pipelines pass is ``s * T``);
        otherwise the scheduler's own forward diffusion."""
        if not self._flow_matching:
            return self._train_scheduler.add_noise(latents, noise, timesteps)
        sigma = self._sigma(timesteps, latents)
        return (1 - sigma) * latents + sigma * noise

    def training_target(self, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """Rectified flow: the velocity ``n - x``; otherwise what the scheduler's ``prediction_type`` names."""
        kind = "flow" if self._flow_matching else self._train_scheduler.config.prediction_type
        if kind == "flow":
            return noise - latents
        if kind == "v_prediction":
            return self._train_scheduler.get_velocity(latents, noise, timesteps)
        if kind == "epsilon":
            return noise
        raise VipkitError(f"scheduler prediction_type {kind!r} is not supported (flow matching, v_prediction, epsilon)")

    def _sigma(self, timesteps: Tensor, like: Tensor) -> Tensor:
        sigma = timesteps.to(like.device, like.dtype) / self.num_train_timesteps
        return sigma.view(-1, *[1] * (like.ndim - 1))

    @property
    def num_train_timesteps(self) -> int:
        return int(self._train_scheduler.config.num_train_timesteps)

    def _scope_parameters(self, scope: str) -> list[torch.nn.Parameter]:
        module = self._prunable.module
        if scope == "blocks":
            return list(module.get_submodule(self.block_list).parameters())
        return list(module.parameters())

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        if enabled:
            self._prunable.module.enable_gradient_checkpointing()
        else:
            self._prunable.module.disable_gradient_checkpointing()

    # -- persistence and exports ---------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """A plain diffusers pipeline folder (re-indexed transformer) plus vipkit's manifest of the removals."""
        self._write_folder(Path(directory), str(self._settings["dtype"]))

    def export(self, directory: Path, format: str, *, dtype: str, provenance: Mapping[str, Any]) -> str:
        self._write_folder(Path(directory), dtype)
        return f"""```python
import torch
from diffusers import {self.pipeline_class}

pipe = {self.pipeline_class}.from_pretrained("THIS_FOLDER", torch_dtype=torch.{dtype})
video = pipe("a prompt", {_call_settings(self._settings)}).frames[0]
```

The transformer holds only the kept blocks (its config's `num_layers` says how many), so plain diffusers runs the
pruned model at its own cost. Removed attention or feed-forward branches inside kept blocks are zeros here: exact,
computed by plain diffusers at their full cost; vipkit removes them again: `[model] base = "THIS_FOLDER"` in a recipe
or bench matrix, or `vipkit.load("THIS_FOLDER")`."""

    def _write_folder(self, directory: Path, dtype: str) -> None:
        import torch

        from vipkit.dit_folder import write_pipeline_folder

        settings = {**self._settings, "dtype": dtype}
        write_pipeline_folder(directory, self, self._parts, settings, getattr(torch, dtype))

    @classmethod
    def export_options(cls, directory: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
        return {"base": str(directory), "dtype": manifest.get("dtype", "float32")}

    def source_models(self) -> list[str]:
        from vipkit.model_source import is_local_path

        base = self.config.base
        return [] if self.config.preset is not None or base is None or is_local_path(base) else [base]


def _call_settings(settings: Mapping[str, Any]) -> str:
    """The pipeline call's arguments that reproduce vipkit's videos (the negative prompt when there is one)."""
    keys = ("num_frames", "height", "width", "num_inference_steps", "guidance_scale", "max_sequence_length")
    given = {key: settings[key] for key in keys if key in settings}
    if settings.get("negative_prompt"):
        given["negative_prompt"] = settings["negative_prompt"]
    return ", ".join(f"{key}={value!r}" for key, value in given.items())
