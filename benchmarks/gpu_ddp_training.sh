#!/usr/bin/env bash
# One GPU-machine call (device tool, kind nvidia-h200-x2 or larger): installs the carried wheels (.whl: diffusers,
# pydantic), then times ReDPO training steps of the shapes teacher on 1 GPU and on N GPUs (DDP, same global
# batch) and compares the trained weights. Results under $OUT.
#   bash benchmarks/gpu_ddp_training.sh [N_GPUS] [extra args for ddp_training.py, e.g. --batch-size 16]
set -euo pipefail
source benchmarks/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
gpus=${1:-2}; shift || true
python3 benchmarks/ddp_training.py --out "$OUT" "$@"
python3 -m torch.distributed.run --standalone --nproc_per_node "$gpus" benchmarks/ddp_training.py --out "$OUT" "$@"
python3 benchmarks/ddp_training.py --compare "$OUT" | tee "$OUT/compare.jsonl"
