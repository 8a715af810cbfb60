"""Seconds per UNet step before and after width pruning, against the FLOPs saving, at full AnimateDiff size (issue 20,
item 5; benchmarks/RESULTS.md §16).

The `animatediff` family's `random` preset (SD-1.5 UNet + motion adapter v1-5-2 built from their configs, random
weights, bf16; 512², 16 frames): one UNet step is one denoiser call on the guidance batch (2 × 16 frames of 64² latents),
timed with CUDA events (median of ``--steps`` after ``--warmup``), its FLOPs counted on the meta device
(``vipkit.measure.flops_by_module``). Rows, in one process on the same inputs:

- ``teacher``;
- ``depth``: motion modules removed (evenly spaced) until half of the motion-module parameters are gone;
- ``width-M``: the ``width`` pruner (magnitude importance, whole heads + feed-forward channels in groups of M, so
  every width stays a multiple of M: ``multiple_of``) to the same −50 % of the motion-module parameters, M = 8 (the
  default), 1 (any width) and 64;
- ``width-all-8``: the ``width`` pruner on every transformer block, spatial and temporal, to −30 % of their
  parameters (where the UNet's FLOPs are).

Each student's row gives its latency saving over its FLOPs saving against the teacher (goal ≥ 0.9).

    python benchmarks/gpu_width_speed.py --out OUT             # GPU, full size
    python benchmarks/gpu_width_speed.py --out /tmp/w --tiny   # the same code on the tiny preset, CPU

One JSON line per row, printed at once and appended to OUT/width_speed.jsonl.
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
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]  # runs from a checkout

import torch  # noqa: E402

from vipkit.interfaces import Plan, VideoModel  # noqa: E402
from vipkit.measure import flops_by_module  # noqa: E402
from vipkit_animatediff import AnimateDiff  # noqa: E402
from vipkit_width import WidthPruner  # noqa: E402

PROMPT = "a red fox running through fresh snow at sunrise"


def step_seconds(model: VideoModel, warmup: int, steps: int) -> float:
    """Median seconds of one denoiser call on the guidance batch (conditional + unconditional) of one video."""
    generator = torch.Generator().manual_seed(0)
    settings = model.generation_settings
    shape = (2, 4, settings["num_frames"], settings["height"] // 8, settings["width"] // 8)
    latents = torch.randn(shape, generator=generator).to(model.device, model.dtype)
    conditioning = model.encode_prompts([PROMPT, ""])
    timesteps = torch.tensor([500, 500], device=model.device)
    cuda = model.device.type == "cuda"
    times = []
    with torch.no_grad():
        for i in range(warmup + steps):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            began = time.perf_counter()
            model.predict_noise(latents, timesteps, conditioning)
            if cuda:
                end.record()
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(start.elapsed_time(end) / 1e3 if cuda else time.perf_counter() - began)
    return statistics.median(times)


def motion_parameters(model: VideoModel) -> int:
    return sum(block.params for block in model.blocks_of(("motion_module",)))


def depth(teacher: VideoModel) -> VideoModel:
    """Evenly spaced motion modules removed until half of the motion-module parameters are gone."""
    student, modules = teacher.copy(), teacher.blocks_of(("motion_module",))
    goal = motion_parameters(teacher) / 2
    order = sorted(range(len(modules)), key=lambda i: (i * 0.618) % 1)  # spread over the UNet
    for i in order:
        if motion_parameters(teacher) - motion_parameters(student) >= goal:
            break
        student.remove_block(modules[i].name)
    return student


def width(teacher: VideoModel, kinds: tuple[str, ...], fraction: float, multiple: int) -> VideoModel:
    pruner = WidthPruner(WidthPruner.Config(fraction=fraction, block_kinds=list(kinds), multiple_of=multiple))
    plan = Plan(teacher, None, 1, kinds, tuple(teacher.blocks_of(kinds)), (PROMPT,), (0,))
    student = teacher.copy()
    pruner.begin_stage(plan, 1)
    pruner.apply(student, [])
    return student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="the tiny preset on the CPU (checks the code)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = (
        {"preset": "tiny", "height": 16, "width": 16, "num_frames": 4}
        if args.tiny
        else {"preset": "random", "device": "cuda", "dtype": "bfloat16"}
    )
    began = time.perf_counter()
    teacher = AnimateDiff.from_options({**options, "num_inference_steps": 2})  # 2 steps: the calibration video
    print(f"built in {time.perf_counter() - began:.0f} s", flush=True)
    blocks = ("spatial_transformer_block", "temporal_transformer_block")
    rows: dict[str, Any] = {"teacher": lambda: teacher}
    rows["depth"] = lambda: depth(teacher)
    for multiple in (8, 1, 64):
        rows[f"width-{multiple}"] = lambda multiple=multiple: width(teacher, ("motion_module",), 0.5, multiple)
    rows["width-all-8"] = lambda: width(teacher, blocks, 0.3, 8)
    reference: dict[str, float] = {}
    for name, build in rows.items():
        began = time.perf_counter()
        model = build()
        pruned_s = time.perf_counter() - began
        flops = flops_by_module(model)[""]
        seconds = step_seconds(model, args.warmup, args.steps)
        row = {
            "row": name,
            "parameters": model.num_parameters(),
            "motion_parameters": motion_parameters(model),
            "flops_per_step": flops,
            "seconds_per_step": seconds,
            "pruning_s": round(pruned_s, 1),
            "device": torch.cuda.get_device_name() if model.device.type == "cuda" else "cpu",
        }
        if name == "teacher":
            reference = {"flops": flops, "seconds": seconds, "motion": motion_parameters(model)}
        else:
            flops_saving, time_saving = 1 - flops / reference["flops"], 1 - seconds / reference["seconds"]
            row |= {
                "motion_parameters_gone": 1 - motion_parameters(model) / reference["motion"],
                "flops_saving": flops_saving,
                "latency_saving": time_saving,
                "latency_over_flops": time_saving / flops_saving if flops_saving else None,
            }
        print(json.dumps(row), flush=True)
        with (args.out / "width_speed.jsonl").open("a") as file:
            file.write(json.dumps(row) + "\n")
        if model is not teacher:
            del model
            torch.cuda.empty_cache() if torch.cuda.is_available() else None


if __name__ == "__main__":
    main()
