"""What every model family built around one prunable torch denoiser shares, written once.

A family subclasses ``DenoiserFamily`` and supplies what is its own: how its parts load (``_load_parts``),
how it puts them together on a device (``_attach``), one batch of generation (``_generate_batch``), the
parameters of each trainable scope (``_scope_parameters``) and how its parts copy (``_copied_parts``).
The kit does the rest of the ``VideoModel`` contract: block listing and exact removal through a
``PrunableModule``, generation settings (the recipe's explicit values over the source's defaults over
the Config's), device resolution, copies, seeded batched generation, scope errors, denoiser switching
for the distributed trainer, and reloading a saved model. torch is imported inside methods only, so a
family module that imports this one registers without torch.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from vipkit.errors import VipkitError
from vipkit.generation_speed import GenerationCompile
from vipkit.interfaces import Block, Config, Generation, VideoModel
from vipkit.model_source import DEVICE_PATTERN

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from vipkit.prunable import PrunableModule

Dtype = Literal["float32", "bfloat16", "float16"]
MAX_SIDE = 4096
"""The largest video height or width a Config takes: far above any video model's, far below what exhausts memory."""
MAX_FRAMES = 1024
"""The most frames per video a Config takes."""


class FamilyConfig(Config):
    """The options every denoiser family has; a family's Config adds its own and may change defaults."""

    preset_seed: int = Field(0, ge=0, description="Seed of the preset's random weights (same seed, same weights).")
    height: int | None = Field(
        None, gt=0, le=MAX_SIDE, description="Video height in pixels, a multiple of 8; None: the model's default."
    )
    width: int | None = Field(
        None, gt=0, le=MAX_SIDE, description="Video width in pixels, a multiple of 8; None: the model's default."
    )
    num_frames: int | None = Field(
        None, gt=0, le=MAX_FRAMES, description="Frames per video; None: the model's default."
    )
    negative_prompt: str = Field("", description="Prompt of the unconditional branch of classifier-free guidance.")
    dtype: Dtype = Field("float32", description="Weights and compute dtype of the denoiser and the frozen parts.")
    device: str = Field(
        "cpu",
        pattern=DEVICE_PATTERN,
        description="Torch device ('cpu', 'cuda', 'cuda:1', ...); 'auto' = cuda if available, else cpu.",
    )
    generation_batch_size: int = Field(4, gt=0, description="Videos generated together.")
    generation_compile: GenerationCompile = Field(
        "off",
        description="While generating, run each repeated block of the denoiser (and of the family's other generation "
        "modules, e.g. a VAE decoder) through torch.compile in this mode, compiled once per block class and shape "
        "(regional compilation: removing blocks compiles nothing new); the first videos pay for the compilation "
        "(minutes at full size, once per process). 'off': eager; 'max-autotune-no-cudagraphs' tunes kernels longer.",
    )
    generation_channels_last: bool = Field(
        False,
        description="While generating, store the convolution weights channels-last (NHWC), cuDNN's native layout on "
        "NVIDIA GPUs; they are contiguous again afterwards.",
    )

    @field_validator("height", "width")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError(f"must be a multiple of 8 (the VAE downsamples 8x), got {value}")
        return value


def place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move ``module`` only if needed, with torch's own ``to``: diffusers' override logs a warning on every dtype
    cast ("modules that should be kept in float32: []"), even when no module needs float32."""
    import torch

    first = next(module.parameters())
    if first.device != device or first.dtype != dtype:
        torch.nn.Module.to(module, device, dtype)
    return module


class DenoiserFamily(VideoModel):
    """A ``VideoModel`` around one prunable torch denoiser (see the module docstring for what a family adds)."""

    Config: ClassVar[type[FamilyConfig]] = FamilyConfig
    setting_keys: ClassVar[tuple[str, ...]]
    """Config options that change a generated video besides prompt and seed (the teacher cache's key)."""
    trainable_scopes: ClassVar[dict[str, str]]
    """Each trainable scope's name and what it trains, for ``train.trainable`` and its errors."""
    compile_regions: ClassVar[tuple[str, ...]] = ()
    """Class names of the repeated modules ``generation_compile`` compiles one by one (``vipkit.generation_speed``);
    empty: the denoiser's diffusers ``_repeated_blocks``, if it has any."""

    config: FamilyConfig
    dtype: torch.dtype
    device: torch.device

    def __init__(self, config: FamilyConfig | None = None) -> None:
        super().__init__(config)
        self._attach(self._load_parts())

    # -- what a family supplies --------------------------------------------------------------
    @abstractmethod
    def _load_parts(self) -> Any:
        """The family's parts as its Config asks (a preset, a saved folder, downloaded weights)."""

    @abstractmethod
    def _attach(self, parts: Any) -> None:
        """Take ``parts`` as this model's: call ``_adopt`` first (settings, device, placement), then assemble them."""

    @abstractmethod
    def _copied_parts(self) -> Any:
        """Parts for an independent copy: the denoiser copied (``self._prunable.copy()``), frozen parts shared,
        the current generation settings as the copy's defaults."""

    @abstractmethod
    def _generate_batch(self, prompts: list[str], generators: list[torch.Generator]) -> Generation:
        """One batch of videos, video ``i`` drawn from ``generators[i]`` alone."""

    @abstractmethod
    def _scope_parameters(self, scope: str) -> list[torch.nn.Parameter]:
        """The parameters of a scope named in ``trainable_scopes``."""

    # -- settings and placement --------------------------------------------------------------
    def _adopt(
        self, prunable: PrunableModule, source_defaults: dict[str, Any], frozen: Sequence[torch.nn.Module]
    ) -> None:
        """Resolve the generation settings (explicit options > the source's defaults > the Config's) and the
        device, take ``prunable`` as the denoiser, and place it and the ``frozen`` parts (eval mode, no gradients)
        on the device in the model's dtype."""
        import torch

        from vipkit.model_source import resolve_device

        config = self.config
        given = {key: getattr(config, key) for key in self.setting_keys}
        explicit = {key: value for key, value in given.items() if key in config.model_fields_set and value is not None}
        fallback = {key: value for key, value in given.items() if value is not None}
        merged = {**fallback, **source_defaults, **explicit}
        self._settings: dict[str, Any] = {key: merged[key] for key in self.setting_keys}
        self.dtype = getattr(torch, self._settings["dtype"])
        self.device = resolve_device(config.device)
        self._prunable = prunable
        self._runner: torch.nn.Module = prunable.module  # what predict_noise calls: the denoiser or a wrapper of it
        place(prunable.module, self.device, self.dtype).eval()
        for part in frozen:
            place(part, self.device, self.dtype).eval().requires_grad_(False)
        self._check_compile_regions()

    def _check_compile_regions(self) -> None:
        """``generation_compile`` needs regions to compile: a family that names none (or none present) is an error
        now, not a silent eager run."""
        from vipkit.generation_speed import find_regions

        if self.config.generation_compile == "off":
            return
        classes = self._region_classes()
        if not classes or not find_regions([self._prunable.module], classes):
            raise VipkitError(
                f"generation_compile = {self.config.generation_compile!r}: model family {self.name!r} names no "
                f"repeated blocks of its denoiser to compile ({', '.join(classes) or 'compile_regions is empty'}); "
                "set the model's generation_compile = 'off'"
            )

    @property
    def generation_settings(self) -> dict[str, Any]:
        return dict(self._settings)

    # -- structure ---------------------------------------------------------------------------
    def blocks(self) -> list[Block]:
        return self._prunable.blocks()

    def remove_block(self, name: str) -> None:
        self._prunable.remove(name)

    def restore_block(self, name: str) -> None:
        self._prunable.restore(name)

    @property
    def removed_blocks(self) -> list[str]:
        return self._prunable.removed

    @property
    def resized_layers(self) -> dict[str, dict[str, Any]]:
        return self._prunable.resized

    def note_resized(self, path: str, attributes: Mapping[str, int]) -> None:
        self._prunable.note_resized(path, attributes)

    def num_parameters(self) -> int:
        return self._prunable.num_parameters()

    def copy(self) -> DenoiserFamily:
        """An independent copy of the denoiser with its removals; the frozen parts are shared."""
        clone = type(self).__new__(type(self))
        VideoModel.__init__(clone, self.config)
        clone._attach(self._copied_parts())
        return clone

    # -- generation --------------------------------------------------------------------------
    def _region_classes(self) -> tuple[str, ...]:
        return self.compile_regions or tuple(getattr(self._prunable.module, "_repeated_blocks", ()))

    def _generation_modules(self) -> list[torch.nn.Module]:
        """The modules a generation runs that ``generation_compile`` and ``generation_channels_last`` apply to: the
        denoiser; a family may add others (its VAE)."""
        return [self._prunable.module]

    def _generation_context(self) -> AbstractContextManager[Any]:
        """A family's own speed-ups for the length of one ``generate`` call (none by default)."""
        return nullcontext()

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> Generation:
        """Seeded, batched sampling: one generator per video makes video i depend only on (prompt i, seed i)."""
        import torch

        from vipkit.generation_speed import faster_generation

        if not prompts or len(prompts) != len(seeds):
            raise VipkitError(f"generate needs one seed per prompt, got {len(prompts)} prompts and {len(seeds)} seeds")
        size = self.config.generation_batch_size
        batches = []
        speed = faster_generation(
            self._generation_modules(),
            self._region_classes(),
            self.config.generation_compile,
            self.config.generation_channels_last,
        )
        with torch.no_grad(), self._generation_context(), speed:
            for start in range(0, len(prompts), size):
                generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds[start : start + size]]
                batches.append(self._generate_batch(list(prompts[start : start + size]), generators))
        return Generation(
            videos=torch.cat([b.videos for b in batches]), latents=torch.cat([b.latents for b in batches])
        )

    # -- training ----------------------------------------------------------------------------
    def trainable_parameters(self, scope: str) -> list[torch.nn.Parameter]:
        if scope not in self.trainable_scopes:
            known = "; ".join(f"{name!r} ({what})" for name, what in self.trainable_scopes.items())
            raise VipkitError(f"unknown trainable scope {scope!r} for {self.name}; valid scopes: {known}")
        return self._scope_parameters(scope)

    def train_mode(self, enabled: bool) -> None:
        self._prunable.module.train(enabled)

    def denoiser(self) -> torch.nn.Module:
        """The denoiser module (removed blocks are pass-throughs in it, their weights outside it)."""
        return self._prunable.module

    def use_denoiser(self, module: torch.nn.Module) -> None:
        self._runner = module

    # -- persistence -------------------------------------------------------------------------
    @classmethod
    def load_saved(cls, directory: Path, **options: Any) -> DenoiserFamily:
        """Rebuild a model written by ``save``; its saved generation settings come back as defaults, ``options`` (Config
        fields: device, settings) override."""
        return cls(cls.Config(base=str(directory), **options))
