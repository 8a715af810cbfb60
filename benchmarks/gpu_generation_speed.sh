#!/usr/bin/env bash
# benchmarks/gpu_generation_speed.py in one GPU-machine call (device tool): installs the carried wheels (.whl: diffusers,
# pydantic and its dependencies) unless a call before did; findings go to $OUT/speed/generation_speed.jsonl as they come.
#   bash benchmarks/gpu_generation_speed.sh [gpu_generation_speed.py args]      e.g. bash benchmarks/gpu_generation_speed.sh --videos 3
set -euo pipefail
source benchmarks/gpu_env.sh
python3 benchmarks/gpu_generation_speed.py --out "$OUT/speed" "$@"
