#!/usr/bin/env bash
# Set everything up (first run only) and run the main job on the paper's model:
# export (PyTorch -> ONNX -> TFLite fp32/fp16, parity-checked).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
OUT=${OUT:-runs/demo}
.venv/bin/mobiledepth export --out "$OUT" "$@"
