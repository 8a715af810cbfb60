"""VideoCrafter2 UNet cost before and after removing the paper's share of parameters (-36.2 %).

Random weights at full size (1.41 B), bf16 on CUDA, one denoising step at 320x512 px x 16 frames
(latent 40x64) with B=2 (the guidance batch), fps 28. Measures parameters, FLOPs (torch
FlopCounterMode) and the median latency of >= 10 steps, for the full UNet and for the UNet with
units removed by this rule: whole units in the order safe encoder/decoder pairs, middle block,
ResBlocks, temporal attention, spatial attention, temporal convs (largest first within a kind, so
the deepest level goes first), taking each one that does not overshoot the target; then the
smallest remaining unit that reaches it. Needs torch, pydantic and pluggy only (no diffusers).

    PYTHONPATH=$PWD:$PWD/plugins python3 benchmarks/gpu_videocrafter2.py --out "$OUT"
    python benchmarks/gpu_videocrafter2.py --tiny --out /tmp/vc2   # CPU check at a tiny size

Prints one JSON line per measurement and writes ``gpu_videocrafter2.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from vipkit.prunable import PrunableModule
from vipkit_videocrafter2 import build_unet
from vipkit_videocrafter2.blocks import prunable_unet
from vipkit_videocrafter2.unet_config import TINY_UNET_CONFIG, VC2_UNET_CONFIG

PAPER_FRACTION = 0.362  # VideoCrafter2 1.4 B -> 0.9 B in V.I.P.
FULL_SHAPE = dict(batch=2, frames=16, height=40, width=64)  # 320x512 px, 16 frames, guidance batch
TINY_SHAPE = dict(batch=2, frames=4, height=8, width=8)
PREFERENCE = ("encoder_decoder_pair", "middle", "resblock", "temporal_attention", "spatial_attention", "temporal_conv")


def emit(record: dict[str, Any], records: list[dict[str, Any]]) -> None:
    records.append(record)
    print(json.dumps(record), flush=True)


def choose_removals(unet: PrunableModule, fraction: float) -> list[str]:
    """Remove units by the rule in the module docstring until ``fraction`` of the parameters is gone."""
    total = sum(p.numel() for p in unet.module.parameters())
    target, removed = fraction * total, 0

    for block in sorted(unet.blocks(), key=lambda b: (PREFERENCE.index(b.kind), -b.params)):
        present = {b.name: b.params for b in unet.blocks()}
        if block.name in present and removed + present[block.name] <= target:
            unet.remove(block.name)
            removed += present[block.name]
    reaching = [b for b in unet.blocks() if removed + b.params >= target]
    if removed < target and reaching:
        unet.remove(min(reaching, key=lambda b: b.params).name)
    return unet.removed


def measure(unet: torch.nn.Module, inputs: tuple, iterations: int, device: torch.device) -> dict[str, Any]:
    x, timesteps, context = inputs
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            y = unet(x, timesteps, context=context, fps=28)
        assert y.shape == x.shape and torch.isfinite(y).all()
        for _ in range(3):  # warm-up: kernels chosen, memory pools filled
            unet(x, timesteps, context=context, fps=28)
        times = []
        for _ in range(iterations):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            unet(x, timesteps, context=context, fps=28)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return {
        "parameters": sum(p.numel() for p in unet.parameters()),
        "tflops_per_step": counter.get_total_flops() / 1e12,
        "latency_ms_median": 1e3 * statistics.median(times),
        "latency_ms_min": 1e3 * min(times),
        "iterations": iterations,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for gpu_videocrafter2.json")
    parser.add_argument("--tiny", action="store_true", help="tiny config and shapes (a CPU check of the script)")
    parser.add_argument("--iterations", type=int, default=10, help="timed denoising steps per model (>= 10)")
    parser.add_argument("--fraction", type=float, default=PAPER_FRACTION, help="share of parameters to remove")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config, shape = (TINY_UNET_CONFIG, TINY_SHAPE) if args.tiny else (VC2_UNET_CONFIG, FULL_SHAPE)
    records: list[dict[str, Any]] = []
    torch.manual_seed(0)
    with torch.device(device):
        unet = prunable_unet(build_unet(config).to(dtype))
    generator = torch.Generator(device).manual_seed(1)
    b, t, h, w = shape["batch"], shape["frames"], shape["height"], shape["width"]
    inputs = (
        torch.randn((b, 4, t, h, w), generator=generator, device=device, dtype=dtype),
        torch.tensor([981, 981], device=device),
        torch.randn((b, 77, config["context_dim"]), generator=generator, device=device, dtype=dtype),
    )
    setup = {
        "event": "setup",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "dtype": str(dtype),
        "torch": torch.__version__,
        "config": "tiny" if args.tiny else "inference_t2v_512_v2.0",
        "latent_shape": list(inputs[0].shape),
        "date": time.strftime("%Y-%m-%d"),
    }
    emit(setup, records)
    full = measure(unet.module, inputs, args.iterations, device)
    emit({"event": "full", **full}, records)
    removed = choose_removals(unet, args.fraction)
    emit({"event": "removed", "blocks": removed}, records)
    pruned = measure(unet.module, inputs, args.iterations, device)
    emit({"event": "pruned", **pruned}, records)
    summary = {
        "event": "summary",
        "parameter_reduction": 1 - pruned["parameters"] / full["parameters"],
        "flop_reduction": 1 - pruned["tflops_per_step"] / full["tflops_per_step"],
        "speedup": full["latency_ms_median"] / pruned["latency_ms_median"],
    }
    if device.type == "cuda":
        summary["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    emit(summary, records)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_videocrafter2.json").write_text(json.dumps(records, indent=2) + "\n")


if __name__ == "__main__":
    main()
