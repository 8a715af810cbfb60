#!/usr/bin/env bash
# benchmarks/gpu_dit.py in one GPU-machine call (device tool): installs the carried wheels (.whl: diffusers, pydantic
# and its dependencies) unless a call before did; findings go to $OUT/dit/dit.jsonl as they come.
#   bash benchmarks/gpu_dit.sh FAMILIES [gpu_dit.py args]      e.g. bash benchmarks/gpu_dit.sh wan --train-steps 3
set -euo pipefail
[ -d /tmp/site/diffusers ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD:$PWD/plugins PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
families=$1; shift
python3 benchmarks/gpu_dit.py --out "$OUT/dit" --families "$families" "$@"
