"""Diffusion-transformer families at full size (random weights): what removing 25 % and 50 % of the blocks buys.

For each family (`wan`: Wan 2.1 T2V 1.3B, `cogvideox`: CogVideoX-2b by default) the `random` preset is built on
the GPU in bf16; then, in the same process and on the same prompt and seed, the unpruned model and copies without
25 % and 50 % of their transformer blocks (evenly spaced, the first and last kept) are measured:

- parameters of the transformer and FLOPs of one denoiser call (torch's FlopCounterMode, no guidance batch);
- seconds per denoising step and per video: a whole `generate` (one video, the pipeline's resolution and frames,
  classifier-free guidance) timed at 2 and at 6 steps after a warm-up call; a step is the difference / 4, and a
  video at the preset's own step count is the 2-step time plus the remaining steps (text encoding, VAE decoding
  and everything else included once);
- a ReDPO training step of vipkit's trainer (`train_on_pairs`, the real `redpo` loss, float32 master weights,
  gradient checkpointing, 1 pair per step) on the 50 %-pruned student against the unpruned teacher: pairs/s and
  peak GPU memory.

    python benchmarks/gpu_dit.py --out OUT [--families wan,cogvideox] [--train-steps 3]
    python benchmarks/gpu_dit.py --out /tmp/dit --tiny          # the same code on the tiny presets, CPU

One JSON line per finding, also appended to OUT/dit.jsonl.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]  # runs from a checkout without installing vipkit

import torch  # noqa: E402

import vipkit  # noqa: E402
from vipkit.measure import denoiser_flops  # noqa: E402
from vipkit.plugins import load_plugins  # noqa: E402
from vipkit.recipe import TrainSection  # noqa: E402
from vipkit.training import WeightedLoss, train_on_pairs  # noqa: E402
from vipkit_losses import ReDPO  # noqa: E402

PROMPT = "a red fox running through fresh snow at sunrise"
SEED = 7
SHARES = (0.0, 0.25, 0.5)


def emit(record: dict[str, Any], out: Path) -> None:
    print(json.dumps(record), flush=True)
    with open(out / "dit.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def evenly_spaced(names: list[str], share: float) -> list[str]:
    """``share`` of ``names``, spread over the depth, never the first or the last block."""
    count = round(share * len(names))
    inner = names[1:-1]
    if count == 0:
        return []
    return (
        [inner[round(i * (len(inner) - 1) / max(count - 1, 1))] for i in range(count)]
        if count > 1
        else [inner[len(inner) // 2]]
    )


def timed_generate(model: Any, steps: int) -> tuple[float, Any]:
    model._settings["num_inference_steps"] = steps  # benchmark only: the same model at another step count
    sync()
    started = time.perf_counter()
    generation = model.generate([PROMPT], [SEED])
    sync()
    return time.perf_counter() - started, generation


def measure(model: Any, full_steps: int) -> dict[str, Any]:
    timed_generate(model, 2)  # warm-up: kernels, allocator
    two = statistics.median(timed_generate(model, 2)[0] for _ in range(2))
    six, generation = timed_generate(model, 6)
    step = (six - two) / 4
    model._settings["num_inference_steps"] = full_steps
    return {
        "parameters": model.num_parameters(),
        "flops_per_call": denoiser_flops(model, generation.latents[:1]),
        "seconds_per_step": round(step, 4),
        "seconds_per_video": round(two + (full_steps - 2) * step, 2),
        "latents": list(generation.latents.shape),
    }


def training_step(teacher: Any, student: Any, latents: torch.Tensor, steps: int) -> dict[str, Any]:
    count = steps + 2  # the first step and interval warm up
    noise = torch.Generator().manual_seed(0)
    pairs = vipkit.PairSet(
        prompts=[f"{PROMPT}, take {i}" for i in range(count)],
        seeds=list(range(count)),
        winner_latents=latents.expand(count, *latents.shape[1:]).clone(),
        loser_latents=latents.expand(count, *latents.shape[1:])
        + 0.1 * torch.randn(count, *latents.shape[1:], generator=noise),
        winner_videos=torch.zeros(count, 1),
        loser_videos=torch.zeros(count, 1),
        target_dimensions=["x"],
    )
    loss = WeightedLoss(1.0, ReDPO(ReDPO.Config(reference="teacher", sft_target="teacher")))
    train = TrainSection(epochs=1, batch_size=1, gradient_checkpointing=True, trainable="all")
    stamps: list[float] = []
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train_on_pairs(
        student, teacher, pairs, [loss], train, seed=0, log=lambda metrics: stamps.append(time.perf_counter())
    )
    seconds = statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:], strict=False))
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    return {
        "seconds_per_step": round(seconds, 3),
        "pairs_per_second": round(1 / seconds, 3),
        "peak_gpu_gib": round(peak, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--families", default="wan,cogvideox")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps (after 2 warm-up steps)")
    parser.add_argument("--tiny", action="store_true", help="tiny presets on the CPU (a check of this script)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    options = {"preset": "tiny"} if args.tiny else {"preset": "random", "device": "cuda", "dtype": "bfloat16"}
    registry = load_plugins().registry("models")
    for name in args.families.split(","):
        started = time.perf_counter()
        teacher = registry.get(name)(registry.get(name).Config(**options))
        full_steps = teacher.generation_settings["num_inference_steps"]
        blocks = [b.name for b in teacher.blocks_of(["transformer_block"])]
        emit(
            {
                "family": name,
                "built_s": round(time.perf_counter() - started, 1),
                "blocks": len(blocks),
                "settings": teacher.generation_settings,
            },
            args.out,
        )
        rows: dict[float, dict[str, Any]] = {}
        student = None
        for share in SHARES:
            student = teacher.copy() if share else teacher
            for block in evenly_spaced(blocks, share):
                student.remove_block(block)
            rows[share] = measure(student, full_steps)
            base = rows[0.0]
            emit(
                {
                    "family": name,
                    "removed_share": share,
                    "removed_blocks": len(student.removed_blocks),
                    **rows[share],
                    "step_speedup": round(base["seconds_per_step"] / rows[share]["seconds_per_step"], 3),
                    "video_speedup": round(base["seconds_per_video"] / rows[share]["seconds_per_video"], 3),
                    "flops_ratio": round(rows[share]["flops_per_call"] / base["flops_per_call"], 3),
                },
                args.out,
            )
            if share and share != SHARES[-1]:
                del student
                torch.cuda.empty_cache() if torch.cuda.is_available() else None
        latents = timed_generate(teacher, 2)[1].latents[:1]
        emit(
            {
                "family": name,
                "training": "redpo, 50 % of blocks removed, teacher unpruned",
                **training_step(teacher, student, latents, args.train_steps),
            },
            args.out,
        )
        del teacher, student
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
