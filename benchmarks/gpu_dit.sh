#!/usr/bin/env bash
# benchmarks/gpu_dit.py in one GPU-machine call (device tool): installs the carried wheels (.whl: diffusers, pydantic
# and its dependencies) unless a call before did; findings go to $OUT/dit/dit.jsonl as they come.
#   bash benchmarks/gpu_dit.sh FAMILIES [gpu_dit.py args]      e.g. bash benchmarks/gpu_dit.sh wan --train-steps 3
set -euo pipefail
source benchmarks/gpu_env.sh
families=$1; shift
python3 benchmarks/gpu_dit.py --out "$OUT/dit" --families "$families" "$@"
