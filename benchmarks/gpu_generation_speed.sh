#!/usr/bin/env bash
# benchmarks/gpu_generation_speed.py in one GPU-machine call (device tool): installs the carried wheels (.whl: diffusers,
# pydantic and its dependencies) unless a call before did; findings go to $OUT/speed/generation_speed.jsonl as they come.
#   bash benchmarks/gpu_generation_speed.sh [gpu_generation_speed.py args]      e.g. bash benchmarks/gpu_generation_speed.sh --videos 3
set -euo pipefail
[ -d /tmp/site/diffusers ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD:$PWD/plugins PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 benchmarks/gpu_generation_speed.py --out "$OUT/speed" "$@"
