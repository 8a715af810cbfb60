"""Train the shapes-world teacher: a tiny AnimateDiff (UNetMotionModel + VAE + CLIP text encoder).

Reproducible and resumable: ``--resume DIR`` continues from a checkpoint written by an earlier run
(weights, AdamW moments, EMA, step; the sampling generator is reseeded from the step), so training can
be split over several GPU calls. The teacher is
exported as a vipkit AnimateDiff model folder (load it with ``[model] base = "<folder>"``).

Stages: (1) the VAE learns to reconstruct frames of the world; (2) every training video is encoded
once; (3) the UNet and the text encoder learn to denoise the latents (v-prediction, cosine schedule,
10 % empty prompts for classifier-free guidance), with an EMA copy that is exported. Prompt following
is measured while training with the ``shapes`` reward on freshly sampled prompts.

    python benchmarks/train_shapes_teacher.py --out OUT [--resume OUT_BEFORE/checkpoint] [--minutes 8]
    python benchmarks/train_shapes_teacher.py --export-only --resume OUT/checkpoint --out models/shapes-teacher

A smaller UNet (``--unet fast``, cheap enough on a CPU) can start from a trained teacher's VAE and text
encoder (``--init-from models/shapes-teacher``: no VAE training) and learn from that teacher's predictions
as well as from the data (``--distill-weight``). That is how ``models/shapes-teacher-fast`` was made
(three GPU calls, benchmarks/RESULTS.md §2):

    bash benchmarks/gpu_shapes_teacher.sh 7 --unet fast --init-from models/shapes-teacher --distill-weight 1 --batch 384
    bash benchmarks/gpu_shapes_teacher.sh 8.3 CKPT --init-from models/shapes-teacher --distill-weight 1 --batch 768
    bash benchmarks/gpu_shapes_teacher.sh 9 CKPT --init-from models/shapes-teacher --distill-weight 1 --batch 1000 --lr-final 5e-5
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AnimateDiffPipeline, AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

from vipkit_animatediff.blocks import PrunableUNet
from vipkit_animatediff.parts import ModelParts
from vipkit_animatediff.persistence import save_parts
from vipkit_shapes.reward import ShapesReward
from vipkit_shapes.tokenizer import word_tokenizer
from vipkit_shapes.world import describe, render_batch, sample_scenes

FRAMES, SIZE, LATENT_CHANNELS, TEXT_DIM, MAX_TOKENS = 8, 32, 8, 64, 24
LATENT_POSITIONS = (SIZE // 4) ** 2  # the VAE downsamples by 4
CUDA_ATTENTION_BATCH_LIMIT = 65_535  # grid limit of the attention kernels (../shared/notes/gpu-baseline.md)
ATTENTION_EVERYWHERE = (("CrossAttnDownBlock2D",) * 2, ("CrossAttnUpBlock2D",) * 2)
ATTENTION_AT_4X4 = (("DownBlock2D", "CrossAttnDownBlock2D"), ("CrossAttnUpBlock2D", "UpBlock2D"))
UNET_SPECS = {  # name: (channels, spatial heads, motion heads, norm groups, (down, up) block types)
    "shipped": ((32, 64), 16, 4, 16, ATTENTION_EVERYWHERE),  # models/shapes-teacher
    "fast": ((16, 32), 1, 1, 8, ATTENTION_EVERYWHERE),  # models/shapes-teacher-fast: ~3x cheaper on a CPU
}


def build_unet(channels: tuple[int, int], heads: int, motion_heads: int, groups: int, blocks: tuple) -> UNetMotionModel:
    """A UNetMotionModel for the world's 8×8 latents (random weights from the current torch seed)."""
    unet2d = UNet2DConditionModel(
        sample_size=SIZE // 4, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, block_out_channels=channels,
        layers_per_block=1, norm_num_groups=groups, cross_attention_dim=TEXT_DIM, attention_head_dim=heads,
        down_block_types=blocks[0], up_block_types=blocks[1],
    )
    adapter = MotionAdapter(
        block_out_channels=channels, motion_layers_per_block=1, motion_norm_num_groups=groups,
        motion_num_attention_heads=motion_heads, motion_max_seq_length=32,
    )
    return UNetMotionModel.from_unet2d(unet2d, adapter)


def build_components(seed: int = 0, unet: str = "shipped") -> dict:
    """The teacher's architecture, randomly initialised (fixed seed)."""
    torch.manual_seed(seed)
    tokenizer = word_tokenizer(MAX_TOKENS)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=4 * TEXT_DIM, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=TEXT_DIM,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, block_out_channels=(32, 64, 64), layers_per_block=2,
        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        sample_size=SIZE,
    )
    denoiser = build_unet(*UNET_SPECS[unet])
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False, prediction_type="v_prediction",
        timestep_spacing="trailing", set_alpha_to_one=True,
    )
    return dict(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, unet=denoiser, scheduler=scheduler,
    )


def world_videos(count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """``count`` videos (N, F, 3, H, W) in [0, 1] on the CPU, with their prompts; deterministic by ``seed``."""
    scenes = sample_scenes(count, seed=seed)
    videos = render_batch(scenes, seeds=[seed * 1_000_003 + i for i in range(count)], num_frames=FRAMES, height=SIZE, width=SIZE)
    return videos, [describe(scene) for scene in scenes]


def render_dataset(count: int, tokenizer, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training set: videos in [-1, 1] (bf16, on ``device``) and their prompts' token ids."""
    videos, ids = [], []
    for chunk, start in enumerate(range(0, count, 1024)):
        batch, prompts = world_videos(min(1024, count - start), seed=chunk)
        videos.append((batch * 2 - 1).to(device, torch.bfloat16))
        ids.append(tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids)
    return torch.cat(videos), torch.cat(ids).to(device)


def train_vae(vae: AutoencoderKL, videos: torch.Tensor, steps: int, log) -> None:
    """Reconstruction + a tiny KL term on random frames of the training set."""
    vae.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    frames_all = videos.flatten(0, 1)
    generator = torch.Generator(videos.device).manual_seed(0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=1e-5)
    for step in range(steps):
        index = torch.randint(0, frames_all.shape[0], (512,), device=videos.device, generator=generator)
        frames = frames_all[index].float()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=videos.device.type == "cuda"):
            posterior = vae.encode(frames).latent_dist
            recon = vae.decode(posterior.sample(generator=generator)).sample
        loss = F.mse_loss(recon.float(), frames) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 500 == 0 or step == steps - 1:
            log({"phase": "vae", "step": step, "loss": loss.item()})
    vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_dataset(vae: AutoencoderKL, videos: torch.Tensor, keep_scale: bool = False) -> torch.Tensor:
    """Latents (N, C, F, h, w), scaled to unit variance (the scale is stored in the VAE config), or by the
    VAE's stored scale with ``keep_scale`` (a resumed or given trained VAE: its UNet saw latents at that scale)."""
    latents = []
    for start in range(0, videos.shape[0], 512):
        batch = videos[start : start + 512]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=videos.device.type == "cuda"):
            z = vae.encode(batch.flatten(0, 1).float()).latent_dist.mean
        latents.append(z.float().unflatten(0, (batch.shape[0], FRAMES)).permute(0, 2, 1, 3, 4).to(torch.bfloat16))
    latents = torch.cat(latents)
    scale = vae.config.scaling_factor if keep_scale else 1.0 / latents.float().std().item()
    vae.register_to_config(scaling_factor=scale)
    return latents * scale


@torch.no_grad()
def evaluate(components: dict, unet: UNetMotionModel, device: torch.device, count: int = 64, seed: int = 999) -> dict[str, float]:
    pipe = teacher_pipeline(components, unet)
    _, prompts = world_videos(count, seed=seed)
    generators = [torch.Generator(device).manual_seed(i) for i in range(count)]
    out = pipe(prompts, num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=20, guidance_scale=5.0,
               generator=generators, output_type="pt").frames
    scores = ShapesReward().score(out.float().cpu(), prompts)
    return {dim: float(values.mean()) for dim, values in scores.items()}


def compiled_or_eager(unet: UNetMotionModel, latents: torch.Tensor, ids: torch.Tensor, text_encoder, log):
    """``torch.compile(unet)`` if a training step through it works here, else the eager UNet."""
    compiled = torch.compile(unet)
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            text = text_encoder(ids[:8]).last_hidden_state
            out = compiled(latents[:8].float(), torch.full((8,), 500, device=latents.device), encoder_hidden_states=text.repeat_interleave(FRAMES, 0)).sample
        out.float().pow(2).mean().backward()
        unet.zero_grad(set_to_none=True), text_encoder.zero_grad(set_to_none=True)
        log({"phase": "compile", "ok": True})
        return compiled
    except Exception as exc:  # compile support varies across torch builds: training must go on regardless
        log({"phase": "compile", "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]})
        return unet


def save_checkpoint(path: Path, components: dict, ema: UNetMotionModel, optimizer, step: int, history: list, unet: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name in ("unet", "text_encoder", "vae"):
        save_file({k: v.detach().float().contiguous().cpu() for k, v in components[name].state_dict().items()}, str(path / f"{name}.safetensors"))
    save_file({k: v.detach().float().contiguous().cpu() for k, v in ema.state_dict().items()}, str(path / "ema_unet.safetensors"))
    opt_state = {f"{i}.{k}": v.detach().cpu().contiguous() for i, s in optimizer.state_dict()["state"].items() for k, v in s.items() if torch.is_tensor(v) and v.ndim > 0}
    save_file(opt_state, str(path / "optimizer.safetensors"))
    state = {"step": step, "history": history, "vae_scaling_factor": components["vae"].config.scaling_factor, "unet": unet}
    (path / "state.json").write_text(json.dumps(state))


def teacher_pipeline(components: dict, unet: UNetMotionModel) -> AnimateDiffPipeline:
    """The inference pipeline around ``unet`` (the EMA copy) and the other trained parts."""
    pipe = AnimateDiffPipeline(
        vae=components["vae"], text_encoder=components["text_encoder"], tokenizer=components["tokenizer"], unet=unet,
        motion_adapter=None, scheduler=components["scheduler"],
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def export_teacher(path: Path, components: dict, ema: UNetMotionModel) -> None:
    """A vipkit AnimateDiff model folder, written by the family's own ``save_parts`` (safetensors only)."""
    parts = ModelParts(
        unet=PrunableUNet(ema.float().cpu()), vae=components["vae"].float().cpu(),
        text_encoder=components["text_encoder"].float().cpu(), tokenizer=components["tokenizer"],
        scheduler=components["scheduler"],
    )
    settings = {"height": SIZE, "width": SIZE, "num_frames": FRAMES, "num_inference_steps": 20, "guidance_scale": 5.0,
                "negative_prompt": "", "dtype": "float32"}
    save_parts(path, parts, teacher_pipeline(components, ema), settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resume", type=Path)
    parser.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget for UNet training in this call")
    parser.add_argument("--videos", type=int, default=32768, help="training videos (encoded once)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-final", type=float, help="cosine-decay the learning rate to this by the end of this call")
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-count", type=int, default=64, help="freshly sampled prompts scored at each evaluation")
    parser.add_argument("--vae-steps", type=int, default=4000)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--export-only", action="store_true", help="write OUT/teacher from --resume's checkpoint and stop")
    parser.add_argument("--unet", choices=sorted(UNET_SPECS), default="shipped", help="UNet architecture (a resumed run keeps its own)")
    parser.add_argument("--init-from", type=Path, help="a trained teacher folder: start from its VAE and text encoder (no VAE training)")
    parser.add_argument("--distill-weight", type=float, default=0.0,
        help="also regress to the --init-from teacher's prediction (its own frozen text encoder), with this weight")
    args = parser.parse_args()
    if args.distill_weight and not args.init_from:
        parser.error("--distill-weight needs --init-from (the teacher to learn from)")
    if torch.cuda.is_available() and args.batch * LATENT_POSITIONS > CUDA_ATTENTION_BATCH_LIMIT:
        parser.error(f"--batch {args.batch} is too large for the GPU: the motion modules attend over "
                     f"batch x {LATENT_POSITIONS} latent positions, and CUDA's attention kernels take at most "
                     f"{CUDA_ATTENTION_BATCH_LIMIT:,} (--batch {CUDA_ATTENTION_BATCH_LIMIT // LATENT_POSITIONS} at most)")
    state = json.loads((args.resume / "state.json").read_text()) if args.resume else None
    architecture = state.get("unet", "shipped") if state else args.unet
    if args.export_only:
        components = build_components(unet=architecture)
        for name in ("text_encoder", "vae"):
            components[name].load_state_dict(load_file(str(args.resume / f"{name}.safetensors")))
        components["vae"].register_to_config(scaling_factor=state["vae_scaling_factor"])
        components["unet"].load_state_dict(load_file(str(args.resume / "ema_unet.safetensors")))
        export_teacher(args.out, components, components["unet"])
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.enable_cudnn_sdp(False)  # cuDNN attention backward fails on the GPU image (gpu-baseline.md)
    torch.backends.cuda.matmul.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = open(args.out / "train_log.jsonl", "a")

    def log(record: dict) -> None:
        record["time"] = round(time.time() - started, 1)
        print(json.dumps(record), flush=True)
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()

    started = time.time()
    components = build_components(unet=architecture)
    teacher = None
    if args.init_from:
        components["vae"] = AutoencoderKL.from_pretrained(args.init_from / "vae")
        components["text_encoder"] = CLIPTextModel.from_pretrained(args.init_from / "text_encoder")
        if args.distill_weight:
            teacher = dict(unet=UNetMotionModel.from_pretrained(args.init_from / "unet"), text_encoder=copy.deepcopy(components["text_encoder"]))
            for module in teacher.values():
                module.to(device).eval().requires_grad_(False)
    for name in ("text_encoder", "vae", "unet"):
        components[name].to(device)
    step, history = 0, []
    videos, ids = render_dataset(args.videos, components["tokenizer"], device)
    log({"phase": "data", "videos": list(videos.shape)})
    if state:
        step, history = state["step"], state["history"]
        for name in ("unet", "text_encoder", "vae"):
            components[name].load_state_dict(load_file(str(args.resume / f"{name}.safetensors")))
        components["vae"].register_to_config(scaling_factor=state["vae_scaling_factor"])
        components["vae"].eval().requires_grad_(False)
        log({"phase": "resume", "step": step})
    elif args.init_from:
        components["vae"].eval().requires_grad_(False)
    else:
        train_vae(components["vae"], videos, args.vae_steps, log)
    latents = encode_dataset(components["vae"], videos, keep_scale=state is not None or args.init_from is not None)
    del videos
    empty_ids = components["tokenizer"]([""], padding="max_length", max_length=MAX_TOKENS, return_tensors="pt").input_ids.to(device)
    log({"phase": "latents", "latents": list(latents.shape), "scaling_factor": components["vae"].config.scaling_factor})

    unet, text_encoder, scheduler = components["unet"], components["text_encoder"], components["scheduler"]
    ema = copy.deepcopy(unet).requires_grad_(False)
    if args.resume:
        ema.load_state_dict(load_file(str(args.resume / "ema_unet.safetensors")))
    params = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    if args.resume:
        saved = load_file(str(args.resume / "optimizer.safetensors"))
        # rebuild AdamW state from the saved tensors (step counts are restored from the global step)
        for i, p in enumerate(params):
            if f"{i}.exp_avg" in saved:
                optimizer.state[p] = {"step": torch.tensor(float(step)), "exp_avg": saved[f"{i}.exp_avg"].to(device), "exp_avg_sq": saved[f"{i}.exp_avg_sq"].to(device)}
    alphas = scheduler.alphas_cumprod.to(device)
    model = compiled_or_eager(unet, latents, ids, text_encoder, log) if args.compile else unet
    unet.train(), text_encoder.train()
    deadline = time.time() + args.minutes * 60
    generator = torch.Generator(device).manual_seed(step)
    while time.time() < deadline:
        index = torch.randint(0, latents.shape[0], (args.batch,), device=device, generator=generator)
        x0 = latents[index].float()
        token_ids = ids[index]
        drop = torch.rand(args.batch, device=device, generator=generator) < 0.1
        token_ids = torch.where(drop[:, None], empty_ids.expand_as(token_ids), token_ids)
        t = torch.randint(0, 1000, (args.batch,), device=device, generator=generator)
        noise = torch.randn(x0.shape, device=device, generator=generator)
        a = alphas[t].view(-1, 1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0
        lr = args.lr * min(1.0, (step + 1) / 500)
        if args.lr_final is not None:
            done = 1 - (deadline - time.time()) / (args.minutes * 60)
            lr = args.lr_final + (lr - args.lr_final) * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            text = text_encoder(token_ids).last_hidden_state
            pred = model(noisy, t, encoder_hidden_states=text.repeat_interleave(FRAMES, 0)).sample
            if teacher is not None:
                with torch.no_grad():
                    teacher_text = teacher["text_encoder"](token_ids).last_hidden_state.repeat_interleave(FRAMES, 0)
                    teacher_pred = teacher["unet"](noisy, t, encoder_hidden_states=teacher_text).sample
        loss = F.mse_loss(pred.float(), target)
        if teacher is not None:
            loss = loss + args.distill_weight * F.mse_loss(pred.float(), teacher_pred.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), unet.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        step += 1
        if step % 100 == 0:
            log({"phase": "unet", "step": step, "loss": loss.item(), "lr": lr})
        if step % args.eval_every == 0:
            unet.eval(), text_encoder.eval()
            scores = evaluate(components, ema, device, count=args.eval_count)
            unet.train(), text_encoder.train()
            history.append({"step": step, **scores})
            log({"phase": "eval", "step": step, **scores})
    unet.eval(), text_encoder.eval()
    scores = evaluate(components, ema, device, count=args.eval_count)
    history.append({"step": step, **scores})
    log({"phase": "eval", "step": step, **scores})
    save_checkpoint(args.out / "checkpoint", components, ema, optimizer, step, history, architecture)
    log({"phase": "done", "step": step})


if __name__ == "__main__":
    main()
