#!/usr/bin/env bash
# GPU smoke test: one CUDA GPU, under 5 minutes. See benchmarks/gpu_smoke.py for what it checks.
# Usage: benchmarks/gpu_smoke.sh [--steps 300] [--batch 64]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
timeout 600 "$PY" benchmarks/gpu_smoke.py "$@"
