#!/usr/bin/env bash
# One GPU call of shapes-teacher training (python -m vipkit_shapes.train_teacher, device tool): installs the
# carried wheels (.whl: diffusers, pydantic), trains for MINUTES, resuming from RESUME (a checkpoint folder) when
# given, then exports the checkpoint's EMA teacher. Results under $OUT: checkpoint/ (6 files), train_log.jsonl and
# teacher.tar (the exported model folder as one file: the device tool returns files at most 2 folders down). Write
# nothing else under $OUT: on 2026-12-01 the device tool returned 8 files and left a ninth, checkpoint/vae.safetensors,
# out, and a checkpoint without it cannot be resumed. The checkpoint is rewritten after every evaluation, so a call
# killed by the device's limit still leaves the last one.
#   bash benchmarks/gpu_shapes_teacher.sh MINUTES [RESUME_DIR] [extra args...]
#   e.g. bash benchmarks/gpu_shapes_teacher.sh 0 --architecture wan --vae-steps 4000 --vae-minutes 8  (VAE only)
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD:$PWD/plugins PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
minutes=$1; shift
resume=()
if [ $# -gt 0 ] && [ -d "$1" ]; then resume=(--resume "$1"); shift; fi
python3 -m vipkit_shapes.train_teacher --out "$OUT" --minutes "$minutes" "${resume[@]}" "$@"
python3 -m vipkit_shapes.train_teacher --export-only --resume "$OUT/checkpoint" --out /tmp/teacher
tar -cf "$OUT/teacher.tar" -C /tmp teacher
