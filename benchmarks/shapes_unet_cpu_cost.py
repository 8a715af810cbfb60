"""CPU cost of candidate shapes-world teacher UNets: what generating 16 videos (8 frames, 20 guided steps) would take.

Random weights (speed does not depend on them); one guided step of 8 videos is one UNet forward on
16 latents (conditional + unconditional) of 8 frames at 8×8, the shipped teacher's shapes. Prints the
best of 4 forwards, times 40 (two chunks of 8 videos × 20 steps).

    python benchmarks/shapes_unet_cpu_cost.py
"""

from __future__ import annotations

import time

import torch

from vipkit_shapes.teacher_model import ATTENTION_EVERYWHERE, UNET_SPECS, build_unet

ATTENTION_AT_4X4 = (
    ("DownBlock2D", "CrossAttnDownBlock2D"),
    ("CrossAttnUpBlock2D", "UpBlock2D"),
)  # no spatial attention at 8x8
VARIANTS = {  # label: (channels, spatial heads, motion heads, norm groups, block types)
    "shipped: channels (32, 64), 16 spatial heads (head dim 2), 4 motion heads": UNET_SPECS["shipped"],
    "(32, 64), 1 head everywhere": ((32, 64), 1, 1, 16, ATTENTION_EVERYWHERE),
    "(32, 64), 1 head, no spatial transformer at 8x8": ((32, 64), 1, 1, 16, ATTENTION_AT_4X4),
    "(24, 48), 1 head, 8 groups, no spatial transformer at 8x8": ((24, 48), 1, 1, 8, ATTENTION_AT_4X4),
    "(16, 32), 1 head, 8 groups (train_teacher --unet fast)": UNET_SPECS["fast"],
}


def main() -> None:
    torch.set_num_threads(2)
    latents, text = torch.randn(16, 8, 8, 8, 8), torch.randn(16 * 8, 24, 64)
    print("| UNet variant | parameters | s for 16 videos x 20 steps |\n|---|---|---|")
    for label, spec in VARIANTS.items():
        torch.manual_seed(0)
        unet = build_unet(*spec).eval()
        times = []
        with torch.inference_mode():
            for _ in range(5):
                start = time.perf_counter()
                unet(latents, torch.tensor(500), encoder_hidden_states=text)
                times.append(time.perf_counter() - start)
        print(f"| {label} | {sum(p.numel() for p in unet.parameters()):,} | {min(times[1:]) * 40:.1f} |", flush=True)


if __name__ == "__main__":
    main()
