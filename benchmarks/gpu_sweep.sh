#!/usr/bin/env bash
# Sweeps on the GPU machine in one device call (benchmarks/RESULTS.md §17): `vipkit sweep FILE --jobs JOBS` for every
# sweep file side by side (each JOBS runs at a time, every run in a process of its own sharing the GPU), all of them
# stopped cleanly (SIGTERM) MINUTES after the start. Under $OUT: NAME.log per sweep (every line), and sweeps.tar.part-* (15 MiB parts:
# the device tool returns at most 8 files of 16 MiB): each sweep's sweep.json/md/csv and plots, and of each finished
# run its records (results.json, report.md, recipe.toml, resolved.json, prune.json and stage.json of each stage) and
# its GIFs, without models, checkpoints or caches, which stay on the machine. Here: cat DIR/sweeps.tar.part-* | tar -x
#   bash benchmarks/gpu_sweep.sh MINUTES JOBS SWEEP_FILE...
#   e.g. bash benchmarks/gpu_sweep.sh 9 14 benchmarks/sweeps/shapes_ablations.toml   (16 CPU cores: 14-16 processes)
set -euo pipefail
source benchmarks/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
minutes=$1 jobs=$2
shift 2
mkdir -p /tmp/sweeps
for file in "$@"; do
  name=$(basename "$file" .toml)
  echo "== $name ($(date -u +%H:%M:%S))"
  # side by side; the runs' own lines ("  [variant seed N] ...") go to the log only, the sweeps' lines here too
  (timeout -s TERM -k 90 "$((${minutes%.*} * 60))" python3 -m vipkit sweep "$file" --out "/tmp/sweeps/$name" \
    --jobs "$jobs" > "$OUT/$name.log" 2>&1 || echo "$name: vipkit sweep exited with $?") &
done
sleep 1
tail -q -n +1 -F "$OUT"/*.log 2>/dev/null | grep --line-buffered -v '^ *\[' &
wait $(jobs -p | head -n "$#")
sleep 1
kill %$(($# + 1)) 2>/dev/null || true
cd /tmp/sweeps
find . -maxdepth 1 -mindepth 1 -type d -printf '%f\n' | while read -r sweep; do
  find "$sweep" -maxdepth 1 -type f
  for run in "$sweep"/runs/*/seed-*; do
    [ -f "$run/results.json" ] || continue
    find "$run" -maxdepth 1 -type f
    find "$run/stages" -name prune.json -o -name stage.json
    find "$run/samples" -name '*.gif'
  done
done > /tmp/sweep-files.txt
tar -c -T /tmp/sweep-files.txt | split -b 15M - "$OUT/sweeps.tar.part-"
echo "packed $(wc -l < /tmp/sweep-files.txt) files: $(du -ch "$OUT"/sweeps.tar.part-* | tail -n 1)"
