"""Which scaled-dot-product-attention kernel is fastest on the attention shapes of a full AnimateDiff ReDPO step.

One pair is two 16-frame videos of 64×64 latents: the spatial layers see 32 images, the motion modules
B·H·W sequences of 16 frames. Each shape is timed forward only (the frozen teacher) and forward plus
backward (the student) with every backend that accepts it, in bf16; ``layers`` is how many such
attention calls one UNet forward makes, so ``weighted_ms`` estimates the attention time per UNet pass.

    python benchmarks/gpu_sdpa_kernels.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
# name: (batch, heads, query length, key length, head dim, calls per UNet forward)
SHAPES = {
    "spatial self 64x64": (32, 8, 4096, 4096, 40, 5),
    "spatial cross 64x64": (32, 8, 4096, 77, 40, 5),
    "spatial self 32x32": (32, 8, 1024, 1024, 80, 5),
    "spatial cross 32x32": (32, 8, 1024, 77, 80, 5),
    "spatial self 16x16": (32, 8, 256, 256, 160, 5),
    "temporal 64x64": (8192, 8, 16, 16, 40, 10),
    "temporal 32x32": (2048, 8, 16, 16, 80, 10),
    "temporal 16x16": (512, 8, 16, 16, 160, 10),
}


def median_ms(fn, repeats: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_shape(batch: int, heads: int, q_len: int, k_len: int, dim: int, backend: SDPBackend) -> dict:
    options = dict(device="cuda", dtype=torch.bfloat16)
    q = torch.randn(batch, heads, q_len, dim, **options, requires_grad=True)
    k = torch.randn(batch, heads, k_len, dim, **options, requires_grad=True)
    v = torch.randn(batch, heads, k_len, dim, **options, requires_grad=True)
    grad = torch.randn(batch, heads, q_len, dim, **options)
    with torch.no_grad():  # float32 with the default kernel choice (flash and cuDNN take only 16-bit inputs)
        reference = (
            F.scaled_dot_product_attention(q.float(), k.float(), v.float())
            if batch * heads * q_len * k_len < 2**31
            else None
        )
    with sdpa_kernel([backend]):
        with torch.no_grad():
            forward = median_ms(lambda: F.scaled_dot_product_attention(q, k, v))

        def train() -> None:
            F.scaled_dot_product_attention(q, k, v).backward(grad)

        both = median_ms(train)
        with torch.no_grad():
            error = (
                None
                if reference is None
                else float((F.scaled_dot_product_attention(q, k, v).float() - reference).abs().max())
            )
    return {"forward_ms": round(forward, 3), "forward_backward_ms": round(both, 3), "max_abs_error_vs_fp32": error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for shape_name, (batch, heads, q_len, k_len, dim, layers) in SHAPES.items():
        for backend_name, backend in BACKENDS.items():
            if backend_name == "math" and q_len * k_len * batch * heads > 2**31:
                continue  # the math backend materialises the score matrix: tens of GB
            row = {"shape": shape_name, "backend": backend_name, "layers": layers}
            try:
                row |= time_shape(batch, heads, q_len, k_len, dim, backend)
                row["weighted_ms"] = {
                    "teacher_forward": round(row["forward_ms"] * layers, 2),
                    "student_forward_backward": round(row["forward_backward_ms"] * layers, 2),
                }
            except RuntimeError as exc:
                row["error"] = str(exc).splitlines()[0][:200]
            torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), flush=True)
            (args.out / "sdpa_kernels.json").write_text(
                json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, indent=1)
            )


if __name__ == "__main__":
    main()
