"""The V.I.P. loop: prune → find degraded dimensions → preference pairs → distil → checkpoint, per stage.

Every decision lives in a component; this module only wires them together and keeps the run directory
resumable: a stage's pairs are stored before its training, training writes checkpoints as it goes,
and a stage counts as finished once its folder (model + stage.json) has been renamed into place.

Under ``torchrun``/``accelerate launch`` every rank runs this same loop: generation and scoring are
split over the ranks (``vipkit.sharded``) and gathered, so every rank takes the same decisions;
only the main process writes files, the others wait at barriers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vipkit import distributed, sharded
from vipkit.atomic import staged_directory, write_json
from vipkit.checkpoint import CheckpointStore
from vipkit.errors import VipkitError
from vipkit.export import write_model_card
from vipkit.failures import advice, describe
from vipkit.faults import fault_point
from vipkit.generation_cache import GenerationCache
from vipkit.interfaces import (
    Block,
    BlockImportance,
    CandidateVideos,
    Generation,
    ImportanceScorer,
    Objective,
    PairCurator,
    Plan,
    Pruner,
    RewardModel,
    Scores,
    VideoModel,
    mean_scores,
)
from vipkit.measure import denoiser_flops
from vipkit.media import save_samples
from vipkit.pair_store import load_pairs, save_pairs
from vipkit.plugins import Plugins, load_plugins
from vipkit.preflight import check_plan
from vipkit.provenance import run_provenance
from vipkit.recipe import Recipe
from vipkit.report import write_report
from vipkit.reward_stack import reward_stack
from vipkit.run_lock import FolderLock
from vipkit.rundir import RunDirectory
from vipkit.saved_model import load_saved_model, save_model
from vipkit.score_cache import cache_summary
from vipkit.seeds import stage_seed, video_seeds
from vipkit.timing import PhaseTimes, add_phases, max_phases, seconds_per_video
from vipkit.training import WeightedLoss, describe_split, train_on_pairs
from vipkit.weights import file_sha256

Log = Callable[[str], None]
SAMPLE_VIDEOS = 4  # evaluation videos shown side by side in each sample (GIF and MP4)


@dataclass
class BuiltRecipe:
    """The recipe's components, built, and the plan they were checked against."""

    teacher: VideoModel
    reward: RewardModel
    scorer: ImportanceScorer
    pruner: Pruner
    curator: PairCurator
    losses: list[WeightedLoss]
    heldout_reward: RewardModel | None = None  # scored on the held-out videos only: never ranked or curated on
    plan: Plan | None = None  # set by ``prepare`` once the recipe checks out against the parts

    @classmethod
    def build(cls, recipe: Recipe, plugins: Plugins) -> BuiltRecipe:
        """Build every component, each combined reward's part on its own; their errors (a missing model each) come
        as one error, so a recipe that lacks several models says so at once, not one failed attempt at a time."""
        from vipkit.combined_reward import CombinedReward
        from vipkit.recipe import CombinedRewardSpec, ComponentSpec

        errors: list[str] = []

        def built(spec: ComponentSpec) -> Any:
            try:
                return spec.build(plugins)
            except VipkitError as exc:
                errors.append(str(exc))
                return None

        def reward_parts(spec: ComponentSpec | CombinedRewardSpec) -> dict[str, Any]:
            """A reward's parts by alias, each built on its own; a single ``[reward]`` is the one part ``""``."""
            combined = spec.parts if isinstance(spec, CombinedRewardSpec) else {"": spec}
            return {alias: built(part) for alias, part in combined.items()}

        def reward(parts: dict[str, RewardModel]) -> RewardModel:
            return parts[""] if "" in parts else CombinedReward(parts)

        teacher = built(recipe.model)
        rewards = reward_parts(recipe.reward)
        heldout = reward_parts(recipe.heldout_reward) if recipe.heldout_reward is not None else None
        scorer, pruner, curator = (built(spec) for spec in (recipe.scorer, recipe.pruner, recipe.curator))
        losses = [WeightedLoss(spec.weight, built(spec)) for spec in recipe.losses]
        if len(errors) == 1:
            raise VipkitError(errors[0])
        if errors:
            raise VipkitError(f"{len(errors)} components could not be built:\n" + "\n".join(f"  - {e}" for e in errors))
        return cls(
            teacher=teacher,
            reward=reward(rewards),
            scorer=scorer,
            pruner=pruner,
            curator=curator,
            losses=losses,
            heldout_reward=reward(heldout) if heldout is not None else None,
        )


class Compression:
    """One run of a recipe into a run directory."""

    def __init__(self, recipe: Recipe, run: RunDirectory, parts: BuiltRecipe, log: Log, times: PhaseTimes) -> None:
        self.recipe = recipe
        self.run = run
        self.parts = parts
        self.log = log
        self.times = times  # the run's own phases (load, the teacher's videos, the final save); stages keep theirs
        self.objective = Objective(dict(recipe.objective.weights))
        self.eval_prompts = recipe.prompts_eval
        self.eval_seeds = video_seeds(recipe.seed, "eval", len(self.eval_prompts))
        # without probe prompts: the evaluation prompts, this very list (``probe`` reuses the evaluation videos)
        self.probe_prompts, self.probe_seeds = recipe.probe_videos()
        k = recipe.videos_per_prompt
        self.train_prompts = [p for p in recipe.prompts_train for _ in range(k)]
        self.train_seeds = video_seeds(recipe.seed, "train", len(self.train_prompts))
        self.heldout_prompts = recipe.prompts_heldout  # never trained, probed or evaluated on: only reported
        self.heldout_seeds = video_seeds(recipe.seed, "heldout", len(self.heldout_prompts))
        self.teacher_cache = GenerationCache(run.teacher_cache, recipe.model.dump())
        self._teacher_eval: tuple[Generation, Scores] | None = None
        self._weights = "teacher"  # whose weights the student has: the teacher's until a stage trains it
        self._latest_eval: tuple[tuple[str, frozenset[str]], Generation] | None = None
        self._trained = False  # whether a stage so far took a training step (what a saved model records)

    # -- evaluation ---------------------------------------------------------------------------
    def _state(self, model: VideoModel) -> tuple[str, frozenset[str], int]:
        """What a model's videos depend on besides prompt and seed: its weights, its removed blocks and its size (which
        width pruning changes without removing a block)."""
        return self._weights, frozenset(model.removed_blocks), model.num_parameters()

    def eval_videos(self, model: VideoModel) -> Generation:
        """The evaluation videos of ``model``; the run's latest ones when the model has not changed since (the
        teacher's at the start of stage 1, the distilled student's at the start of the next stage)."""
        if self._latest_eval is not None and self._latest_eval[0] == self._state(model):
            return self._latest_eval[1]
        videos = sharded.generate(model, self.eval_prompts, self.eval_seeds)
        self._latest_eval = (self._state(model), videos)
        return videos

    def teacher_eval(self) -> tuple[Generation, Scores]:
        if self._teacher_eval is None:
            with self.times.phase("teacher videos"):
                videos = self.teacher_cache.generate(self.parts.teacher, self.eval_prompts, self.eval_seeds)
            self._latest_eval = (self._state(self.parts.teacher), videos)
            with self.times.phase("evaluation"):
                self._teacher_eval = (videos, sharded.score(self.parts.reward, videos.videos, self.eval_prompts))
        return self._teacher_eval

    def probe(self, model: VideoModel) -> Scores:
        """The scorer's ``Evaluate``: generate the probe prompts (or the evaluation ones) and score them, split over the ranks."""
        if self.probe_prompts is self.eval_prompts:
            videos = self.eval_videos(model)
        else:
            videos = sharded.generate(model, self.probe_prompts, self.probe_seeds)
        return sharded.score(self.parts.reward, videos.videos, self.probe_prompts)

    def save_samples(self, videos: Any, name: str) -> None:
        """``samples/NAME.gif`` and ``.mp4``, the first videos side by side; without ffmpeg only the GIF."""
        if distributed.is_main():
            save_samples(videos[:SAMPLE_VIDEOS], self.run.samples / name, warn=self.log)

    def heldout(self, label: str, videos: Generation) -> dict[str, Any]:
        """The held-out prompts' ``videos`` scored: the run's reward and objective, and the held-out reward (if any)
        under ``reward``. Nothing here reaches the scorer or the curator."""
        scores = sharded.score(self.parts.reward, videos.videos, self.heldout_prompts)
        entry = {"scores": mean_scores(scores), "objective": self.objective(scores)}
        if self.parts.heldout_reward is not None:
            entry["reward"] = mean_scores(sharded.score(self.parts.heldout_reward, videos.videos, self.heldout_prompts))
        self.log(
            f"{label}, held out: objective {entry['objective']:.4f} · "
            + " · ".join(f"{k} {v:.4f}" for k, v in (entry["scores"] | entry.get("reward", {})).items())
        )
        return entry

    def summary(self, model: VideoModel, label: str, sample_name: str) -> dict[str, Any]:
        """Scores, objective, size and latency of ``model`` on the evaluation prompts, plus a sample (GIF and MP4);
        with held-out prompts, its scores on those too (``heldout``)."""
        videos = self.eval_videos(model)
        scores = sharded.score(self.parts.reward, videos.videos, self.eval_prompts)
        self.save_samples(videos.videos, sample_name)
        means = mean_scores(scores)
        self.log(
            f"{label}: objective {self.objective(scores):.4f} · " + " · ".join(f"{k} {v:.4f}" for k, v in means.items())
        )
        summary = {
            "parameters": model.num_parameters(),
            "scores": means,
            "objective": self.objective(scores),
            "seconds_per_video": seconds_per_video(model, self.eval_prompts[0], self.eval_seeds[0]),
            "denoiser_flops": denoiser_flops(model, videos.latents[:1]),
        }
        if self.heldout_prompts:
            heldout_videos = sharded.generate(model, self.heldout_prompts, self.heldout_seeds)
            summary["heldout"] = self.heldout(label, heldout_videos)
        return summary

    # -- one stage ----------------------------------------------------------------------------
    def prune_and_curate(self, student: VideoModel, stage: int) -> dict[str, Any]:
        """Rank, prune, find degraded dimensions, build pairs; stored before any training."""
        pruner = self.parts.pruner
        times = PhaseTimes()
        with times.phase("importance scoring"):
            pruner.begin_stage(self.parts.plan, stage)
            ranking = self.rank(student, stage) if pruner.uses_ranking else []
            params_before = student.num_parameters()
            removed = pruner.apply(student, ranking)
        self.log(
            f"stage {stage}: {pruner.name} made {len(removed)} pruning decision(s) (prune.json lists them), "
            f"{params_before:,} → {student.num_parameters():,} parameters"
        )
        with times.phase("evaluation"):
            pruned = self.summary(student, f"stage {stage} pruned", f"stage-{stage:03d}-pruned")
        with times.phase("teacher videos"):
            teacher_train = self.teacher_cache.generate(self.parts.teacher, self.train_prompts, self.train_seeds)
        with times.phase("pair curation"):
            student_train = sharded.generate(student, self.train_prompts, self.train_seeds)
            candidates_videos = CandidateVideos(
                prompts=self.train_prompts,
                seeds=self.train_seeds,
                teacher=teacher_train,
                student=student_train,
                teacher_scores=sharded.score(self.parts.reward, teacher_train.videos, self.train_prompts),
                student_scores=sharded.score(self.parts.reward, student_train.videos, self.train_prompts),
            )
            fault_point("curate")
            pairs = self.parts.curator.build(candidates_videos)
        self.log(f"stage {stage}: degraded {pairs.target_dimensions or 'nothing'}; {len(pairs)} preference pairs")
        record = {
            "stage": stage,
            "removed_blocks": removed,
            "importance": [
                {
                    "block": item.block.name,
                    "kind": item.block.kind,
                    "params": item.block.params,
                    "importance": item.importance,
                }
                for item in ranking
            ],
            "parameters_before": params_before,
            "pruned": pruned,
            "degraded_dimensions": pairs.target_dimensions,
            "pairs": len(pairs),
        }
        if distributed.is_main():
            with times.phase("saving"), staged_directory(self.run.pairs_dir(stage)) as staging:
                save_pairs(pairs, staging)
                write_json(staging / "prune.json", record | _phases(times))
        distributed.barrier()  # the other ranks read the pairs back from disk
        return record | _phases(times)

    def rank(self, student: VideoModel, stage: int) -> list[BlockImportance]:
        """The scorer's ranking of the stage's candidate blocks."""
        kinds = self.recipe.schedule.block_kinds
        candidates = student.blocks_of(kinds)
        if not candidates:
            raise VipkitError(
                f"stage {stage}: no block of the kinds {sorted(kinds)} is left to prune (schedule.block_kinds); "
                f"the model has: {sorted({b.kind for b in student.blocks()}) or 'no prunable blocks'}"
            )
        if stage > 1 and self.recipe.schedule.ranking == "once":
            return self.first_ranking(candidates, stage)
        self.log(f"stage {stage}: ranking {len(candidates)} candidate blocks with {self.parts.scorer.name}")
        return self.parts.scorer.rank(student, candidates, self.probe, self.objective)

    def first_ranking(self, candidates: list[Block], stage: int) -> list[BlockImportance]:
        """schedule.ranking = "once": stage 1's ranking of the teacher (its prune.json), for the blocks still present."""
        stored = json.loads((self.run.pairs_dir(1) / "prune.json").read_text(encoding="utf-8"))["importance"]
        importance = {item["block"]: item["importance"] for item in stored}
        self.log(f'stage {stage}: walking on along stage 1\'s ranking of the teacher (schedule.ranking = "once")')
        ranking = [BlockImportance(block, importance[block.name]) for block in candidates if block.name in importance]
        return sorted(ranking, key=lambda item: item.importance)

    def distil(self, student: VideoModel, stage: int, record: dict[str, Any]) -> dict[str, Any]:
        times = PhaseTimes()
        pairs_dir = self.run.pairs_dir(stage)
        pairs = load_pairs(pairs_dir)
        if len(pairs) == 0 or self.recipe.train.epochs == 0:
            self.log(f"stage {stage}: no training ({'no pairs' if len(pairs) == 0 else 'epochs = 0'})")
            record["train"] = {"steps": 0, "first_loss": None, "last_loss": None}
        else:
            with times.phase("training"):
                record["train"] = train_on_pairs(
                    student,
                    self.parts.teacher,
                    pairs,
                    self.parts.losses,
                    self.recipe.train,
                    seed=stage_seed(self.recipe.seed, stage),
                    log=lambda metrics: self.run.log_metrics({"stage": stage, **metrics}),
                    stage=stage,
                    checkpoints=CheckpointStore(self.run.checkpoints, self.recipe.train.keep_checkpoints),
                    pairs_hash=file_sha256(pairs_dir / "pairs.safetensors")[:32]
                    + file_sha256(pairs_dir / "pairs.json")[:32],
                    run_dir=self.run.root,
                )
            self._weights = f"stage {stage}"
            self._trained = self._trained or record["train"]["steps"] > 0
            resumed = record["train"]["resumed_at_step"]
            self.log(
                f"stage {stage}: trained {record['train']['steps']} steps"
                + (f" (resumed from the checkpoint at step {resumed})" if resumed else "")
                + f", loss {record['train']['first_loss']:.4g} → {record['train']['last_loss']:.4g}"
            )
        with times.phase("evaluation"):
            record["distilled"] = self.summary(student, f"stage {stage} distilled", f"stage-{stage:03d}-distilled")
        if distributed.is_main():
            with staged_directory(self.run.stage_dir(stage)) as staging:
                with times.phase("saving"):
                    save_model(student, staging / "model", self.provenance())
                write_json(staging / "stage.json", record | _phases(times, record))
        distributed.barrier()
        return record | _phases(times, record)

    def stage(self, student: VideoModel, stage: int) -> dict[str, Any]:
        """One whole stage; within it, stored pruning decisions and pairs are reused."""
        pairs_dir = self.run.pairs_dir(stage)
        if (pairs_dir / "prune.json").exists():
            record = json.loads((pairs_dir / "prune.json").read_text(encoding="utf-8"))
            self.log(f"stage {stage}: reusing the stored pruning decision and {record['pairs']} pairs")
            self.parts.pruner.begin_stage(self.parts.plan, stage)
            self.parts.pruner.replay(student, record["removed_blocks"])
        else:
            record = self.prune_and_curate(student, stage)
        return self.distil(student, stage, record)

    def kept(self, stage: int) -> str:
        """What a failure in ``stage`` leaves in the run folder, for the error message."""
        finished = f"stages 1-{stage - 1}" if stage > 2 else ("stage 1" if stage == 2 else "no finished stage")
        pairs = (
            f" and stage {stage}'s pruning decision and pairs"
            if (self.run.pairs_dir(stage) / "prune.json").exists()
            else ""
        )
        return f"Kept in {self.run.root}: {finished}{pairs}."

    def provenance(self) -> dict[str, Any]:
        """What the student's saved manifest records of its making (``vipkit.provenance``)."""
        return run_provenance(self.recipe, self.parts.teacher, self._trained)

    # -- the run ------------------------------------------------------------------------------
    def resume_point(self) -> tuple[VideoModel, list[dict[str, Any]]]:
        if distributed.is_main():
            self.run.discard_unfinished()
        distributed.barrier()
        finished = self.run.finished_stages()
        if not finished:
            return self.parts.teacher.copy(), []
        last = len(finished)
        self.log(f"resuming after stage {last} (from {self.run.stage_dir(last)})")
        self._weights = f"stage {last}"
        self._trained = any(record["train"]["steps"] > 0 for record in finished)
        try:
            with self.times.phase("load"):
                return load_saved_model(self.run.stage_dir(last) / "model"), finished
        except VipkitError as exc:
            origin = f"stage {last - 1}'s checkpoint" if last > 1 else "the teacher"
            raise VipkitError(
                f"cannot resume: the checkpoint of stage {last} is damaged: {str(exc).rstrip('.')}. Nothing was changed. To redo "
                f"stage {last} from {origin}, delete the folder {self.run.stage_dir(last)} and run the same command "
                "again (the stage's stored pairs are reused); or start over in another --out folder."
            ) from exc

    def run_all(self) -> dict[str, Any]:
        student, stages = self.resume_point()
        teacher_videos, teacher_scores = self.teacher_eval()
        with self.times.phase("evaluation"):
            teacher = {
                "parameters": self.parts.teacher.num_parameters(),
                "scores": mean_scores(teacher_scores),
                "objective": self.objective(teacher_scores),
                "seconds_per_video": seconds_per_video(self.parts.teacher, self.eval_prompts[0], self.eval_seeds[0]),
                "denoiser_flops": denoiser_flops(self.parts.teacher, teacher_videos.latents[:1]),
            }
            self.save_samples(teacher_videos.videos, "teacher")
        if self.heldout_prompts:  # the teacher's held-out videos are cached like its others: a resume renders none
            with self.times.phase("teacher videos"):
                videos = self.teacher_cache.generate(self.parts.teacher, self.heldout_prompts, self.heldout_seeds)
            with self.times.phase("evaluation"):
                teacher["heldout"] = self.heldout("teacher", videos)
        for stage in range(len(stages) + 1, self.recipe.schedule.stages + 1):
            try:
                stages.append(self.stage(student, stage))
            except FloatingPointError as exc:
                raise VipkitError(
                    f"stage {stage}: training diverged: {exc}. Lower train.learning_rate (now {self.recipe.train.learning_rate:g}) "
                    f"or the loss weights; a run folder resumes only the recipe that started it, so run the changed recipe "
                    f"with a new --out. {self.kept(stage)}"
                ) from exc
            except VipkitError as exc:
                raise VipkitError(
                    f"stage {stage}: {str(exc).rstrip('.')}. {self.kept(stage)} Fix the cause and run the same command again to resume."
                ) from exc
        if distributed.is_main():
            with self.times.phase("saving"):
                save_model(student, self.run.final_model, self.provenance())
        final = stages[-1]["distilled"] if stages else teacher
        results = {
            "recipe": self.recipe.source,
            "fingerprint": self.recipe.fingerprint(),
            "seed": self.recipe.seed,
            **({"heldout_prompts": len(self.heldout_prompts)} if self.heldout_prompts else {}),
            "teacher": teacher,
            "stages": stages,
            "final": {
                "parameters": student.num_parameters(),
                "parameter_ratio": student.num_parameters() / teacher["parameters"],
                "removed_blocks": student.removed_blocks,
                "scores": final["scores"],
                **({"heldout": final["heldout"]} if "heldout" in final else {}),
                "speedup": teacher["seconds_per_video"] / final["seconds_per_video"],
                "model": str(self.run.final_model),
            },
            # seconds per phase: this process's loading, teacher videos and final save, plus every stage's own
            # (stages finished before a resume keep the times they took then)
            "run_seconds": self.times.seconds,
            "seconds": add_phases(self.times.seconds, *(stage["seconds"] for stage in stages)),
            "peak_gpu_gib": max_phases(self.times.peak_gpu_gib, *(stage["peak_gpu_gib"] for stage in stages)),
        }
        if distributed.is_main():
            write_json(self.run.root / "results.json", results)
            write_report(results, self.run.root / "report.md")
            write_model_card(student, self.run.final_model)
        distributed.barrier()
        return results


def compress(recipe: Recipe, recipe_text: str, out: Path, log: Log) -> dict[str, Any]:
    """Run (or resume) ``recipe`` into ``out``; returns what ``results.json`` holds.

    On several processes every rank calls this; only the main process logs and writes.
    """
    plugins = load_plugins()
    if not distributed.is_main():
        log = _quiet
    world = distributed.world_size()
    if world > 1:
        log(
            f"running on {world} processes: videos and scores are split over them; training: "
            + describe_split(recipe.train.batch_size, recipe.train.gradient_accumulation_steps, world)
        )
    # the folder first, before minutes of building models: a wrong --out or a busy one fails at once; the main
    # process holds the run folder's lock until the run ends (vipkit.run_lock)
    lock, problem = None, None
    if distributed.is_main():
        try:
            RunDirectory.check(out, recipe)
            lock = FolderLock.acquire(out)
            RunDirectory.check(out, recipe)  # again, holding the lock: another process may have started it meanwhile
        except VipkitError as exc:
            problem = str(exc)
        except OSError as exc:
            problem = f"cannot use {out} as the run folder: {describe(exc)}; {advice(exc)}. Nothing was written."
        if problem is not None and lock is not None:
            lock.release()
    problem = distributed.broadcast(problem)
    if problem is not None:
        raise VipkitError(problem)
    try:
        times = PhaseTimes()
        with times.phase("load"):
            parts = prepare(recipe, plugins, log)
        run, problem = RunDirectory(out), None
        if distributed.is_main():
            try:
                run = RunDirectory.open(out, recipe, recipe_text, plugins)
            except VipkitError as exc:
                problem = str(exc)
        problem = distributed.broadcast(problem)
        if problem is not None:
            raise VipkitError(problem)
        # cached per run folder (a resume rescores nothing), each call limited to reward_timeout_s
        parts.reward = reward_stack(parts.reward, plugins, run.score_cache, recipe.reward_timeout_s)
        if parts.heldout_reward is not None:
            parts.heldout_reward = reward_stack(parts.heldout_reward, plugins, run.score_cache, recipe.reward_timeout_s)
        results = Compression(recipe, run, parts, log, times).run_all()
        log(f"rewards: {cache_summary(parts.reward)}")
        return results
    finally:
        if lock is not None:
            lock.release()


def prepare(recipe: Recipe, plugins: Plugins, log: Log) -> BuiltRecipe:
    """Build the components and check the plan against them (``compress --dry-run`` stops here); writes nothing."""
    log(
        f"building components ({recipe.model.name}, {recipe.reward.name}, {recipe.scorer.name}, {recipe.pruner.name}, {recipe.curator.name}, {', '.join(loss.name for loss in recipe.losses)})"
    )
    parts = BuiltRecipe.build(recipe, plugins)
    parts.plan = check_plan(recipe, parts)
    for stage in range(1, recipe.schedule.stages + 1):
        log(f"stage {stage} prunes: {parts.pruner.describe_stage(parts.plan, stage)}")
    return parts


def _phases(times: PhaseTimes, before: dict[str, Any] | None = None) -> dict[str, Any]:
    """A stage's phase times and peak GPU memory, added to those of its earlier part (``before``: the stored pruning)."""
    before = before or {}
    return {
        "seconds": add_phases(before.get("seconds", {}), times.seconds),
        "peak_gpu_gib": max_phases(before.get("peak_gpu_gib", {}), times.peak_gpu_gib),
    }


def _quiet(line: str) -> None:
    """The log of the non-main ranks: the main process speaks for the run."""
