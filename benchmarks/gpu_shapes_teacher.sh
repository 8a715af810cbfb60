#!/usr/bin/env bash
# One GPU call of shapes-teacher training (python -m vipkit_shapes.train_teacher, device tool): installs the
# carried wheels (.whl: diffusers, pydantic), trains for MINUTES, resuming from RESUME (a checkpoint folder) when
# given, then exports the checkpoint's EMA teacher. The device tool returns at most 8 files of 16 MiB, 64 MiB in all
# (a Wan teacher's VAE alone is 18 MB), so results under $OUT are train_log.jsonl, teacher.tar.part-* (the exported
# folder, tar split into 15 MiB parts) and, when both fit in 60 MiB, checkpoint.tar.part-* (the checkpoint, to
# --resume from; the Wan teacher's does not fit: train it further with --init-from TEACHER --init-denoiser). Here:
#   cat DIR/teacher.tar.part-* | tar -x -C DEST      (DEST/teacher: the model folder; the same for checkpoint)
# The checkpoint is rewritten after every evaluation, so a call killed by the device's limit still leaves the last one.
#   bash benchmarks/gpu_shapes_teacher.sh MINUTES [RESUME_DIR] [extra args...]
#   e.g. bash benchmarks/gpu_shapes_teacher.sh 8 --init-from models/shapes-wan-teacher --init-denoiser --batch 1024
set -euo pipefail
source benchmarks/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
minutes=$1; shift
resume=()
if [ $# -gt 0 ] && [ -d "$1" ]; then resume=(--resume "$1"); shift; fi
python3 -m vipkit_shapes.train_teacher --out /tmp/train --minutes "$minutes" "${resume[@]}" "$@"
cp /tmp/train/train_log.jsonl "$OUT/"
python3 -m vipkit_shapes.train_teacher --export-only --resume /tmp/train/checkpoint --out /tmp/export/teacher
tar -cf /tmp/teacher.tar -C /tmp/export teacher
tar -cf /tmp/checkpoint.tar -C /tmp/train checkpoint
split -b 15M /tmp/teacher.tar "$OUT/teacher.tar.part-"
if [ $(($(stat -c %s /tmp/teacher.tar) + $(stat -c %s /tmp/checkpoint.tar))) -le $((60 * 1024 * 1024)) ]; then
  split -b 15M /tmp/checkpoint.tar "$OUT/checkpoint.tar.part-"
else
  echo "the checkpoint ($(du -h /tmp/checkpoint.tar | cut -f1)) does not fit beside the teacher in what the device tool returns: left out"
fi
ls -la "$OUT"
