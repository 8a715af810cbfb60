"""Train a shapes-world teacher: a tiny AnimateDiff (UNetMotionModel + VAE + CLIP text encoder) or, with
``--architecture wan``, a tiny Wan 2.1 (WanTransformer3DModel + Wan VAE + UMT5 text encoder).

Reproducible and resumable: ``--resume DIR`` continues from a checkpoint written by an earlier call
(weights, AdamW moments, EMA, step; ``vipkit_shapes.teacher_checkpoint``), so training can be split over
several GPU calls. The teacher is exported as a folder of its vipkit family (``animatediff`` or ``wan``;
load it with ``[model] base = "<folder>"``).

Stages: (1) the VAE learns to reconstruct the world's frames (AnimateDiff) or clips (Wan); (2) every
training video is encoded once; (3) the denoiser and the text encoder learn to denoise the latents, with
an EMA copy that is exported (``vipkit_shapes.teacher_training``).

    python -m vipkit_shapes.train_teacher --out OUT [--resume OUT_BEFORE/checkpoint] [--minutes 8]
    python -m vipkit_shapes.train_teacher --export-only --resume OUT/checkpoint --out models/shapes-teacher

A smaller UNet (``--unet fast``, cheap enough on a CPU) can start from a trained teacher's VAE and text
encoder (``--init-from models/shapes-teacher``: no VAE training) and learn from that teacher's predictions
as well as from the data (``--distill-weight``). That is how ``models/shapes-teacher-fast`` was made
(three GPU calls, benchmarks/RESULTS.md §2):

    bash benchmarks/gpu_shapes_teacher.sh 7 --unet fast --init-from models/shapes-teacher --distill-weight 1 --batch 384
    bash benchmarks/gpu_shapes_teacher.sh 8.3 CKPT --init-from models/shapes-teacher --distill-weight 1 --batch 768
    bash benchmarks/gpu_shapes_teacher.sh 9 CKPT --init-from models/shapes-teacher --distill-weight 1 --batch 1000 --lr-final 5e-5

The Wan teacher (``models/shapes-wan-teacher``, benchmarks/RESULTS.md §14) was made in two GPU calls: VAEs of
three sizes side by side (``--vae-config``; the default's base width of 16 learnt the backgrounds and not the shapes,
which its ``vae_check`` line shows: ``mse`` not far below ``mean_colour_mse``), then the transformer on the best
one's VAE (``--init-from``). It is undertrained; ``--init-denoiser`` trains it further from the exported folder:

    bash benchmarks/gpu_shapes_vae_variants.sh wan 7.3 '{"base_dim": 32}' '{"base_dim": 16, "num_res_blocks": 2}'
    bash benchmarks/gpu_shapes_teacher.sh 5.6 --init-from BEST_TEACHER --batch 1024 --lr-final 5e-5  (best.tar.part-*)
    bash benchmarks/gpu_shapes_teacher.sh 8 --init-from models/shapes-wan-teacher --init-denoiser --batch 1024
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vipkit.weights import check_weight_folder
from vipkit_shapes.teacher_architectures import TEACHERS
from vipkit_shapes.teacher_checkpoint import (
    architecture,
    exported_parts,
    load_ema,
    load_trained,
    read_state,
    restore_optimizer,
    save_checkpoint,
)
from vipkit_shapes.teacher_data import encode_dataset, render_dataset
from vipkit_shapes.teacher_kind import TeacherKind
from vipkit_shapes.teacher_training import (
    DenoiserTraining,
    FrozenTeacher,
    Log,
    compiled_or_eager,
    train_denoiser,
    train_vae,
)

CUDA_ATTENTION_BATCH_LIMIT = 65_535  # grid limit of the attention kernels (../shared/notes/gpu-baseline.md)


def json_object(text: str) -> dict[str, Any]:
    """An argument that must be a JSON object (argparse turns the ValueError into a usage error)."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(text)
    return value


def argument_parser() -> argparse.ArgumentParser:
    """The command line (benchmarks/gpu_shapes_teacher.sh passes its extra arguments on to it)."""
    parser = argparse.ArgumentParser(prog="python -m vipkit_shapes.train_teacher", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resume", type=Path)
    parser.add_argument(
        "--minutes", type=float, default=8.0, help="wall-clock budget for denoiser training in this call"
    )
    parser.add_argument("--videos", type=int, default=32768, help="training videos (encoded once)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-final", type=float, help="cosine-decay the learning rate to this by the end of this call")
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-count", type=int, default=64, help="freshly sampled prompts scored at each evaluation")
    parser.add_argument("--vae-steps", type=int, default=4000)
    parser.add_argument(
        "--vae-minutes", type=float, help="stop VAE training after this many minutes if --vae-steps are not done"
    )
    parser.add_argument(
        "--vae-batch", type=int, help="frames (AnimateDiff) or clips (Wan) per VAE step; default 512 frames, 64 clips"
    )
    parser.add_argument(
        "--vae-config",
        type=json_object,
        help="a JSON object replacing entries of the VAE's config, e.g. '{\"base_dim\": 32}' (a resumed run keeps its "
        "own)",
    )
    parser.add_argument("--compile", action="store_true")
    parser.add_argument(
        "--export-only",
        action="store_true",
        help="write the teacher folder OUT from --resume's checkpoint (its EMA denoiser) and stop",
    )
    parser.add_argument(
        "--architecture",
        "--unet",
        choices=sorted(TEACHERS),
        default="shipped",
        help="the teacher: 'shipped' and 'fast' are AnimateDiff UNets, 'wan' a Wan 2.1 transformer (a resumed run "
        "keeps its own)",
    )
    parser.add_argument(
        "--init-from", type=Path, help="a trained teacher folder: start from its VAE and text encoder (no VAE training)"
    )
    parser.add_argument(
        "--init-denoiser",
        action="store_true",
        help="with --init-from: start the denoiser (and its EMA) from that teacher's too, to train it further",
    )
    parser.add_argument(
        "--distill-weight",
        type=float,
        default=0.0,
        help="also regress to the --init-from teacher's prediction (its own frozen text encoder), with this weight",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Check the options, then export a checkpoint or train one call (its log: OUT/train_log.jsonl)."""
    cli = argument_parser()
    args = cli.parse_args(argv)
    if args.init_denoiser and not args.init_from:
        cli.error("--init-denoiser needs --init-from (the teacher whose denoiser to start from)")
    if args.distill_weight and not args.init_from:
        cli.error("--distill-weight needs --init-from (the teacher to learn from)")
    if args.vae_config and args.init_from:
        cli.error("--vae-config and --init-from: the VAE comes from the --init-from teacher, with its own config")
    if args.export_only and not args.resume:
        cli.error("--export-only needs --resume (the checkpoint to export)")
    if args.export_only:
        kind, parts = exported_parts(args.resume)
        kind.export(args.out, parts, parts.denoiser)
        return
    kind = TEACHERS[architecture(read_state(args.resume))] if args.resume else TEACHERS[args.architecture]
    if args.init_from and not args.resume:
        try:
            given = json.loads((args.init_from / "vae" / "config.json").read_text()).get("_class_name")
        except (OSError, ValueError, AttributeError) as exc:
            cli.error(f"--init-from {args.init_from}: no teacher folder with a readable vae/config.json ({exc})")
        if given != kind.classes["vae"].__name__:
            cli.error(
                f"--init-from {args.init_from} holds a {given} VAE and the {kind.name!r} teacher takes an "
                f"{kind.classes['vae'].__name__}: name the architecture it starts (--architecture)"
            )
    sequences = kind.attention_sequences
    if torch.cuda.is_available() and args.batch * sequences > CUDA_ATTENTION_BATCH_LIMIT:
        cli.error(
            f"--batch {args.batch} is too large for the GPU: the {kind.name} teacher's attention runs "
            f"batch x {sequences} sequences, and CUDA's attention kernels take at most "
            f"{CUDA_ATTENTION_BATCH_LIMIT:,} (--batch {CUDA_ATTENTION_BATCH_LIMIT // sequences} at most)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "train_log.jsonl", "a") as log_file:
        started = time.time()

        def log(record: dict[str, Any]) -> None:
            record["time"] = round(time.time() - started, 1)
            print(json.dumps(record), flush=True)
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()

        train(args, kind, log)


def train(args: argparse.Namespace, kind: TeacherKind, log: Log) -> None:
    """One call of training: build or resume, train until ``--minutes`` are spent, write OUT/checkpoint."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.enable_cudnn_sdp(False)  # cuDNN attention backward fails on the GPU image (gpu-baseline.md)
    torch.backends.cuda.matmul.allow_tf32 = True
    state = read_state(args.resume) if args.resume else None
    parts = kind.build(vae_config=state.get("vae_config") if state else args.vae_config)
    teacher = None
    if args.init_from:
        check_weight_folder(args.init_from, refuse_any_pickle=True)  # a teacher folder vipkit wrote: safetensors only
        classes = kind.classes
        parts.vae = classes["vae"].from_pretrained(args.init_from / "vae", use_safetensors=True)
        parts.text_encoder = classes["text_encoder"].from_pretrained(
            args.init_from / "text_encoder", use_safetensors=True
        )
        if args.init_denoiser:
            parts.denoiser = classes[kind.component].from_pretrained(
                args.init_from / kind.component, use_safetensors=True
            )
        if args.distill_weight:
            teacher = FrozenTeacher(
                denoiser=classes[kind.component].from_pretrained(args.init_from / kind.component, use_safetensors=True),
                text_encoder=copy.deepcopy(parts.text_encoder),
            )
            for module in (teacher.denoiser, teacher.text_encoder):
                module.to(device).eval().requires_grad_(False)
    for module in (parts.text_encoder, parts.vae, parts.denoiser):
        module.to(device)
    step, history = 0, []
    videos, tokens = render_dataset(args.videos, parts.tokenizer, device, kind.frames)
    log({"phase": "data", "videos": list(videos.shape)})
    if state:
        step, history = state["step"], state["history"]
        load_trained(kind, parts, args.resume, state)
        parts.vae.eval().requires_grad_(False)
        log({"phase": "resume", "step": step})
    elif args.init_from:
        parts.vae.eval().requires_grad_(False)
    else:
        train_vae(kind, parts.vae, videos, args.vae_steps, log, args.vae_minutes, args.vae_batch)
    latents = encode_dataset(kind, parts.vae, videos, keep_scale=state is not None or args.init_from is not None)
    del videos
    scale = {key: parts.vae.config[key] for key in kind.latent_scale_keys}
    log({"phase": "latents", "latents": list(latents.shape), **scale})

    ema = copy.deepcopy(parts.denoiser).requires_grad_(False)
    if args.resume:
        load_ema(kind, ema, args.resume)
    params = [*parts.denoiser.parameters(), *parts.text_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    if args.resume:
        restore_optimizer(optimizer, params, args.resume, step)
    model = compiled_or_eager(kind, parts, latents, tokens, log) if args.compile else parts.denoiser
    options = DenoiserTraining(
        minutes=args.minutes,
        batch=args.batch,
        lr=args.lr,
        lr_final=args.lr_final,
        eval_every=args.eval_every,
        eval_count=args.eval_count,
        distill_weight=args.distill_weight,
    )

    def checkpoint(step: int) -> None:
        save_checkpoint(args.out / "checkpoint", kind, parts, ema, optimizer, step, history)

    step = train_denoiser(
        kind, parts, model, ema, optimizer, latents, tokens, options, step, history, log, teacher, checkpoint
    )
    checkpoint(step)
    log({"phase": "done", "step": step})


if __name__ == "__main__":
    main()
