"""The component interfaces that plugins implement.

Videos travel as float tensors ``(batch, frames, channels, height, width)`` in ``[0, 1]``; prompts as
``list[str]``; scores as ``dict[str, Tensor(batch)]`` (one entry per dimension, higher is better).
Every component has a registered ``name`` and a ``Config`` (a pydantic model, unknown keys are
errors) that it is built from; the base ``Config`` takes no options.

torch is imported only for type checking so that ``vipkit --help`` stays fast.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from vipkit.errors import VipkitError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

Scores = dict[str, "Tensor"]
"""One score tensor of shape ``(batch,)`` per named dimension; higher is better."""


def mean_scores(scores: Scores) -> dict[str, float]:
    """Per-dimension mean over the videos."""
    return {dim: float(values.float().mean()) for dim, values in scores.items()}


class Config(BaseModel):
    """Base of every component's options: validated, immutable, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Component(ABC):
    """Something a recipe names: built from its validated ``Config``."""

    name: ClassVar[str]
    Config: ClassVar[type[Config]] = Config

    def __init__(self, config: Config | None = None) -> None:
        self.config = config if config is not None else type(self).Config()

    @classmethod
    def from_options(cls, options: dict[str, Any] | None = None) -> Component:
        """Validate a recipe table against ``cls.Config`` and build the component."""
        return cls(cls.Config.model_validate(options or {}))

    def check_plan(self, plan: Plan) -> list[str]:
        """Problems of this component's options given the whole built plan, each ``option: why``.

        Called once before a run (and by ``compress --dry-run``), when every part is built but nothing
        has run: the place for contradictions that need the model or the reward, such as a per-stage
        budget the model cannot supply. The default finds none.
        """
        return []


# ---------------------------------------------------------------------------------------------
# Model families


@dataclass(frozen=True)
class Block:
    """A prunable unit of a model: removing it keeps every tensor shape valid."""

    name: str  # dotted module path inside the model, unique
    kind: str  # family-defined, e.g. "motion_module", "spatial_transformer_block"
    params: int  # parameters that removing the block removes


@dataclass
class Generation:
    """What a model generated: the videos for people and rewards, the latents for training."""

    videos: Tensor  # (B, F, C, H, W) in [0, 1], float32, on CPU
    latents: Tensor  # the denoised latents before decoding, family layout, on CPU


class VideoModel(Component):
    """A text-to-video model family: load, list and remove blocks, generate, train, save.

    Training runs on latents in the family's own layout; the losses only use the methods below,
    so they work for every family. The class attributes are the family's defaults for a recipe that
    leaves them unset (``schedule.block_kinds``, ``train.trainable``, ``train.lora.target_modules``).
    """

    default_block_kinds: ClassVar[tuple[str, ...]] = ()
    """Block kinds a recipe prunes when it names none (empty: the recipe must name them)."""
    default_trainable: ClassVar[str] = "all"
    """The ``trainable_parameters`` scope a recipe trains when it names none."""
    lora_targets: ClassVar[tuple[str, ...]] = ()
    """Name endings of the denoiser's Linear layers that ``train.lora`` adapts when the recipe names none."""

    # -- structure -------------------------------------------------------------------------
    @abstractmethod
    def blocks(self) -> list[Block]:
        """Every prunable block still present, in a stable order."""

    def blocks_of(self, kinds: Iterable[str]) -> list[Block]:
        """The blocks still present whose kind is one of ``kinds``: the candidates a stage may prune."""
        wanted = set(kinds)
        return [block for block in self.blocks() if block.kind in wanted]

    @abstractmethod
    def remove_block(self, name: str) -> None:
        """Remove a block exactly (the model then computes as if it were never there)."""

    @abstractmethod
    def restore_block(self, name: str) -> None:
        """Undo ``remove_block`` (used by importance scorers to try a removal)."""

    @property
    @abstractmethod
    def removed_blocks(self) -> list[str]:
        """Names of the blocks removed so far, in removal order."""

    @abstractmethod
    def num_parameters(self) -> int:
        """Parameters of the denoiser (the part that is pruned and trained)."""

    @property
    def resized_layers(self) -> dict[str, dict[str, Any]]:
        """The denoiser's layers made smaller than its config says (width pruning), by module path: their parameter
        shapes and changed attributes (``vipkit.width_shapes``), which ``save`` writes and ``load_saved`` rebuilds.
        Empty by default: a family without width pruning has none."""
        return {}

    def note_resized(self, path: str, attributes: Mapping[str, int]) -> None:
        """Record that a pruner made the denoiser's layer at ``path`` smaller and changed ``attributes`` of it (e.g. an
        attention layer's ``heads``), so that copies, ``save`` and ``load_saved`` keep its shapes."""
        raise NotImplementedError(f"model family {self.name!r} cannot record resized layers (width pruning)")

    @abstractmethod
    def copy(self) -> VideoModel:
        """An independent copy of the denoiser; frozen parts (VAE, text encoder) may be shared."""

    # -- generation ------------------------------------------------------------------------
    @abstractmethod
    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> Generation:
        """Generate one video per prompt; video ``i`` depends only on ``prompts[i]`` and ``seeds[i]``."""

    @property
    @abstractmethod
    def generation_settings(self) -> dict[str, Any]:
        """Everything besides prompt and seed that changes a generated video (for cache keys)."""

    # -- training --------------------------------------------------------------------------
    @abstractmethod
    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        """Text conditioning for ``predict_noise``."""

    @abstractmethod
    def predict_noise(
        self, noisy_latents: Tensor, timesteps: Tensor, conditioning: Tensor, *, features: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """The denoiser's prediction; with ``features=True`` also the block outputs (for KD)."""

    @abstractmethod
    def add_noise(self, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """Forward diffusion ``q(x_t | x_0)`` of the family's training schedule."""

    @abstractmethod
    def training_target(self, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """What ``predict_noise`` should output (noise for epsilon models, velocity for v-models)."""

    @property
    @abstractmethod
    def num_train_timesteps(self) -> int:
        """Timesteps are drawn from ``range(num_train_timesteps)``."""

    @abstractmethod
    def trainable_parameters(self, scope: str) -> list[torch.nn.Parameter]:
        """The parameters to train for a family-defined scope (e.g. "motion", "all")."""

    @abstractmethod
    def train_mode(self, enabled: bool) -> None:
        """Switch the denoiser between training and inference behaviour."""

    # -- optional, for the distributed trainer -----------------------------------------------
    def denoiser(self) -> torch.nn.Module:
        """The ``torch.nn.Module`` that ``predict_noise`` runs and whose parameters are trained.

        The trainer wraps it (DDP across processes, LoRA adapters) and hands the wrapper back
        through ``use_denoiser``. A family without it trains on one process, without LoRA.
        """
        raise NotImplementedError(f"model family {self.name!r} does not expose its denoiser module")

    def use_denoiser(self, module: torch.nn.Module) -> None:
        """Make ``predict_noise`` call ``module``: a wrapper around ``denoiser()``, or ``denoiser()`` itself again."""
        raise NotImplementedError(f"model family {self.name!r} cannot swap its denoiser module")

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute the denoiser's activations during backward (less memory, ~30 % more compute)."""
        raise NotImplementedError(f"model family {self.name!r} has no gradient checkpointing")

    # -- persistence -----------------------------------------------------------------------
    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the model (safetensors only) so that ``load_saved`` rebuilds it bit-identically."""

    @classmethod
    @abstractmethod
    def load_saved(cls, directory: Path, **options: Any) -> VideoModel:
        """Rebuild a model written by ``save``; ``options`` are Config fields to override (e.g. ``device``)."""

    def pipeline(self) -> Any:
        """A ready inference pipeline (a diffusers pipeline where the family has one)."""
        raise NotImplementedError(f"model family {self.name!r} has no inference pipeline")

    # -- optional, for exports ------------------------------------------------------------------
    export_formats: ClassVar[dict[str, str]] = {}
    """Formats ``export`` writes (``vipkit export --format``), each with a line saying what it is and what loads it."""
    library_name: ClassVar[str] = "vipkit"
    """The library that loads the family's exports (a model card's ``library_name``)."""

    def export(self, directory: Path, format: str, *, dtype: str, provenance: Mapping[str, Any]) -> str:
        """Write the model as ``format`` (a key of ``export_formats``) into the empty folder ``directory``, in
        ``dtype``, so that the format's own library loads it to the outputs this model gives; raise ``VipkitError``
        when this model cannot be expressed in the format. ``provenance`` is what the saved model's manifest knows
        of its making (``trained_scope``: the ``trainable_parameters`` scope its training changed, None when
        nothing was trained; the key is absent when that is unknown). Returns how to load the export (Markdown, for
        the model card)."""
        raise VipkitError(f"model family {self.name!r} has no export formats")

    @classmethod
    def export_options(cls, directory: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """The Config options that load the export in ``directory`` (its ``vipkit_export.json`` is ``manifest``:
        format, dtype, generation settings) as this family's model, for ``vipkit.load_model``."""
        raise VipkitError(f"model family {cls.name!r} cannot load its exports")

    def source_models(self) -> list[str]:
        """Hub ids of the released weights this model was built from (a model card's ``base_model``); empty for a
        preset or when unknown."""
        return []


# ---------------------------------------------------------------------------------------------
# Rewards


class RewardModel(Component):
    """Scores videos against their prompts, one tensor per dimension, higher is better.

    ``value_ranges`` may declare the closed interval each dimension's scores lie in; the engine stops
    a run whose reward leaves it (as it stops on NaN, a missing dimension or a wrong shape).
    """

    dimensions: ClassVar[tuple[str, ...]]
    """Every dimension the reward can score. An instance may narrow it by configuration (set
    ``self.dimensions`` in ``__init__``); ``score`` returns exactly the instance's dimensions."""
    value_ranges: ClassVar[dict[str, tuple[float, float]]] = {}

    @abstractmethod
    def score(self, videos: Tensor, prompts: Sequence[str]) -> Scores:
        """Videos ``(B, F, C, H, W)`` in [0, 1] → ``{dimension: Tensor(B)}`` for every dimension."""


# ---------------------------------------------------------------------------------------------
# Strategies

Evaluate = Callable[["VideoModel"], "Scores"]
"""Generate the recipe's probe videos (its evaluation videos when it sets no probe prompts) with a model
and score them (supplied by the engine, cached)."""


@dataclass(frozen=True)
class BlockImportance:
    """How much a block matters: the objective lost when it is removed (lower = prune first)."""

    block: Block
    importance: float
    scores: dict[str, float] = field(default_factory=dict)  # per-dimension means without the block


class ImportanceScorer(Component):
    """Ranks candidate blocks, least important first."""

    @abstractmethod
    def rank(
        self, model: VideoModel, candidates: Sequence[Block], evaluate: Evaluate, objective: Objective
    ) -> list[BlockImportance]:
        """Return every candidate with its importance, sorted ascending; ``model`` is left unchanged."""


class Pruner(Component):
    """Chooses and removes this stage's blocks (or makes layers narrower)."""

    uses_ranking: ClassVar[bool] = True
    """Whether ``apply`` reads the scorer's block ranking; a pruner that does not (width pruning) spares the stage the
    scorer's work."""

    def begin_stage(self, plan: Plan, stage: int) -> None:
        """Called before each stage's ``apply`` (or ``replay``) with the run's plan (``plan.model`` is the unpruned
        teacher) and the stage number (1 to ``plan.stages``), also when a run resumes: for budgets stated over the whole
        schedule. The default does nothing."""

    @abstractmethod
    def apply(self, model: VideoModel, ranking: Sequence[BlockImportance]) -> list[str]:
        """Remove blocks from ``model`` within the pruner's per-stage budget; return their names (or one line per
        narrowed layer saying what it lost, in a form ``replay`` reads back)."""

    def replay(self, model: VideoModel, removed: Sequence[str]) -> None:
        """Redo a stage's stored decision (what ``apply`` returned, read back from the run folder when the stage
        resumes) on the model as it was before ``apply``. The default removes the named blocks."""
        for name in removed:
            model.remove_block(name)

    def describe_stage(self, plan: Plan, stage: int) -> str:
        """One line for the plan (``compress --dry-run``): what this pruner removes in ``stage``. The default names the
        pruner and its options."""
        options = ", ".join(f"{key} = {value}" for key, value in self.config.model_dump().items() if value is not None)
        return f"{self.name} ({options})" if options else self.name


@dataclass
class PairSet:
    """Preference pairs: for prompt ``i`` the teacher video wins and the student video loses."""

    prompts: list[str]
    seeds: list[int]
    winner_latents: Tensor
    loser_latents: Tensor
    winner_videos: Tensor
    loser_videos: Tensor
    target_dimensions: list[str]  # the degraded dimensions the pairs were chosen for

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass
class CandidateVideos:
    """The same prompts and seeds rendered by teacher and student, each with its scores."""

    prompts: list[str]
    seeds: list[int]
    teacher: Generation
    student: Generation
    teacher_scores: Scores
    student_scores: Scores


class PairCurator(Component):
    """Finds the dimensions the pruning hurt and builds pairs that target them."""

    @abstractmethod
    def build(self, candidates: CandidateVideos) -> PairSet:
        """Choose pairs (possibly none) from the teacher/student videos of the training prompts."""


# ---------------------------------------------------------------------------------------------
# Losses


@dataclass
class PairBatch:
    """One training batch: latents of winners and losers with their prompts' conditioning."""

    winner_latents: Tensor
    loser_latents: Tensor
    conditioning: Tensor
    generator: torch.Generator  # draws noise and timesteps, so training is reproducible
    pair_generators: list[torch.Generator] | None = None
    """One generator per pair, seeded from (run seed, step, pair index): draws made from these do not
    depend on how a batch is split into micro-batches or across processes. Losses should prefer them."""

    def to(self, device: torch.device | str) -> PairBatch:
        """The same batch with its tensors on ``device`` (copied without stalling the GPU); generators stay on the CPU."""
        from vipkit.transfer import to_device

        return PairBatch(
            to_device(self.winner_latents, device),
            to_device(self.loser_latents, device),
            to_device(self.conditioning, device),
            self.generator,
            self.pair_generators,
        )


@dataclass
class LossOutput:
    loss: Tensor  # scalar, differentiable w.r.t. the student's trainable parameters
    metrics: dict[str, float | Tensor] = field(default_factory=dict)
    """Names to finite numbers for metrics.jsonl: floats, or detached 0-dim tensors, which the trainer
    reads once per optimizer step (``float(x)`` in every micro-batch would make the CPU wait for the GPU)."""


class DistillLoss(Component):
    """A training loss on preference pairs; the math lives in small pure functions of tensors."""

    def begin_stage(self, student: VideoModel, teacher: VideoModel) -> None:
        """Called once before a stage's training (e.g. to freeze a copy of the student)."""

    @abstractmethod
    def compute(self, student: VideoModel, teacher: VideoModel, batch: PairBatch) -> LossOutput:
        """The loss for one batch; ``teacher`` is frozen."""


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Objective:
    """Turns per-dimension scores into the one number that importance scoring maximises."""

    weights: dict[str, float]  # dimension -> weight; empty = equal weights over all dimensions

    def __call__(self, scores: Scores) -> float:
        means = mean_scores(scores)
        weights = self.weights or dict.fromkeys(means, 1.0)
        total = sum(weights.values())
        return sum(weight * means[dim] for dim, weight in weights.items()) / total


@dataclass(frozen=True)
class Plan:
    """A recipe's built parts and schedule, as ``Component.check_plan`` sees them before a run."""

    model: VideoModel  # the teacher, before any pruning
    reward: RewardModel
    stages: int
    block_kinds: tuple[str, ...]
    candidates: tuple[Block, ...]  # the model's blocks of those kinds
    probe_prompts: tuple[str, ...] = ()  # what the scorer ranks on (the evaluation prompts without probe ones) ...
    probe_seeds: tuple[int, ...] = ()  # ... and their seeds: calibration data for a pruner that needs some


COMPONENT_KINDS: dict[str, type[Component]] = {
    "models": VideoModel,
    "rewards": RewardModel,
    "scorers": ImportanceScorer,
    "pruners": Pruner,
    "curators": PairCurator,
    "losses": DistillLoss,
}
"""Registry kind -> the base class its components must subclass."""
