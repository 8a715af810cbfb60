"""Score a shipped shapes teacher against the world's own videos and an untrained model of its architecture (CPU).

    python benchmarks/shapes_teacher_scores.py [--videos 32] [--teacher models/shapes-teacher]

Prints one markdown row per source: real rendered videos, real videos through the teacher's VAE, the
teacher's generations, and generations of the same architecture with random weights; plus the time to
generate 16 videos on this machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from vipkit.plugins import load_plugins
from vipkit_shapes import ShapesReward
from vipkit_shapes.world import describe, render_batch, sample_scenes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--teacher", default="models/shapes-teacher")
    args = parser.parse_args()
    torch.set_num_threads(2)
    family = load_plugins().registry("models").get("animatediff")
    teacher = family.from_options({"base": args.teacher})
    scenes = sample_scenes(args.videos, seed=31337)
    prompts, seeds = [describe(s) for s in scenes], list(range(args.videos))
    real = render_batch(scenes, seeds)
    vae = teacher.pipeline().vae
    with torch.no_grad():
        latents = vae.encode(real.flatten(0, 1) * 2 - 1).latent_dist.mean
        recon = ((vae.decode(latents).sample + 1) / 2).clamp(0, 1).unflatten(0, real.shape[:2])
    started = time.perf_counter()
    taught = teacher.generate(prompts[:16], seeds[:16]).videos
    seconds_16 = time.perf_counter() - started
    taught = torch.cat([taught, teacher.generate(prompts[16:], seeds[16:]).videos])
    untrained = teacher.copy()
    unet = untrained.pipeline().unet
    torch.manual_seed(1)
    unet.load_state_dict(type(unet).from_config(unet.config).state_dict())
    random_videos = untrained.generate(prompts, seeds).videos
    reward = ShapesReward()
    print(f"teacher: 16 videos (8 frames, 32×32, 20 steps, CFG) in {seconds_16:.1f} s on this CPU")
    print("| videos | " + " | ".join(ShapesReward.dimensions) + " |")
    print("|---|" + "---|" * len(ShapesReward.dimensions))
    for name, videos in (
        ("real (rendered)", real),
        ("real through the teacher's VAE", recon),
        ("teacher", taught),
        ("untrained (same architecture, random UNet)", random_videos),
    ):
        scores = reward.score(videos, prompts)
        print(f"| {name} | " + " | ".join(f"{float(scores[d].mean()):.3f}" for d in ShapesReward.dimensions) + " |")


if __name__ == "__main__":
    main()
