#!/usr/bin/env bash
# One GPU call of shapes-teacher training (python -m vipkit_shapes.train_teacher, device tool): installs the
# carried wheels (.whl: diffusers, pydantic), then trains for MINUTES, resuming from RESUME (a checkpoint
# folder) when given. Results under $OUT.
#   bash benchmarks/gpu_shapes_teacher.sh MINUTES [RESUME_DIR] [extra args...]
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD:$PWD/plugins PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
minutes=$1; shift
resume=()
if [ $# -gt 0 ] && [ -d "$1" ]; then resume=(--resume "$1"); shift; fi
python3 -m vipkit_shapes.train_teacher --out "$OUT" --minutes "$minutes" "${resume[@]}" "$@"
