"""Generation speed at full AnimateDiff size: plain diffusers against vipkit's speed settings, for the teacher and
for pruned students, side by side in one process (issue 18, items 1 and 2).

The `animatediff` family's `random` preset (SD-1.5 UNet + motion adapter v1-5-2 built from their configs, random
weights, bf16; 512², 16 frames, 25 DDIM steps, CFG 7.5, one video per call), one prompt and seed throughout.
The rows, most important first (a run cut short still answers):

1. For the teacher, then each student (``--students``: that many of the 21 motion modules removed, evenly
   spaced): ``plain``, ``diffusers.AnimateDiffPipeline`` around the same components with its default attention
   processors and ``output_type="pt"`` (what a user calling diffusers gets), and ``best``, the family's
   ``generate`` with the model options of ``--best``. A 3-step teacher video of each is profiled (GPU time by kind
   of kernel). Then the teacher's plain pipeline in float32 (TF32 off): how far bf16 itself moves the video, the
   tolerance; each teacher row's distance to it comes after.
2. The breakdown: ``vipkit`` (the family's defaults) for every model, then the teacher with each of ``--levers``
   added in turn (the students too after the ``--student-rows`` levers): ``attention`` (cuDNN for the spatial
   layers, the efficient kernel for the motion modules: the fastest forward kernels of benchmarks/RESULTS.md §5),
   ``fuse`` (fused q/k/v projections), ``channels_last``, ``compile`` (regional torch.compile, mode "default"),
   ``max-autotune`` (mode "max-autotune-no-cudagraphs"). A row equal to ``best`` is not measured again.

Each row: seconds per video (median of ``--videos`` after a warm-up video; the warm-up's extra seconds are the
compilation), the UNet forward's milliseconds (CUDA events around every forward of the timed videos, median) and
its TFLOP/s (FLOPs counted on the meta device) against the measured bf16 matmul peak, the VAE decoder's
milliseconds, peak GPU memory, and how far the video and the final latents are from the same model's ``plain``
ones (max and mean |Δ| of the [0, 1] frames; ‖Δ‖/‖plain‖ of the latents). A student's row also says its latency
saving against the teacher's same row over its FLOPs saving (issue 18 item 2: goal ≥ 0.9).

    python benchmarks/gpu_generation_speed.py --out OUT                      # GPU, full size
    python benchmarks/gpu_generation_speed.py --out /tmp/gs --tiny           # the same code on the tiny preset, CPU

One JSON line per measurement, printed at once and appended to OUT/generation_speed.jsonl.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(ROOT / "benchmarks")]  # runs from a checkout

import torch  # noqa: E402
from diffusers import AnimateDiffPipeline  # noqa: E402
from diffusers.models.attention_processor import AttnProcessor2_0  # noqa: E402
from gpu_redpo_speed import kernel_time_by_kind  # noqa: E402

from vipkit.interfaces import VideoModel  # noqa: E402
from vipkit.measure import flops_by_module  # noqa: E402
from vipkit_animatediff import AnimateDiff  # noqa: E402

PROMPT = "a red fox running through fresh snow at sunrise"
SEED = 7
LEVERS: dict[str, dict[str, Any]] = {  # each lever's model options, added on top of the ones before it
    "attention": {"spatial_attention": "cudnn", "temporal_attention": "efficient"},
    "fuse": {"fuse_projections": True},
    "channels_last": {"generation_channels_last": True},
    "compile": {"generation_compile": "default"},
    "max-autotune": {"generation_compile": "max-autotune-no-cudagraphs"},
}


class Report:
    """Prints each finding as one JSON line at once and appends it to OUT/generation_speed.jsonl."""

    def __init__(self, out: Path) -> None:
        self.path = out / "generation_speed.jsonl"
        self.rows: list[dict[str, Any]] = []

    def __call__(self, record: dict[str, Any]) -> None:
        self.rows.append(record)
        line = json.dumps(record)
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_peak_tflops(size: int) -> float:
    """bf16 (CPU: float32) matrix-product rate on random data, mean of 10 after 3 warm-ups."""
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    a, b = (torch.randn(size, size, device="cuda" if cuda else "cpu", dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    sync()
    return 2 * size**3 * 10 / (time.perf_counter() - start) / 1e12


class EventTimer:
    """Milliseconds of every call of a module, from CUDA events recorded by forward hooks (wall clock on a CPU)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.pairs: list[tuple[Any, Any]] = []
        self.handles: list[Any] = []

    def _stamp(self) -> Any:
        if torch.cuda.is_available():
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def __enter__(self) -> EventTimer:
        self.handles = [
            self.module.register_forward_pre_hook(lambda *_: self.pairs.append((self._stamp(), None))),
            self.module.register_forward_hook(
                lambda *_: self.pairs.__setitem__(-1, (self.pairs[-1][0], self._stamp()))
            ),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def milliseconds(self) -> list[float]:
        sync()
        if torch.cuda.is_available():
            return [start.elapsed_time(end) for start, end in self.pairs]
        return [(end - start) * 1e3 for start, end in self.pairs]


def plain_pipeline(model: AnimateDiff) -> AnimateDiffPipeline:
    """What a diffusers user builds from the same components: default attention processors, the same sampler."""
    parts = model._parts
    unet = model.denoiser()
    unet.set_attn_processor(AttnProcessor2_0())
    scheduler = type(parts.scheduler).from_config(parts.scheduler.config)
    pipe = AnimateDiffPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=unet,
        motion_adapter=None,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def plain_call(pipe: AnimateDiffPipeline, settings: dict[str, Any]) -> Callable[[], tuple[Any, Any]]:
    """One plain-diffusers video as (frames (1, F, 3, H, W) in [0, 1], final latents)."""

    def call() -> tuple[Any, Any]:
        final: dict[str, Any] = {}

        def keep(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            final["latents"] = tensors["latents"]
            return tensors

        frames = pipe(
            prompt=PROMPT,
            height=settings["height"],
            width=settings["width"],
            num_frames=settings["num_frames"],
            num_inference_steps=settings["num_inference_steps"],
            guidance_scale=settings["guidance_scale"],
            generator=[torch.Generator().manual_seed(SEED)],
            output_type="pt",
            callback_on_step_end=keep,
        ).frames
        return frames, final["latents"]

    return call


def vipkit_call(model: AnimateDiff) -> Callable[[], tuple[Any, Any]]:
    def call() -> tuple[Any, Any]:
        generation = model.generate([PROMPT], [SEED])
        return generation.videos, generation.latents

    return call


def variant(model: AnimateDiff, options: dict[str, Any]) -> AnimateDiff:
    """The same model (its very UNet, VAE and text encoder) under other options: a new family object over its parts."""
    clone = type(model).__new__(type(model))
    VideoModel.__init__(clone, type(model).Config(**{**model.config.model_dump(), **options}))
    clone._attach(model._parts)
    return clone


def difference(video: Any, latents: Any, reference: dict[str, Any] | None) -> dict[str, float]:
    if reference is None:
        return {}
    video, latents = video.float().cpu(), latents.float().cpu()
    ref_video, ref_latents = reference["video"], reference["latents"]
    delta = (video.reshape(ref_video.shape) - ref_video).abs()
    return {
        "video_max_abs_diff": round(delta.max().item(), 5),
        "video_mean_abs_diff": round(delta.mean().item(), 6),
        "latents_rel_diff": round(((latents - ref_latents).norm() / ref_latents.norm()).item(), 6),
    }


def measure(
    call: Callable[[], tuple[Any, Any]], model: AnimateDiff, videos: int, reference: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Seconds per video after a warm-up, UNet and decoder milliseconds, peak memory, and the output's distance from
    ``reference``; also returns this row's first video and latents."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    sync()
    started = time.perf_counter()
    call()  # warm-up: compilation, allocator growth, lazy kernels
    sync()
    warm_up = time.perf_counter() - started
    seconds, outputs = [], None
    with EventTimer(model.denoiser()) as unet, EventTimer(model._parts.vae.decoder) as decoder:
        for _ in range(videos):
            started = time.perf_counter()
            result = call()
            sync()
            seconds.append(time.perf_counter() - started)
            outputs = outputs or result
    per_video = statistics.median(seconds)
    video, latents = outputs
    row = {
        "s_per_video": round(per_video, 3),
        "s_per_video_all": [round(s, 3) for s in seconds],
        "compile_s": round(max(warm_up - per_video, 0.0), 1),
        "unet_ms": round(statistics.median(unet.milliseconds()), 2),
        "decoder_ms_per_video": round(sum(decoder.milliseconds()) / videos, 1),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        **difference(video, latents, reference),
    }
    return row, {"video": video.float().cpu(), "latents": latents.float().cpu()}


def evenly_spaced(names: list[str], count: int) -> list[str]:
    """``count`` of ``names`` spread over the depth (first and last included when ``count`` > 1)."""
    if count <= 0:
        return []
    if count == 1:
        return [names[len(names) // 2]]
    return [names[round(i * (len(names) - 1) / (count - 1))] for i in range(count)]


@contextmanager
def fp32_matmuls() -> Iterator[None]:
    """Plain float32 arithmetic (no TF32) in matrix products and convolutions, for the reference video."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def float32_reference(model: AnimateDiff, reference: dict[str, Any]) -> dict[str, Any]:
    """The teacher's plain pipeline with float32 copies of every part: how far bf16 itself moves the video (and,
    under "outputs", the float32 video and latents)."""
    parts = model._parts
    pipe = AnimateDiffPipeline(
        vae=copy.deepcopy(parts.vae).float(),
        text_encoder=copy.deepcopy(parts.text_encoder).float(),
        tokenizer=parts.tokenizer,
        unet=copy.deepcopy(model.denoiser()).float(),
        motion_adapter=None,
        scheduler=type(parts.scheduler).from_config(parts.scheduler.config),
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    with fp32_matmuls():
        started = time.perf_counter()
        video, latents = plain_call(pipe, model.generation_settings)()
        sync()
    row = {"s_per_video": round(time.perf_counter() - started, 2), **difference(video, latents, reference)}
    del pipe
    return {**row, "outputs": {"video": video.float().cpu(), "latents": latents.float().cpu()}}


def profile_video(call: Callable[[], tuple[Any, Any]]) -> dict[str, Any]:
    """GPU time by kind of kernel over one (short) video after a warm-up one, and how much of the wall time the
    GPU was busy."""
    call()
    sync()
    with torch.profiler.profile(activities=torch.profiler.supported_activities()) as profile:
        started = time.perf_counter()
        call()
        sync()
        wall_ms = (time.perf_counter() - started) * 1e3
    found = kernel_time_by_kind(profile)
    return {**found, "wall_ms": round(wall_ms, 1), "gpu_busy": round(found["gpu_ms"] / wall_ms, 3)}


def lever_options(levers: list[str]) -> dict[str, Any]:
    """The model options of ``levers`` applied in order (a later lever's value wins)."""
    options: dict[str, Any] = {}
    for lever in levers:
        options.update(LEVERS[lever])
    return options


def lever_list(text: str, parser: argparse.ArgumentParser) -> list[str]:
    levers = [lever for lever in text.split(",") if lever]
    unknown = [lever for lever in levers if lever not in LEVERS]
    if unknown:
        parser.error(f"unknown levers {unknown}; known: {', '.join(LEVERS)}")
    return levers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--videos", type=int, default=3, help="timed videos per row, after one warm-up video")
    parser.add_argument("--breakdown-videos", type=int, default=2, help="timed videos per row of the breakdown")
    parser.add_argument(
        "--best",
        default="attention,fuse,channels_last,compile",
        help=f"the levers of the 'best' row, of {', '.join(LEVERS)}",
    )
    parser.add_argument(
        "--levers",
        default="attention,fuse,channels_last,compile",
        help="the breakdown: levers added one by one to the teacher's default vipkit row",
    )
    parser.add_argument(
        "--students", default="8,15", help="motion modules removed (of 21) per student, comma-separated"
    )
    parser.add_argument("--student-rows", default="", help="breakdown levers after which the students get a row too")
    parser.add_argument("--no-fp32", action="store_true", help="skip the float32 reference video")
    parser.add_argument("--tiny", action="store_true", help="the tiny preset on the CPU (a check of this script)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out)
    best, levers = lever_list(args.best, parser), lever_list(args.levers, parser)
    options = (
        {"preset": "tiny", "generation_batch_size": 1, "num_inference_steps": 3}  # a quick check of the code
        if args.tiny
        else {"preset": "random", "device": "cuda", "dtype": "bfloat16", "generation_batch_size": 1}
    )
    import diffusers

    peak = matmul_peak_tflops(512 if args.tiny else 8192)
    report(
        {
            "date": time.strftime("%Y-%m-%d"),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "matmul_peak_tflops": round(peak, 3),
            "best": best,
            "levers": levers,
        }
    )
    started = time.perf_counter()
    teacher = AnimateDiff(AnimateDiff.Config(**options))
    settings = teacher.generation_settings
    motion = [block.name for block in teacher.blocks_of(["motion_module"])]
    models: dict[str, AnimateDiff] = {"teacher": teacher}
    for count in [int(c) for c in args.students.split(",") if c]:
        student = teacher.copy()
        removed = evenly_spaced(motion, min(count, len(motion) - 1))  # the tiny preset has fewer
        for name in removed:
            student.remove_block(name)
        models.setdefault(f"-{len(removed)} motion modules", student)
    flops = {name: flops_by_module(model)[""] for name, model in models.items()}  # one UNet call, CFG batch of 2
    report(
        {
            "built_s": round(time.perf_counter() - started, 1),
            "settings": settings,
            "motion_modules": len(motion),
            "unet_tflop_per_call": {name: round(f / 1e12, 3) for name, f in flops.items()},
            "unet_parameters": {name: model.num_parameters() for name, model in models.items()},
        }
    )
    references: dict[str, dict[str, Any]] = {}  # each model's plain video
    kept: dict[str, dict[str, Any]] = {}  # the teacher's outputs per row, for the distance to float32
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def run_row(name: str, label: str, call: Callable[[], tuple[Any, Any]], videos: int) -> None:
        model = models[name]
        try:
            row, outputs = measure(call, model, videos, references.get(name))
        except Exception as exc:  # a lever that fails here is a finding: report it and go on
            report({"model": name, "row": label, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"})
            return
        references.setdefault(name, outputs)
        if name == "teacher":
            kept[label] = outputs
        row["unet_tflops"] = round(flops[name] / row["unet_ms"] / 1e9, 3)
        row["unet_fraction_of_peak"] = round(row["unet_tflops"] / peak, 3)
        plain = rows.get((name, "plain"))
        if plain:
            row["speedup_vs_plain"] = round(plain["s_per_video"] / row["s_per_video"], 3)
            row["unet_speedup_vs_plain"] = round(plain["unet_ms"] / row["unet_ms"], 3)
        teacher_row = rows.get(("teacher", label))
        if name != "teacher" and teacher_row:  # pruning into wall-clock: latency saving over FLOPs saving
            flops_saving = 1 - flops[name] / flops["teacher"]
            row["flops_saving"] = round(flops_saving, 4)
            for key, what in (("s_per_video", "video"), ("unet_ms", "unet")):
                saving = 1 - row[key] / teacher_row[key]
                row[f"{what}_saving"] = round(saving, 4)
                row[f"{what}_saving_over_flops_saving"] = round(saving / flops_saving, 3)
        rows[(name, label)] = row
        report({"model": name, "row": label, **row})

    def vipkit_row(name: str, label: str, chosen: list[str], videos: int) -> None:
        run_row(name, label, vipkit_call(variant(models[name], lever_options(chosen))), videos)

    def profile(label: str, call: Callable[[], tuple[Any, Any]]) -> None:
        if torch.cuda.is_available():
            try:
                report({"model": "teacher", "profile": label, "steps": 3, **profile_video(call)})
            except Exception as exc:
                report({"model": "teacher", "profile": label, "error": f"{type(exc).__name__}: {exc}"[:400]})

    short = {**settings, "num_inference_steps": 3}
    # 1. The answer first: plain diffusers against vipkit's best, teacher then students, and the float32 tolerance.
    for name in models:
        run_row(name, "plain", plain_call(plain_pipeline(models[name]), settings), args.videos)
        vipkit_row(name, "best", best, args.videos)
        if name == "teacher":
            profile("best", vipkit_call(variant(teacher, {**lever_options(best), "num_inference_steps": 3})))
            profile("plain", plain_call(plain_pipeline(teacher), short))
    if not args.no_fp32:
        fp32 = float32_reference(teacher, references["teacher"])
        kept_fp32 = fp32.pop("outputs")
        report({"model": "teacher", "row": "plain float32", **fp32})
        for label, outputs in kept.items():  # how far each bf16 row is from the float32 video
            report(
                {"model": "teacher", "row": label, "vs": "plain float32", **difference(**outputs, reference=kept_fp32)}
            )
    # 2. Where the gain comes from: vipkit's defaults, then each lever added in turn (students where asked).
    for name in models:
        vipkit_row(name, "vipkit", [], args.breakdown_videos)
    for count, lever in enumerate(levers, start=1):
        chosen = levers[:count]
        if lever_options(chosen) == lever_options(best):
            continue  # measured above as "best"
        for name in models:
            if name == "teacher" or lever in args.student_rows.split(","):
                vipkit_row(name, "+" + lever, chosen, args.breakdown_videos)

    summary = {f"{name} | {label}": row for (name, label), row in rows.items()}
    (args.out / "generation_speed.json").write_text(
        json.dumps({"flops": flops, "matmul_peak_tflops": peak, "rows": summary}, indent=1)
    )
    print("\nmodel | row | s/video | x plain | UNet ms | TFLOP/s | of peak | max|Δ| video | compile s", flush=True)
    for (name, label), row in rows.items():
        print(
            f"{name} | {label} | {row['s_per_video']} | {row.get('speedup_vs_plain', '')} | {row['unet_ms']} | "
            f"{row['unet_tflops']} | {row['unet_fraction_of_peak']} | {row.get('video_max_abs_diff', '')} | "
            f"{row['compile_s']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
