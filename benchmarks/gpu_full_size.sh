#!/usr/bin/env bash
# A shipped paper recipe at real size with random weights on GPUS GPUs (benchmarks/full_size_run.py), in one
# GPU-machine call (device tool): installs the carried wheels (.whl: diffusers, pydantic and its three
# dependencies) unless a call before did. The run folder stays on the machine (/tmp/NAME); $OUT/NAME gets
# full_size.json and the log as they grow, then results.json and report.md.
#   bash benchmarks/gpu_full_size.sh RECIPE GPUS [full_size_run.py args, e.g. --eval-prompts 2 --train-prompts 8 --stages 1]
set -euo pipefail
source benchmarks/gpu_env.sh
recipe=$1; gpus=$2; shift 2
name=$(basename "$recipe" .toml)-${gpus}gpu
status=0
python3 benchmarks/full_size_run.py --recipe "$recipe" --gpus "$gpus" --out "$OUT/$name" --run-dir "/tmp/$name" "$@" || status=$?
for file in /tmp/$name/results.json /tmp/$name/report.md; do
  [ -f "$file" ] && cp "$file" "$OUT/$name/"
done
exit $status
