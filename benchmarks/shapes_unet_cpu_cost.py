"""CPU cost of candidate shapes-world teacher UNets: what generating 16 videos (8 frames, 20 guided steps) would take.

Random weights (speed does not depend on them); one guided step of 8 videos is one UNet forward on
16 latents (conditional + unconditional) of 8 frames at 8×8, the shipped teacher's shapes. Prints the
best of 4 forwards, times 40 (two chunks of 8 videos × 20 steps).

    python benchmarks/shapes_unet_cpu_cost.py
"""

from __future__ import annotations

import time

import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

ATTENTION_EVERYWHERE = (("CrossAttnDownBlock2D",) * 2, ("CrossAttnUpBlock2D",) * 2)
ATTENTION_AT_4X4 = (("DownBlock2D", "CrossAttnDownBlock2D"), ("CrossAttnUpBlock2D", "UpBlock2D"))
VARIANTS = {  # label: (channels, spatial heads, motion heads, norm groups, block types)
    "shipped: channels (32, 64), 16 spatial heads (head dim 2), 4 motion heads": ((32, 64), 16, 4, 16, ATTENTION_EVERYWHERE),
    "(32, 64), 1 head everywhere": ((32, 64), 1, 1, 16, ATTENTION_EVERYWHERE),
    "(32, 64), 1 head, no spatial transformer at 8x8": ((32, 64), 1, 1, 16, ATTENTION_AT_4X4),
    "(24, 48), 1 head, 8 groups, no spatial transformer at 8x8": ((24, 48), 1, 1, 8, ATTENTION_AT_4X4),
    "(16, 32), 1 head, 8 groups": ((16, 32), 1, 1, 8, ATTENTION_EVERYWHERE),
}


def build(channels: tuple[int, int], heads: int, motion_heads: int, groups: int, blocks: tuple) -> UNetMotionModel:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=8, out_channels=8, block_out_channels=channels, layers_per_block=1, norm_num_groups=groups,
        cross_attention_dim=64, attention_head_dim=heads, down_block_types=blocks[0], up_block_types=blocks[1],
    )
    adapter = MotionAdapter(
        block_out_channels=channels, motion_layers_per_block=1, motion_norm_num_groups=groups,
        motion_num_attention_heads=motion_heads, motion_max_seq_length=32,
    )
    return UNetMotionModel.from_unet2d(unet, adapter).eval()


def main() -> None:
    torch.set_num_threads(2)
    latents, text = torch.randn(16, 8, 8, 8, 8), torch.randn(16 * 8, 24, 64)
    print("| UNet variant | parameters | s for 16 videos x 20 steps |\n|---|---|---|")
    for label, spec in VARIANTS.items():
        unet = build(*spec)
        times = []
        with torch.inference_mode():
            for _ in range(5):
                start = time.perf_counter()
                unet(latents, torch.tensor(500), encoder_hidden_states=text)
                times.append(time.perf_counter() - start)
        print(f"| {label} | {sum(p.numel() for p in unet.parameters()):,} | {min(times[1:]) * 40:.1f} |", flush=True)


if __name__ == "__main__":
    main()
