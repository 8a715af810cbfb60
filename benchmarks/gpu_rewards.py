"""Scoring throughput of the ``videoscore`` and ``vbench`` rewards at full model size, random weights.

    python benchmarks/gpu_rewards.py --out OUT [--frames 16] [--size 512] [--videos 8] [--batch 4] [--repeats 5]
    python benchmarks/gpu_rewards.py --out OUT --tiny      # toy models on the CPU, to check the script

Nothing is downloaded: every network is built from its configuration with random weights (VideoScore:
Idefics2-8B, the reward's ``random`` preset; VBench: DINO ViT-B/16, CLIP ViT-B/32, CLIP ViT-L/14 + LAION's
Linear(768, 1) head; RAFT-large when torchvision is importable) and run through the rewards' own scoring
code in bfloat16 on CUDA. The throughput does not depend on the weights' values. The preset's VideoScore
tokenizer is word-level with the real special-token ids, so the text is about as many tokens as with the
real Llama tokenizer.
Prints one JSON line per measurement and writes ``OUT/gpu_rewards.json``; videos/s are medians of repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]  # runs from a checkout without installing vipkit

from vipkit_vbench import VBenchReward  # noqa: E402
from vipkit_vbench.models import FrameEncoder  # noqa: E402
from vipkit_videoscore import VideoScoreReward  # noqa: E402

PROMPT = "a corgi running on a beach at sunset, waves in the background, cinematic, slow motion"


def emit(record: dict[str, Any], results: list[dict[str, Any]]) -> None:
    results.append(record)
    print(json.dumps(record), flush=True)


def timed(run: Any, device: torch.device, repeats: int) -> list[float]:
    """Seconds per call, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def videoscore_reward(tiny: bool, device: torch.device, frames: int, batch: int) -> VideoScoreReward:
    """The reward's own preset: tiny, or the real architecture (bfloat16 on CUDA, as the reward's dtype "auto")."""
    options = {"preset": "tiny" if tiny else "random", "frames": frames, "batch_size": batch, "device": str(device)}
    return VideoScoreReward.from_options(options)


def vbench_reward(tiny: bool, device: torch.device, dtype: torch.dtype) -> VBenchReward:
    """The tiny preset (so every model dimension is enabled), with full-size random networks swapped in."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, ViTConfig, ViTModel

    reward = VBenchReward.from_options(
        {"preset": "tiny", "device": str(device), "dtype": str(dtype).removeprefix("torch.")}
    )
    if not tiny:
        clip_b32 = CLIPVisionConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=32,
            projection_dim=512,
        )
        clip_l14 = CLIPVisionConfig(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
            projection_dim=768,
        )
        networks = {
            "dino": ("dino", ViTModel(ViTConfig(image_size=224, patch_size=16), add_pooling_layer=False)),
            "background_clip": ("clip", CLIPVisionModelWithProjection(clip_b32)),
            "aesthetic_clip": ("clip", CLIPVisionModelWithProjection(clip_l14)),
        }
        for name, (kind, model) in networks.items():
            reward.__dict__[name] = FrameEncoder(model.to(device=device, dtype=dtype).eval(), kind, device, dtype)
        reward.__dict__["aesthetic_head"] = torch.nn.Linear(768, 1).to(device)
    try:
        from torchvision.models.optical_flow import raft_large, raft_small

        reward.__dict__["raft"] = (raft_small if tiny else raft_large)(weights=None).to(device).eval()
        reward.dimensions = (*reward.dimensions[:-1], "dynamic_degree", "quality_score")
    except ImportError:
        pass
    return reward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="toy models and videos on the CPU (checks the script)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=512, help="frame height and width in pixels")
    parser.add_argument("--videos", type=int, default=8, help="videos per timed call")
    parser.add_argument("--batch", type=int, default=4, help="VideoScore videos per forward pass")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.tiny:
        args.frames, args.size, args.videos, args.batch, args.repeats = 4, 32, 2, 2, 2
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    results: list[dict[str, Any]] = []
    setting = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "dtype": str(dtype),
        "frames": args.frames,
        "size": args.size,
        "videos": args.videos,
        "torch": torch.__version__,
    }
    emit({"setting": setting}, results)
    videos = torch.rand(args.videos, args.frames, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    prompts = [PROMPT] * args.videos

    def record(reward: str, part: str, seconds: list[float], **extra: Any) -> None:
        median = statistics.median(seconds)
        emit(
            {
                "reward": reward,
                "part": part,
                "videos_per_s": round(args.videos / median, 3),
                "median_s": round(median, 4),
                "repeats_s": [round(s, 4) for s in seconds],
                **extra,
            },
            results,
        )

    built = time.perf_counter()
    videoscore = videoscore_reward(args.tiny, device, args.frames, args.batch)
    parameters = sum(p.numel() for p in videoscore.videoscore.model.parameters())  # builds the network
    emit({"reward": "videoscore", "built_s": round(time.perf_counter() - built, 1), "parameters": parameters}, results)
    record(
        "videoscore", "score", timed(partial(videoscore.score, videos, prompts), device, args.repeats), batch=args.batch
    )
    if device.type == "cuda":
        emit({"reward": "videoscore", "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}, results)
    del videoscore
    if device.type == "cuda":
        torch.cuda.empty_cache()

    vbench = vbench_reward(args.tiny, device, dtype)
    for dimension in vbench.dimensions[:-1]:
        part = getattr(vbench, f"_{dimension}")
        record("vbench", dimension, timed(lambda part=part: part(videos), device, args.repeats))
    record(
        "vbench",
        "score",
        timed(lambda: vbench.score(videos, prompts), device, args.repeats),
        dimensions=list(vbench.dimensions),
    )

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_rewards.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
