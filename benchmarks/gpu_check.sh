#!/usr/bin/env bash
# One-shot GPU check, run first whenever a CUDA GPU is available: every `gpu`-marked test, then the GPU rows
# of the benchmarks (training step, TTA pseudo-labelling end to end vs. model only in fp32 and bf16, training
# loader overhead, compiled inference: RVT-S bf16 with CUDA graphs against eager), each under its own time limit
# so that the whole check stays under 8 minutes on one H100.
# Writes a Markdown summary (status and seconds per step, then the rows each benchmark printed) and one log per
# step.
#
# Usage: bash benchmarks/gpu_check.sh [--dry-run] [--out DIR]
#   --dry-run   list the steps (name, time limit, command) and exit; needs no GPU
#   --out DIR   where the summary (gpu_check.md) and the logs go (default: $OUT if set, else gpu_check/)
set -uo pipefail
cd "$(dirname "$0")/.."

dry_run=0
out_dir=${OUT:-gpu_check}
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) dry_run=1; shift ;;
    --out) out_dir=$2; shift 2 ;;
    *) echo "usage: $0 [--dry-run] [--out DIR]" >&2; exit 2 ;;
  esac
done

# The whole check's limit; a step that would start with less than its own limit left is skipped.
total_budget_s=480
# name | time limit (s) | command
steps=(
  "environment|30|nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv && python -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))'"
  "gpu tests|120|python -m pytest -m gpu -q -rA -p no:cacheprovider -o addopts= tests"
  "train step|45|python benchmarks/bench_train_step.py --device cuda --sizes tiny small base --steps 5"
  "TTA fp32|70|python benchmarks/bench_tta_pipeline.py --device cuda --size small --embed-dim 0 --batch 8 --shapes gen1 1mpx-ds2 --reprs 40"
  "TTA bf16|70|python benchmarks/bench_tta_pipeline.py --device cuda --size small --embed-dim 0 --batch 8 --shapes gen1 1mpx-ds2 --reprs 40 --autocast bf16"
  "train loader|60|python benchmarks/bench_train_loader.py --device cuda --size small --embed-dim 0 --batch 8 --workers 0 2 4"
  "compiled bf16|85|python benchmarks/bench_compile.py --device cuda --sizes small --batch 8 --autocast bf16 --mode reduce-overhead --steps 10 --warmup 2 --repeats 3"
)

if [[ $dry_run == 1 ]]; then
  echo "gpu_check: ${#steps[@]} steps, at most ${total_budget_s} s"
  for step in "${steps[@]}"; do
    IFS='|' read -r name limit command <<< "$step"
    printf '%-14s %4s s  %s\n' "$name" "$limit" "$command"
  done
  exit 0
fi

if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: torch sees no CUDA device; nothing to check (use --dry-run to list the steps)" >&2
  exit 1
fi

mkdir -p "$out_dir"
summary=$out_dir/gpu_check.md
start=$SECONDS
failed=0
rows=()
for step in "${steps[@]}"; do
  IFS='|' read -r name limit command <<< "$step"
  log=$out_dir/${name// /_}.log
  left=$((total_budget_s - (SECONDS - start)))
  if (( left < limit )); then
    rows+=("| $name | skipped (${left} s left of ${total_budget_s}) | - |")
    failed=1
    continue
  fi
  echo "gpu_check: $name (limit ${limit} s): $command"
  step_start=$SECONDS
  timeout --kill-after=10 "$limit" bash -c "$command" > "$log" 2>&1
  rc=$?
  seconds=$((SECONDS - step_start))
  case $rc in
    0) status=ok ;;
    124|137) status="TIMEOUT after ${limit} s"; failed=1 ;;
    *) status="FAILED (exit $rc)"; failed=1 ;;
  esac
  rows+=("| $name | $status | $seconds |")
done

{
  echo "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo
  echo "| step | status | seconds |"
  echo "|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Total: $((SECONDS - start)) s of ${total_budget_s} s."
  for step in "${steps[@]}"; do
    IFS='|' read -r name limit command <<< "$step"
    log=$out_dir/${name// /_}.log
    [[ -f $log ]] || continue
    echo
    echo "## $name"
    echo
    echo "\`$command\`"
    echo
    # Benchmark rows are Markdown table lines; for the others, the last lines of the log.
    if grep -q '^|' "$log"; then grep '^|' "$log"; else echo '```'; tail -n 15 "$log"; echo '```'; fi
  done
} > "$summary"
echo "gpu_check: summary in $summary"
exit $failed
