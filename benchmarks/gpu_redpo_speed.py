"""ReDPO training throughput at full AnimateDiff size: the naive step vs vipkit's, side by side.

The naive step is the one measured in ../shared/notes/gpu/redpo_step_memory.py (plain diffusers, one
(winner, loser) pair per optimizer step), with the motion modules kept as float32 master weights under bf16
autocast as diffusers' Diffusion-DPO example does (``naive-inplace-bf16``: the first baseline, bf16 weights
stepped in place). vipkit's steps (a bf16 model: float32 master weights too) are its own trainer running the real
``redpo`` loss on the real ``animatediff`` family, loaded from a random-weight SD-1.5 + motion-adapter folder
written here, with several pairs per optimizer step (micro-batches accumulated) and the recipe's
``train.compile`` / ``gradient_checkpointing`` / ``mixed_precision`` options and the family's attention
kernels (``spatial_attention`` / ``temporal_attention``). Each variant prints one JSON line as soon as it
is measured.

    python benchmarks/gpu_redpo_speed.py --out DIR            # GPU, full size
    python benchmarks/gpu_redpo_speed.py --out DIR --tiny     # CPU smoke test of the same code
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNetMotionModel
from torch.nn.attention import SDPBackend, sdpa_kernel

import vipkit
from vipkit.recipe import TrainSection
from vipkit.training import WeightedLoss, train_on_pairs
from vipkit_animatediff import AnimateDiff
from vipkit_animatediff.attention import choose_attention_kernels
from vipkit_animatediff.sd15 import SD15_SIZES
from vipkit_animatediff.tiny import TINY_SIZES, write_hub_folders
from vipkit_losses import ReDPO

FULL = dict(frames=16, latent=64, text_dim=768)
TINY = dict(frames=8, latent=16, text_dim=32)


def write_model(folder: Path, tiny: bool) -> tuple[str, str]:
    """An SD pipeline folder and a motion-adapter folder, in the hub layout the family loads."""
    folders = write_hub_folders(folder, TINY_SIZES if tiny else SD15_SIZES)
    return folders["base"], folders["motion_adapter"]


def naive_step_seconds(
    teacher_unet: UNetMotionModel, dims: dict, device: str, steps: int, inplace_bf16: bool = False
) -> dict:
    """The baseline's step: plain diffusers, one pair, AdamW on the motion modules, the motion weights as float32
    master weights under bf16 autocast (as diffusers' Diffusion-DPO example trains under accelerate's mixed
    precision); ``inplace_bf16``: the bf16 weights stepped in place instead (the first baseline, which rounds
    most lr-1e-5 updates away)."""
    student = copy.deepcopy(teacher_unet)
    for name, parameter in student.named_parameters():
        parameter.requires_grad_("motion_modules" in name)
        if "motion_modules" in name and not inplace_bf16:
            parameter.data = parameter.data.float()
    student.train()
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-5)
    frames, size = dims["frames"], dims["latent"]
    dt = torch.bfloat16
    x0 = torch.randn(2, 4, frames, size, size, device=device, dtype=dt)
    noise = torch.randn(1, 4, frames, size, size, device=device, dtype=dt).expand(2, -1, -1, -1, -1)
    hidden = torch.randn(2 * frames, 77, dims["text_dim"], device=device, dtype=dt)
    t = torch.tensor([400, 400], device=device)
    noisy = x0 + noise
    times = []
    for _ in range(steps + 1):
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device, dtype=dt):
            with torch.no_grad():
                ref = teacher_unet(noisy, t, encoder_hidden_states=hidden).sample
            pred = student(noisy, t, encoder_hidden_states=hidden).sample
        err = (pred.float() - noise.float()).pow(2).mean(dim=(1, 2, 3, 4))
        rerr = (ref.float() - noise.float()).pow(2).mean(dim=(1, 2, 3, 4))
        inside = -0.5 * 5000 * ((err[0] - err[1]) - (rerr[0] - rerr[1]))
        loss = -F.logsigmoid(inside) + 1e4 * (pred[0].float() - ref[0].float()).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter() - start)
    del student, optimizer
    return {"seconds_per_step": statistics.median(times[1:]), "pairs_per_step": 1}


KERNEL_KINDS = (  # (kind, substrings of the kernel name), first match wins
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    ("convolution", ("conv", "cudnn", "implicit_gemm", "xmma", "sm90_xmma")),
    ("matmul", ("gemm", "cutlass", "nvjet", "matmul")),
    ("optimizer", ("adam", "foreach", "multi_tensor")),
    ("copy", ("memcpy", "copy", "memset")),
    ("fused / elementwise / norm", ("triton", "elementwise", "reduce", "norm", "softmax", "cat", "index")),
)


def kernel_time_by_kind(profile: torch.profiler.profile) -> dict:
    """GPU time of one profiled optimizer step, summed per kind of kernel, and the slowest kernels by name.

    Only device-side events count: an operator's own ``self_device_time_total`` repeats the time of the
    kernels it launched, which would count every kernel twice.
    """
    totals: dict[str, float] = {}
    kernels: dict[str, float] = {}
    for event in profile.key_averages():
        gpu_us = getattr(event, "self_device_time_total", 0.0)
        if gpu_us <= 0 or event.device_type == torch.autograd.DeviceType.CPU:
            continue
        name = event.key.lower()
        kind = next((k for k, needles in KERNEL_KINDS if any(n in name for n in needles)), "other")
        totals[kind] = totals.get(kind, 0.0) + gpu_us / 1e3
        kernels[event.key[:120]] = kernels.get(event.key[:120], 0.0) + gpu_us / 1e3
    slowest = dict(sorted(kernels.items(), key=lambda kv: -kv[1])[:12])
    return {
        "gpu_ms_by_kind": {k: round(v, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
        "gpu_ms": round(sum(totals.values()), 1),
        "slowest_kernels_ms": {k: round(v, 1) for k, v in slowest.items()},
    }


def vipkit_step_seconds(
    teacher: AnimateDiff, student: AnimateDiff, dims: dict, steps: int, train: TrainSection, profile: bool = False
) -> dict:
    """vipkit's own trainer (``train_on_pairs``) with the real ``redpo`` loss: the step a recipe runs.

    The pairs live on the CPU as in a run; the trainer moves each micro-batch to the GPU. The time of an
    optimizer step is the interval between the trainer's per-step log calls.
    """
    frames, size = dims["frames"], dims["latent"]
    count = train.batch_size * (
        steps + 4
    )  # warm-up: the first step and interval (compilation, allocator); the last step may be profiled
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, count, 4, frames, size, size, generator=generator)
    pairs = vipkit.PairSet(
        prompts=[f"a prompt number {i}" for i in range(count)],
        seeds=list(range(count)),
        winner_latents=latents[0],
        loser_latents=latents[1],
        winner_videos=torch.zeros(count, 1),
        loser_videos=torch.zeros(count, 1),
        target_dimensions=["x"],
    )
    loss = WeightedLoss(1.0, ReDPO(ReDPO.Config(reference="teacher", sft_target="teacher")))
    stamps: list[float] = []

    profiler = torch.profiler.profile(activities=torch.profiler.supported_activities()) if profile else None
    start_profile_at = steps + 3  # stamps: end of each step; steps 4 .. steps+3 are timed, step steps+4 is profiled

    def log(metrics: dict) -> None:
        stamps.append(time.perf_counter())  # the trainer has already read the step's loss: the GPU is done
        if profiler is not None and len(stamps) == start_profile_at:
            profiler.start()
        elif profiler is not None and len(stamps) == start_profile_at + 1:
            profiler.stop()

    train_on_pairs(student, teacher, pairs, [loss], train, seed=0, log=log)
    times = [b - a for a, b in itertools.pairwise(stamps)]
    timed = times[2 : steps + 2]
    row = {"seconds_per_step": statistics.median(timed), "pairs_per_step": train.batch_size, "steps_timed": len(timed)}
    return row | (kernel_time_by_kind(profiler) if profiler is not None else {})


@contextmanager
def attention_kernels(flags: set[str], teacher: AnimateDiff, student: AnimateDiff):
    """The family's ``spatial_attention`` / ``temporal_attention`` settings from flags ``spatial=K`` and
    ``temporal=K``, on both models (a recipe sets them once for both); the teacher gets "auto" back after."""
    chosen = dict(flag.split("=") for flag in flags if "=" in flag)
    for model in (teacher, student):
        choose_attention_kernels(model.denoiser(), chosen.get("spatial", "auto"), chosen.get("temporal", "auto"))
    try:
        yield
    finally:
        choose_attention_kernels(teacher.denoiser(), "auto", "auto")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="tiny random model on CPU (smoke test)")
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per variant")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile one more optimizer step of each vipkit variant: GPU time per kind of kernel",
    )
    parser.add_argument(
        "--variants",
        default="naive,eager-1x4,compile-1x4,compile+spatial=cudnn+temporal=cudnn-1x4",
        help="naive (float32 master weights, bf16 autocast), naive-inplace-bf16, or FLAGS-PAIRSxACCUMULATE with FLAGS from eager|compile, ckpt, amp, spatial=K, temporal=K (K: the animatediff family's attention kernels) joined by +",
    )
    args = parser.parse_args()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dims = TINY if args.tiny else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    results: list[dict] = []
    began = time.perf_counter()

    def report(row: dict) -> None:
        row["elapsed_s"] = round(time.perf_counter() - began, 1)  # since the start: shows each variant's compile time
        if device == "cuda":
            row["peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
            torch.cuda.reset_peak_memory_stats()
        row["pairs_per_second"] = row["pairs_per_step"] / row["seconds_per_step"]
        results.append(row)
        print(json.dumps(row), flush=True)
        (args.out / "redpo_speed.json").write_text(
            json.dumps({"device": device_name(device), "rows": results}, indent=1)
        )

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        base, adapter = write_model(Path(folder), args.tiny)
        common = dict(base=base, motion_adapter=adapter, device=device)
        teacher = AnimateDiff(AnimateDiff.Config(**common, dtype="bfloat16"))
        print(json.dumps({"loaded_s": time.perf_counter() - started, "params": teacher.num_parameters()}), flush=True)
        for variant in args.variants.split(","):
            try:
                if variant in ("naive", "naive-inplace-bf16"):
                    with sdpa_kernel(
                        [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
                    ):  # cuDNN off, as in the baseline script
                        row = naive_step_seconds(
                            teacher.pipeline().unet, dims, device, args.steps, inplace_bf16=variant != "naive"
                        )
                else:
                    flag_text, shape = variant.split("-")
                    flags = set(flag_text.split("+"))  # eager | compile, ckpt, amp, spatial=K, temporal=K
                    micro, accumulate = (int(v) for v in shape.split("x"))
                    amp = "amp" in flags  # float32 weights trained under bf16 autocast
                    student = AnimateDiff(AnimateDiff.Config(**common, dtype="float32")) if amp else teacher.copy()
                    train = TrainSection(
                        epochs=1,
                        batch_size=micro * accumulate,
                        gradient_accumulation_steps=accumulate,
                        learning_rate=1e-5,
                        max_grad_norm=None,
                        trainable="motion",
                        mixed_precision="bf16" if amp else "no",
                        gradient_checkpointing="ckpt" in flags,
                        compile="compile" in flags,
                    )
                    with attention_kernels(flags, teacher, student):
                        row = vipkit_step_seconds(teacher, student, dims, args.steps, train, args.profile)
                    del student
                    torch._dynamo.reset()
                report({"variant": variant, **row})
            except Exception as exc:  # noqa: BLE001 - one failing variant must not hide the others' numbers
                report(
                    {
                        "variant": variant,
                        "seconds_per_step": float("inf"),
                        "pairs_per_step": 0,
                        "error": repr(exc)[:300],
                    }
                )
            if device == "cuda":
                torch.cuda.empty_cache()
    print(json.dumps({"done_s": time.perf_counter() - started}), flush=True)


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


if __name__ == "__main__":
    sys.exit(main())
