"""A shipped paper recipe at its real size with random weights: where the time, the GPU memory and the disk go.

Runs ``vipkit compress`` (the real CLI, one process or ``torchrun`` over several GPUs) on a recipe as shipped,
with only the model sources swapped for the families' and rewards' ``preset = "random"`` (the real
architectures, random weights, nothing downloaded). A 10-minute GPU call cannot hold a whole paper run, so
``--train-prompts`` / ``--eval-prompts`` / ``--stages`` take the first prompts and stages only; everything else
(resolution, frames, steps, batch, losses, kernels) stays as shipped. From the run's per-phase seconds
(``results.json``) a one-GPU run projects the whole recipe on 1, 2 and 8 GPUs (the model is in ``project``).

    python benchmarks/full_size_run.py --recipe recipes/animatediff_vip.toml --out OUT --eval-prompts 2 --train-prompts 4 --stages 1
    python benchmarks/full_size_run.py --recipe recipes/animatediff_vip.toml --out OUT --gpus 2 ...   # torchrun, 2 processes
    python benchmarks/full_size_run.py --recipe recipes/tiny_vip.toml --out /tmp/x --no-random        # CPU check of the script

Writes the run folder (``--run-dir``, default OUT/run), OUT/log.txt and OUT/full_size.json (phases, peaks, disk, projection) and prints
one JSON line per finding.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]  # runs from a checkout without installing vipkit

from vipkit.recipe import load_recipe  # noqa: E402

RANDOM_SOURCES = ["model.preset=random", "reward.preset=random"]


def emit(record: dict[str, Any], out: Path, found: dict[str, Any]) -> None:
    found.update(record)
    print(json.dumps(record), flush=True)
    (out / "full_size.json").write_text(json.dumps(found, indent=1))


def truncated_prompts(
    recipe_path: Path, out: Path, train: int | None, evaluate: int | None, overrides: list[str]
) -> list[str]:
    """Overrides giving the recipe its first ``train`` / ``eval`` prompts, in the form the recipe uses (a list or a
    file: a file of the first prompts, by absolute path)."""
    recipe = load_recipe(recipe_path, overrides=overrides)
    written = tomllib.loads(recipe_path.read_text(encoding="utf-8")).get("prompts", {})
    extra = []
    for kind, prompts, count in (("train", recipe.prompts_train, train), ("eval", recipe.prompts_eval, evaluate)):
        if count is None:
            continue
        if f"{kind}_file" in written:
            path = (out / f"prompts-{kind}.txt").resolve()
            path.write_text("\n".join(prompts[:count]) + "\n")
            extra.append(f"prompts.{kind}_file={json.dumps(str(path))}")
        else:
            extra.append(f"prompts.{kind}={json.dumps(prompts[:count])}")
    return extra


class GpuMemory:
    """Peak memory used on each GPU (nvidia-smi, every 0.5 s): what the whole process tree really holds."""

    def __init__(self) -> None:
        self.peak_mib: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> GpuMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                text = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout
            except (OSError, subprocess.TimeoutExpired):
                return  # no NVIDIA GPU: nothing to watch
            used = [int(line) for line in text.split() if line.strip().isdigit()]
            self.peak_mib = [max(a, b) for a, b in zip(self.peak_mib, used, strict=True)] if self.peak_mib else used
            self._stop.wait(0.5)


def disk_use(run: Path) -> dict[str, float]:
    """MiB per part of the run folder."""

    def size(path: Path) -> float:
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0

    stages = run / "stages"
    return {
        "teacher cache": size(run / "cache" / "teacher"),
        "score cache": size(run / "cache" / "scores"),
        "pairs": sum(size(p) for p in stages.glob("*.pairs")) if stages.exists() else 0.0,
        "stage models": sum(size(p) for p in stages.glob("stage-???")) if stages.exists() else 0.0,
        "training checkpoints": size(run / "checkpoints"),
        "final model": size(run / "model"),
        "total": size(run),
    }


def project(
    results: dict[str, Any], recipe: Any, measured: dict[str, int], gpus: int, candidates: int | None = None
) -> dict[str, float]:
    """Seconds of the whole shipped recipe on ``gpus`` GPUs, scaled from the measured run phase by phase.

    Each phase is scaled by what drives it: teacher videos by the evaluation + training videos; importance
    scoring by (candidates + 1) × probe videos per stage, the candidates shrinking by the measured removals
    per stage; pair curation by the training videos; training by the optimizer steps, assuming every
    training video becomes a pair (an upper bound); evaluation by the evaluation videos of its 2 × stages + 1
    summaries, plus each summary's latency timing (4 one-video calls, not split); loading once; saving per
    stage. Several GPUs split generation and scoring by video (the slowest GPU gets ceil(videos / gpus))
    and training by pair (a step of ``batch_size`` pairs keeps at most ``batch_size`` GPUs busy, assumed
    to scale perfectly); loading, saving and latency timing do not shrink. ``candidates``: the shipped recipe's
    stage-1 candidate count when the measured run ranked fewer block kinds (default: the measured count); each
    candidate is assumed to cost the measured mean.
    """
    stages = results["stages"]
    sec = results["seconds"]
    full_stages = recipe.schedule.stages
    train_videos = len(recipe.prompts_train) * recipe.videos_per_prompt
    eval_videos = len(recipe.prompts_eval)
    probe_videos = len(recipe.prompts_probe) or eval_videos
    split = lambda videos: math.ceil(videos / gpus) / videos  # noqa: E731 - the slowest GPU's share

    candidates = candidates or len(stages[0]["importance"])
    removed_per_stage = max(1.0, sum(len(stage["removed_blocks"]) for stage in stages) / len(stages))
    measured_evals = sum((len(stage["importance"]) + 1) * measured["probe"] for stage in stages)
    full_evals = sum((max(candidates - s * removed_per_stage, 1) + 1) * probe_videos for s in range(full_stages))
    steps_measured = sum(stage["train"]["steps"] for stage in stages) or 1
    steps_full = full_stages * recipe.train.epochs * math.ceil(train_videos / recipe.train.batch_size)
    latencies = [
        results["teacher"]["seconds_per_video"],
        *(stage[k]["seconds_per_video"] for stage in stages for k in ("pruned", "distilled")),
    ]
    timing = 4 * sum(latencies)  # each summary times 4 one-video calls (a warm-up and the fastest of 3)
    per_summary_video = (sec.get("evaluation", 0.0) - timing) / (measured["eval"] * len(latencies))
    return {
        "load": sec.get("load", 0.0),
        "teacher videos": sec.get("teacher videos", 0.0)
        / (measured["eval"] + measured["train"])
        * (eval_videos + train_videos)
        * split(eval_videos + train_videos),
        "importance scoring": sec.get("importance scoring", 0.0) / measured_evals * full_evals * split(probe_videos),
        "pair curation": sec.get("pair curation", 0.0)
        / (measured["train"] * len(stages))
        * train_videos
        * full_stages
        * split(train_videos),
        "training": sec.get("training", 0.0) / steps_measured * steps_full / min(gpus, recipe.train.batch_size),
        "evaluation": timing / len(latencies) * (2 * full_stages + 1)
        + per_summary_video * eval_videos * (2 * full_stages + 1) * split(eval_videos),
        "saving": sec.get("saving", 0.0) / len(stages) * full_stages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for full_size.json and log.txt")
    parser.add_argument("--run-dir", type=Path, help="the run folder (default OUT/run; it holds GBs at full size)")
    parser.add_argument("--gpus", type=int, default=1, help="processes (torchrun) when > 1")
    parser.add_argument("--train-prompts", type=int, help="use the recipe's first N training prompts")
    parser.add_argument("--eval-prompts", type=int, help="use the recipe's first N evaluation prompts")
    parser.add_argument("--stages", type=int, help="run the first K stages")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="more vipkit --set overrides")
    parser.add_argument(
        "--candidates",
        type=int,
        help="the shipped recipe's block candidates, for the projection, when --set schedule.block_kinds=... ranks "
        "fewer (the dry run prints the count: 'N prunable blocks')",
    )
    parser.add_argument(
        "--no-random", action="store_true", help="keep the recipe's model sources (a tiny recipe for a CPU check)"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = args.run_dir or args.out / "run"
    found: dict[str, Any] = {"recipe": str(args.recipe), "gpus": args.gpus, "date": time.strftime("%Y-%m-%d")}

    overrides = ([] if args.no_random else list(RANDOM_SOURCES)) + args.extra
    shipped = load_recipe(args.recipe, overrides=list(overrides))
    overrides += truncated_prompts(args.recipe, args.out, args.train_prompts, args.eval_prompts, overrides)
    target = getattr(shipped.pruner.config, "target_fraction", None)
    if args.stages is not None:
        overrides.append(f"schedule.stages={args.stages}")
        if target is not None:  # a budget over the whole schedule: the first K stages of S remove K/S of it
            overrides.append(f"pruner.target_fraction={target * args.stages / shipped.schedule.stages!r}")
    measured_recipe = load_recipe(args.recipe, overrides=overrides)
    measured = {
        "eval": len(measured_recipe.prompts_eval),
        "train": len(measured_recipe.prompts_train) * measured_recipe.videos_per_prompt,
        "probe": len(measured_recipe.prompts_probe) or len(measured_recipe.prompts_eval),
    }
    launcher = (
        [sys.executable, "-m", "vipkit"]
        if args.gpus == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(args.gpus),
            "-m",
            "vipkit",
        ]
    )
    command = [
        *launcher,
        "compress",
        "--recipe",
        str(args.recipe),
        "--out",
        str(run_dir),
        *(x for o in overrides for x in ("--set", o)),
    ]
    emit({"command": " ".join(command), "measured_videos": measured}, args.out, found)

    started = time.perf_counter()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")]),
    }
    with GpuMemory() as memory, open(args.out / "log.txt", "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for line in process.stdout:
            print(line, end="", flush=True)
            log.write(line)
            log.flush()  # a killed call still brings the log back
        code = process.wait()
    emit(
        {
            "exit_code": code,
            "wall_s": round(time.perf_counter() - started, 1),
            "gpu_peak_mib_nvidia_smi": memory.peak_mib,
        },
        args.out,
        found,
    )
    if code != 0:
        sys.exit(code)

    results = json.loads((run_dir / "results.json").read_text())
    emit(
        {
            "seconds_by_phase": {k: round(v, 1) for k, v in results["seconds"].items()},
            "seconds_by_stage": [{k: round(v, 1) for k, v in stage["seconds"].items()} for stage in results["stages"]],
            "peak_gpu_gib_by_phase": {k: round(v, 2) for k, v in results["peak_gpu_gib"].items()},
            "teacher_s_per_video": round(results["teacher"]["seconds_per_video"], 3),
            "final_s_per_video": round(results["stages"][-1]["distilled"]["seconds_per_video"], 3),
            "parameters": [results["teacher"]["parameters"], results["final"]["parameters"]],
            "disk_mib": {k: round(v, 1) for k, v in disk_use(run_dir).items()},
        },
        args.out,
        found,
    )
    if args.gpus == 1:  # the projection scales one GPU's phase times
        projections = {}
        for gpus in (1, 2, 8):
            phases = project(results, shipped, measured, gpus, args.candidates)
            projections[f"{gpus}_gpu"] = {
                "hours": round(sum(phases.values()) / 3600, 2),
                "seconds_by_phase": {k: round(v) for k, v in phases.items()},
            }
        emit({"projected_whole_recipe": projections}, args.out, found)


if __name__ == "__main__":
    main()
