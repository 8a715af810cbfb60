"""Distil the student on one stage's preference pairs: one or many processes, resumable step by step.

The same global batch gives the same update on any number of processes: the shuffle order and
every pair's noise are functions of (seed, step, pair index), each micro-batch's loss is weighted
by its share of the global batch, and accelerate's DDP averages the gradients over ranks.
Checkpoints (``vipkit.checkpoint``) hold the trained parameters, optimizer, LR schedule and RNG,
so a killed run continues bit-identically from the newest complete one.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vipkit import distributed, fsdp
from vipkit.checkpoint import CheckpointStore, TrainingState
from vipkit.curves import first_global_step, read_metrics
from vipkit.errors import VipkitError
from vipkit.faults import fault_point
from vipkit.interfaces import DistillLoss, PairBatch, PairSet, VideoModel
from vipkit.progress import track
from vipkit.recipe import LoraSection, TrainSection
from vipkit.seeds import derive_seed  # and still importable from here, as before vipkit.seeds

if TYPE_CHECKING:
    import torch
    from torch import Tensor


@dataclass
class WeightedLoss:
    weight: float
    loss: DistillLoss


def lr_factor(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def micro_batches(indices: Tensor, accumulation: int, rank: int, world: int) -> list[tuple[Tensor, float]]:
    """This rank's pairs in each micro-batch of one optimizer step, with the weight of their mean loss.

    The step's pairs are dealt over the ranks first (pair ``j`` to rank ``j % world``), so every rank
    trains a real share; each rank then splits its share into as many micro-batches as keep a forward
    at most as large as the recipe's (``batch_size / gradient_accumulation_steps`` pairs), the same
    number on every rank. The weight is the rank's share of the step's pairs times ``world``, because
    DDP and FSDP average gradients over ranks; the weighted sum is then the mean over the global batch.
    A rank without a pair in a micro-batch gets a stand-in pair with weight 0: every rank must run
    every forward and backward for the collectives to line up.
    """
    mine = indices[rank::world]
    largest_share = -(-len(indices) // world)
    count = min(largest_share, -(-accumulation * largest_share // len(indices)))
    return [
        (chunk, len(chunk) / len(indices) * world) if len(chunk) else (indices[:1], 0.0)
        for chunk in mine.tensor_split(count)
    ]


def describe_split(batch_size: int, accumulation: int, world: int) -> str:
    """How one full optimizer step runs on ``world`` processes, for the plan and the start of a run."""
    import torch

    plan = [micro_batches(torch.arange(batch_size), accumulation, rank, world) for rank in range(world)]
    forwards = len(plan[0])
    largest = max(len(pairs) for rank in plan for pairs, weight in rank if weight)
    each = "each runs " if world > 1 else ""
    text = f"{_count(batch_size, 'pair')} per step on {_count(world, 'process')}: {each}{_count(forwards, 'micro-batch')} of ≤ {_count(largest, 'pair')}"
    idle = sum(1 for rank in plan for _, weight in rank if not weight)
    if idle:
        without = sum(1 for rank in plan if not any(weight for _, weight in rank))
        text += (
            f"; {idle} of {forwards * world} forwards are weight-0 stand-ins"
            + (f" ({_count(without, 'process')} without any pair)" if without else "")
            + f": a batch_size that is a multiple of {world} keeps every process busy"
        )
    return text


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "es" if noun.endswith(("s", "h")) else "s")


def _optimizer(settings: TrainSection, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    import torch

    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.learning_rate, momentum=0.9, weight_decay=settings.weight_decay)
    return torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)


def _lora_targets(module: torch.nn.Module, scope: set[int], endings: Sequence[str]) -> list[str]:
    """Full names of the Linear layers inside the trainable scope whose names end with one of ``endings``."""
    import torch

    return [
        name
        for name, layer in module.named_modules()
        if isinstance(layer, torch.nn.Linear)
        and id(layer.weight) in scope
        and any(name == end or name.endswith(f".{end}") for end in endings)
    ]


def add_lora(
    module: torch.nn.Module, scope: list[torch.nn.Parameter], lora: LoraSection, family_targets: Sequence[str] = ()
) -> list[torch.nn.Parameter]:
    """Put peft LoRA adapters on the scope's matching Linear layers (``lora.target_modules``, else the family's);
    return the adapter parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    endings = lora.target_modules or list(family_targets)
    targets = _lora_targets(module, {id(p) for p in scope}, endings)
    if not targets:
        raise VipkitError(
            f"train.lora.target_modules {endings} match no Linear layer inside the trainable scope; "
            "name the endings of Linear layers of that scope (e.g. to_q, to_k, to_v, to_out.0)"
        )
    inject_adapter_in_model(
        LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=0.0, target_modules=targets), module
    )
    return [p for name, p in module.named_parameters() if "lora_" in name]


def merge_lora(module: torch.nn.Module) -> None:
    """Fold every LoRA adapter into its base layer and put the plain layer back (the model then loads without peft)."""
    from peft.tuners.lora import LoraLayer

    for name, layer in list(module.named_modules()):
        if isinstance(layer, LoraLayer):
            layer.merge()
            module.set_submodule(name, layer.get_base_layer())


@dataclass
class _Trainable:
    params: list[torch.nn.Parameter]  # what the optimizer steps (FSDP: the sharded copy's parameters)
    ddp: torch.nn.Module | None  # the DDP wrapper, for no_sync during micro-batches
    sharded: bool  # FSDP: parameters, gradients and optimizer state are DTensor shards
    compute_dtype: torch.dtype | None  # autocast dtype of the training passes; None: the weights' own


def _to_master_weights(params: list[torch.nn.Parameter], wanted: str) -> list[torch.dtype]:
    """Make low-precision trained weights float32 master copies (as diffusers' training scripts do); return
    every weight's own dtype, which ``_restore_dtypes`` puts back.

    An AdamW update at lr 1e-5 is mostly below bf16's resolution: applied to bf16 weights in place it is
    rounded away. ``wanted = "model"`` keeps them in place anyway (the recipe's explicit choice).
    """
    import torch

    dtypes = [param.dtype for param in params]
    if wanted == "float32":
        for param in params:
            if param.dtype in (torch.bfloat16, torch.float16):
                param.data = param.data.float()
    return dtypes


def _restore_dtypes(params: list[torch.nn.Parameter], dtypes: list[torch.dtype]) -> None:
    for param, dtype in zip(params, dtypes, strict=True):
        if param.dtype != dtype:
            param.data = param.data.to(dtype)


@contextmanager
def _training_setup(
    student: VideoModel, teacher: VideoModel, settings: TrainSection, accelerator: Any
) -> Iterator[_Trainable]:
    """Freeze all, make the scope (or its adapters) trainable in float32, wrap for DDP or FSDP; undo it afterwards,
    merging LoRA."""
    import torch

    world = distributed.world_size()
    everything = student.trainable_parameters("all")
    for param in [*teacher.trainable_parameters("all"), *everything]:
        param.requires_grad_(False)
    # a bf16/fp16 model computes in its own dtype, also where float32 master weights meet its frozen layers
    low_precision = next((p.dtype for p in everything if p.dtype in (torch.bfloat16, torch.float16)), None)
    scope = student.trainable_parameters(settings.trainable or student.default_trainable)
    module = None
    try:
        module = student.denoiser()
    except NotImplementedError:
        if settings.lora is not None or world > 1 or settings.compile:
            raise VipkitError(
                f"model family {student.name!r} does not expose its denoiser module (VideoModel.denoiser), "
                "which LoRA, train.compile and multi-process training need; train it on one process without "
                "train.lora and train.compile"
            ) from None
    params = add_lora(module, scope, settings.lora, student.lora_targets) if settings.lora is not None else scope
    for param in params:
        param.requires_grad_(True)
    if settings.gradient_checkpointing:
        student.set_gradient_checkpointing(True)
    student.train_mode(True)
    dtypes = _to_master_weights(params, settings.trainable_dtype)
    compute_dtype = low_precision or (torch.bfloat16 if settings.mixed_precision == "bf16" else None)
    trainable = _Trainable(params, None, False, compute_dtype)
    runner = module  # what the student's predict_noise calls while training
    if module is not None and world > 1 and settings.fsdp:
        runner, sharded_params = fsdp.sharded_copy(module, params)
        trainable = _Trainable(sharded_params, None, True, compute_dtype)
        student.use_denoiser(runner.train(True))
    elif module is not None and world > 1:
        runner = trainable.ddp = accelerator.prepare_model(module, device_placement=False)
        student.use_denoiser(runner)
    teacher_module = _compile_denoisers(student, teacher, runner) if settings.compile and runner is not None else None
    try:
        yield trainable
        if trainable.sharded:
            fsdp.copy_back(params, trainable.params)
    finally:
        _restore_dtypes(params, dtypes)  # the model's dtype again: generation, saving, LoRA merging
        student.train_mode(False)
        if module is not None:
            student.use_denoiser(module)
        if teacher_module is not None:
            teacher.use_denoiser(teacher_module)
        if settings.gradient_checkpointing:
            student.set_gradient_checkpointing(False)
        for param in params:
            param.requires_grad_(False)
        if settings.lora is not None:
            merge_lora(module)


def _attention_kernels(device: torch.device) -> AbstractContextManager[Any]:
    """On CUDA, scaled-dot-product attention without cuDNN's kernel by default: its backward once failed on an
    H100 (torch 2.11: ``mha_graph.execute(...) is_good()``). Model families may opt their layers back in
    (animatediff's ``spatial_attention``/``temporal_attention``: cuDNN trained fine at full size on an H200)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if device.type != "cuda":
        return nullcontext()
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def _compile_denoisers(student: VideoModel, teacher: VideoModel, runner: torch.nn.Module) -> torch.nn.Module | None:
    """``torch.compile`` the student's training forward and the frozen teacher's (the DPO reference and SFT
    target work); returns the teacher's own module to put back, or None when its family cannot swap it."""
    import torch

    student.use_denoiser(torch.compile(runner))
    try:
        teacher_module = teacher.denoiser()
        teacher.use_denoiser(torch.compile(teacher_module))
    except NotImplementedError:
        return None
    return teacher_module


class _Trackers:
    """``train.log_with`` through accelerate's trackers, on the main process only, into ``RUN/trackers/``.

    Steps are global (``vipkit.curves``): the optimizer steps of the earlier stages in metrics.jsonl plus the
    stage's step, so they keep increasing over stages and a resumed run logs a redone step under its old
    number. TensorBoard's writer starts with ``purge_step`` at the step training (re)starts from, so the lines
    a killed run logged from there on are dropped when read back: every step once. W&B continues one run per
    run directory (its id is kept in ``RUN/trackers/wandb-run-id``) and keeps what it already has of a redone
    step (the same numbers: a resume is bit-identical). Trackers are finished without
    ``Accelerator.end_training``, which would also leave the process group every later stage needs.
    """

    PROJECT = "vipkit"  # TensorBoard: RUN/trackers/vipkit/; W&B: the project's name

    def __init__(self, settings: TrainSection, run_dir: Path | None) -> None:
        self.kind = settings.log_with if distributed.is_main() else None
        if self.kind is not None and run_dir is None:
            raise VipkitError("train.log_with needs the run directory: pass run_dir (or checkpoints) to train_on_pairs")
        self.run_dir = run_dir
        self.first = 0  # the global step of this stage's step 0
        self.accelerator: Any = None

    def accelerator_options(self) -> dict[str, Any]:
        if self.kind is None:
            return {}
        return {"log_with": self.kind, "project_dir": str(self.run_dir / "trackers")}

    @contextmanager
    def open(self, accelerator: Any) -> Iterator[None]:
        """Log through ``accelerator`` (made with ``accelerator_options``); finish its trackers on the way out."""
        self.accelerator = accelerator
        try:
            yield
        finally:
            for tracker in accelerator.trackers:
                tracker.finish()

    def begin(self, stage: int, start: int) -> None:
        """Start logging a stage whose training (re)starts at its step ``start``."""
        if self.kind is None:
            return
        self.first = first_global_step(read_metrics(self.run_dir / "metrics.jsonl"), stage)
        folder = self.run_dir / "trackers"
        folder.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {"tensorboard": {"purge_step": self.first + start}}
        if self.kind == "wandb":
            id_file = folder / "wandb-run-id"
            if not id_file.exists():
                id_file.write_text(uuid.uuid4().hex[:16], encoding="utf-8")
            run_id = id_file.read_text(encoding="utf-8").strip()
            options["wandb"] = {"dir": str(folder), "id": run_id, "resume": "allow", "name": self.run_dir.name}
        self.accelerator.init_trackers(self.PROJECT, init_kwargs=options)

    def log(self, stage: int, record: dict[str, Any]) -> None:
        """One step's ``record`` (what metrics.jsonl gets) with its stage, at the step's global number."""
        if self.kind is not None:
            values = {"stage": stage, **{k: v for k, v in record.items() if k != "step"}}
            self.accelerator.log(values, step=self.first + record["step"])


def train_on_pairs(
    student: VideoModel,
    teacher: VideoModel,
    pairs: PairSet,
    losses: Sequence[WeightedLoss],
    settings: TrainSection,
    seed: int,
    log: Callable[[dict[str, Any]], None],
    *,
    stage: int = 1,
    checkpoints: CheckpointStore | None = None,
    pairs_hash: str = "",
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Train over ``settings.epochs`` shuffled passes; returns a summary of the losses seen.

    Every rank calls this with the same pairs. With ``checkpoints`` it resumes from the newest
    complete checkpoint of this stage and pairs, and writes one every ``checkpoint_every`` steps
    and when training ends. ``settings.log_with`` also sends what ``log`` gets to a tracker in
    ``run_dir/trackers/`` (``run_dir``: by default the folder that holds the ``checkpoints`` folder).
    """
    import torch
    from accelerate import Accelerator

    trackers = _Trackers(settings, run_dir or (checkpoints.root.parent if checkpoints is not None else None))
    accelerator = Accelerator(  # bf16: own autocast below
        mixed_precision="no", cpu=not torch.cuda.is_available(), **trackers.accelerator_options()
    )
    rank, world = distributed.rank(), distributed.world_size()
    batches_per_epoch = -(-len(pairs) // settings.batch_size)
    total = settings.epochs * batches_per_epoch
    torch.manual_seed(derive_seed(seed, "init"))  # LoRA init: the same on every rank
    with _training_setup(student, teacher, settings, accelerator) as trainable, trackers.open(accelerator):
        params = trainable.params
        device = params[0].device  # batches go where the trained weights are, so the loss is computed there
        dtype = trainable.compute_dtype
        autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
        optimizer = _optimizer(settings, params)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_factor(settings.lr_schedule, settings.warmup_steps, total)
        )
        for item in losses:
            item.loss.begin_stage(student, teacher)
        history: list[float] = []
        start = 0
        torch.manual_seed(derive_seed(seed, "rank", rank))
        resumed = checkpoints.newest(stage, pairs_hash) if checkpoints is not None else None
        if resumed is not None:
            start, history = _restore(resumed, student, params, optimizer, scheduler, rank)
        trackers.begin(stage, start)
        conditioning = student.encode_prompts(pairs.prompts)
        for step in track(range(start, total), "distilling", total=total - start):
            epoch, position = divmod(step, batches_per_epoch)
            order = torch.randperm(
                len(pairs), generator=torch.Generator().manual_seed(derive_seed(seed, "epoch", epoch))
            )
            indices = order[position * settings.batch_size :][: settings.batch_size]
            plan = micro_batches(indices, settings.gradient_accumulation_steps, rank, world)
            # the loss and metrics stay tensors until the step ends: reading them per micro-batch would
            # make the CPU wait for the GPU (one wait per optimizer step instead)
            summed_loss = torch.zeros((), dtype=torch.float64, device=device)
            metrics: dict[str, float | Tensor] = {}
            for number, (mine, share) in enumerate(plan):
                batch = PairBatch(
                    pairs.winner_latents[mine],
                    pairs.loser_latents[mine],
                    conditioning[mine],
                    generator=torch.Generator().manual_seed(derive_seed(seed, "batch", step, number, rank)),
                    pair_generators=[
                        torch.Generator().manual_seed(derive_seed(seed, "pair", step, int(i))) for i in mine
                    ],
                ).to(device)
                last = number == len(plan) - 1
                sync = nullcontext() if last or trainable.ddp is None else accelerator.no_sync(trainable.ddp)
                # backward inside the kernel choice too: gradient checkpointing recomputes the forward there, and a
                # recomputation that picks another attention kernel fails torch's check of the saved tensors
                with sync, _attention_kernels(device):
                    with autocast:
                        outputs = [(item, item.loss.compute(student, teacher, batch)) for item in losses]
                    loss = sum(item.weight * output.loss.float() for item, output in outputs)
                    for item, output in outputs:
                        metrics |= {f"{item.loss.name}/{key}": value for key, value in output.metrics.items()}
                    accelerator.backward(loss * share)
                summed_loss += loss.detach().double() * share / world
            step_loss = distributed.all_sum(float(summed_loss))
            metrics = {name: float(value) for name, value in metrics.items()}
            if not math.isfinite(step_loss):
                raise FloatingPointError(
                    f"the training loss became {step_loss} at step {step}; last metrics: {metrics}"
                )
            if settings.max_grad_norm is not None:
                metrics["grad_norm"] = float(fsdp.full(torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            history.append(step_loss)
            fault_point("train_step")
            if distributed.is_main():
                record = {"step": step, "epoch": epoch, "loss": step_loss, "lr": scheduler.get_last_lr()[0], **metrics}
                log(record)
                trackers.log(stage, record)
            done = step + 1
            if checkpoints is not None and (
                done == total or (settings.checkpoint_every and done % settings.checkpoint_every == 0)
            ):
                _save(
                    checkpoints,
                    TrainingState(
                        stage,
                        done,
                        student.removed_blocks,
                        pairs_hash,
                        [fsdp.full(p.detach()) for p in params],
                        fsdp.full_optimizer_state(optimizer.state_dict()),
                        scheduler.state_dict(),
                        losses=history,
                    ),
                )
    return {
        "steps": total,
        "resumed_at_step": start,
        "first_loss": history[0] if history else None,
        "last_loss": history[-1] if history else None,
    }


def _restore(
    state: TrainingState,
    student: VideoModel,
    params: list[torch.nn.Parameter],
    optimizer: Any,
    scheduler: Any,
    rank: int,
) -> tuple[int, list[float]]:
    import torch

    if state.removed_blocks != student.removed_blocks:
        raise VipkitError(
            f"checkpoint of stage {state.stage} step {state.step} was trained with removed blocks {state.removed_blocks}, "
            f"but the student has {student.removed_blocks}; delete the checkpoints/ folder of this run to retrain the stage"
        )
    if [tuple(p.shape) for p in state.parameters] != [tuple(p.shape) for p in params]:
        raise VipkitError(
            f"checkpoint of stage {state.stage} step {state.step} holds other parameters than the trainer trains"
        )
    with torch.no_grad():
        for param, saved in zip(params, state.parameters, strict=True):
            param.copy_(fsdp.like(saved, param))
    optimizer.load_state_dict(fsdp.sharded_optimizer_state(state.optimizer, params))
    scheduler.load_state_dict(state.scheduler)
    if rank < len(state.rng):
        torch.set_rng_state(state.rng[rank])
    return state.step, list(state.losses)


def _save(checkpoints: CheckpointStore, state: TrainingState) -> None:
    """Gather every rank's RNG state; the main process writes the checkpoint, the others wait."""
    import torch

    state.rng = distributed.gather([torch.get_rng_state()])
    if distributed.is_main():
        checkpoints.write(state)
    distributed.barrier()
