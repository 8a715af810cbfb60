#!/usr/bin/env bash
# One GPU call training several shapes-teacher VAEs side by side (one process each, sharing the GPU), to choose the
# VAE of a teacher before its denoiser is trained (benchmarks/RESULTS.md §14): each process is
# `python -m vipkit_shapes.train_teacher --minutes 0 --vae-config CONFIG` for VAE_MINUTES. Results under $OUT: vae-N.jsonl
# (each one's log: the last line before "latents" is its `vae_check`) and best.tar.part-* (the exported teacher folder,
# untrained denoiser, of the VAE with the lowest `vae_check` mse, tar split into 15 MiB parts: the device tool returns
# at most 8 files of 16 MiB, and a base-32 Wan VAE is 18 MB; a later call starts from it with --init-from). Here:
#   cat DIR/best.tar.part-* | tar -x -C DEST      (DEST/teacher). At most 4 configs.
#   bash benchmarks/gpu_shapes_vae_variants.sh ARCHITECTURE VAE_MINUTES CONFIG... [-- extra train_teacher args]
#   e.g. bash benchmarks/gpu_shapes_vae_variants.sh wan 7.5 '{"base_dim": 32}' '{"num_res_blocks": 2}'
set -euo pipefail
source benchmarks/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
architecture=$1 minutes=$2
shift 2
configs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do configs+=("$1"); shift; done
[ $# -gt 0 ] && shift
for i in "${!configs[@]}"; do
  python3 -m vipkit_shapes.train_teacher --out "/tmp/vae-$i" --architecture "$architecture" --minutes 0 \
    --vae-steps 1000000 --vae-minutes "$minutes" --vae-config "${configs[$i]}" "$@" > "/tmp/vae-$i.out" 2>&1 &
done
wait
logs=()
for i in "${!configs[@]}"; do
  echo "vae-$i ${configs[$i]}: $(grep '"phase": "vae_check"' "/tmp/vae-$i/train_log.jsonl" || tail -n 5 "/tmp/vae-$i.out")"
  grep '"phase": "vae"' "/tmp/vae-$i/train_log.jsonl" | tail -n 2
  cp "/tmp/vae-$i/train_log.jsonl" "$OUT/vae-$i.jsonl"
  logs+=("$OUT/vae-$i.jsonl")
done
best=$(python3 -c '
import json, sys
checks = {}
for i, path in enumerate(sys.argv[1:]):
    for line in open(path):
        record = json.loads(line)
        if record["phase"] == "vae_check":
            checks[i] = record["mse"]
print(min(checks, key=checks.get))' "${logs[@]}")
echo "best: vae-$best ${configs[$best]}"
python3 -m vipkit_shapes.train_teacher --export-only --resume "/tmp/vae-$best/checkpoint" --out /tmp/best/teacher
tar -cf /tmp/best.tar -C /tmp/best teacher
split -b 15M /tmp/best.tar "$OUT/best.tar.part-"
