#!/usr/bin/env bash
# GPU smoke test: one CUDA GPU, under 5 minutes (benchmarks/gpu_smoke.py says what it checks).
# Usage: benchmarks/gpu_smoke.sh [--steps 300] [--batch 64]     GPU_SMOKE_DRY_RUN=1 or --dry-run: CPU code-path check
# Python: $PYTHON, else the project's .venv, else python3 (with this checkout on PYTHONPATH).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
if [ ! -x "$PY" ] && ! command -v "$PY" >/dev/null 2>&1; then
  PY=python3
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
status=0
timeout 600 "$PY" benchmarks/gpu_smoke.py "$@" || status=$?
echo "gpu_smoke: exit $status after $(( $(date +%s) - start )) s (goal: under 300 s on one GPU)" >&2
exit "$status"
