#!/usr/bin/env bash
# Set everything up (first run only) and run the main job on the paper's model:
# export (PyTorch -> ONNX -> TFLite fp32/fp16, parity-checked) -> benchmark on this machine
# -> render the report. Extra arguments go to `mobiledepth export` (e.g. --checkpoint C).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
OUT=${OUT:-runs/demo}
export MOBILEDEPTH_STORE=${MOBILEDEPTH_STORE:-$PWD/runs/store.sqlite}
md=.venv/bin/mobiledepth

$md export --out "$OUT" "$@"
$md bench "$OUT" --device host --threads 2 --runs 30
$md report --format html --out "$OUT/report.html"
echo
echo "artifacts:  $OUT/ (export.json: parity figures, bench.json: latencies)"
echo "report:     $OUT/report.html  (store: $MOBILEDEPTH_STORE)"
