"""ReDPO training steps on one or several GPUs (DDP or FSDP through vipkit's trainer): speed, memory, equality.

Run it once per world size with the same arguments; each run writes ``OUT/world-N.json`` and the
trained denoiser ``OUT/weights-world-N.safetensors``; ``--compare OUT`` then prints how far the
N-process weights are from the 1-process ones (same global batch: they should agree to float rounding).

    python benchmarks/ddp_training.py --out OUT                                  # 1 GPU
    torchrun --nproc_per_node 2 benchmarks/ddp_training.py --out OUT             # 2 GPUs
    python benchmarks/ddp_training.py --compare OUT
    python benchmarks/ddp_training.py --out /tmp/ddp --tiny                      # CPU smoke run

Prints JSON lines as it goes (rank 0 only).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def compare(out: Path) -> None:
    from safetensors.torch import load_file

    one = load_file(str(out / "weights-world-1.safetensors"))
    for path in sorted(out.glob("weights-world-*.safetensors")):
        other = load_file(str(path))
        worst = max((other[k].float() - v.float()).abs().max().item() for k, v in one.items())
        print(json.dumps({"weights": path.name, "max_abs_difference_to_world_1": worst}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", type=Path, help="compare the weights written by earlier runs in this folder")
    parser.add_argument("--tiny", action="store_true", help="tiny random model on CPU-sized inputs (a smoke test)")
    parser.add_argument("--teacher", default="models/shapes-teacher", help="model folder (without --tiny)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps (the first 3 are warm-up, not timed)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step over all processes")
    parser.add_argument("--accumulation", type=int, default=1, help="gradient_accumulation_steps")
    parser.add_argument("--mixed-precision", choices=["no", "bf16"], default="bf16")
    parser.add_argument("--optimizer", choices=["adamw", "sgd"], default="sgd", help="sgd shows equality best")
    parser.add_argument("--fsdp", action="store_true", help="FSDP2 instead of DDP on several processes")
    args = parser.parse_args()
    if args.compare:
        compare(args.compare)
        return

    import torch
    from safetensors.torch import save_file

    import vipkit
    from vipkit import distributed
    from vipkit.plugins import load_plugins
    from vipkit.recipe import TrainSection
    from vipkit.training import WeightedLoss, train_on_pairs

    if args.tiny:
        torch.set_num_threads(1)
    distributed.rank()  # join the process group first: it picks this rank's GPU
    device = "cuda" if torch.cuda.is_available() else "cpu"
    family = load_plugins().registry("models").get("animatediff")
    options = (
        {"preset": "tiny", "height": 16, "width": 16, "num_frames": 4, "num_inference_steps": 2}
        if args.tiny
        else {"base": args.teacher}
    )
    teacher = family.from_options({**options, "device": device})
    student = teacher.copy()
    student.remove_block(
        student.blocks()[-1].name if args.tiny else next(b.name for b in student.blocks() if b.kind == "motion_module")
    )
    shape = teacher.generate(["a red square moving left"], [0]).latents.shape[1:]
    count = args.batch_size * args.steps
    generator = torch.Generator().manual_seed(0)
    winners, losers = torch.randn(2, count, *shape, generator=generator)
    pairs = vipkit.PairSet(
        [f"prompt {i}" for i in range(count)],
        list(range(count)),
        winners,
        losers,
        torch.zeros(count),
        torch.zeros(count),
        ["x"],
    )
    loss = load_plugins().registry("losses").get("redpo").from_options({"sft_weight": 1e4})
    settings = TrainSection(
        epochs=1,
        batch_size=args.batch_size,
        gradient_accumulation_steps=args.accumulation,
        learning_rate=1e-4,
        optimizer=args.optimizer,
        mixed_precision=args.mixed_precision,
        trainable="motion",
        fsdp=args.fsdp,
    )
    stamps: list[float] = []

    def log(metrics: dict) -> None:
        if device == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        print(
            json.dumps(
                {
                    "step": metrics["step"],
                    "loss": metrics["loss"],
                    "seconds": stamps[-1] - stamps[-2] if len(stamps) > 1 else None,
                }
            ),
            flush=True,
        )

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train_on_pairs(student, teacher, pairs, [WeightedLoss(1.0, loss)], settings, seed=0, log=log)
    timed = stamps[3:] if len(stamps) > 4 else stamps
    seconds = (timed[-1] - timed[0]) / max(1, len(timed) - 1)
    result = {
        "world": distributed.world_size(),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "model": "tiny" if args.tiny else args.teacher,
        "latent_shape": list(shape),
        "batch_size": args.batch_size,
        "accumulation": args.accumulation,
        "mixed_precision": args.mixed_precision,
        "optimizer": args.optimizer,
        "fsdp": args.fsdp,
        "seconds_per_step": seconds,
        "pairs_per_second": args.batch_size / seconds if seconds else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        "date": time.strftime("%Y-%m-%d"),
    }
    if distributed.is_main():
        args.out.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().float().cpu().contiguous() for k, v in student.denoiser().state_dict().items()},
            str(args.out / f"weights-world-{result['world']}.safetensors"),
        )
        (args.out / f"world-{result['world']}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result), flush=True)
    distributed.finish()


if __name__ == "__main__":
    main()
