"""The two converter routes side by side (issue 14): export wall time, artifact latency against
ONNX Runtime, and model coverage.

Each route runs as a whole `mobiledepth export --converter ROUTE` command in the environment
that has it (onnx2tf: the project's, litert-torch: one with litert-torch), alternating, in one
run. Latencies: the fp32 artifact of each route and ONNX Runtime on the same ONNX model, 1 and 2
threads, rotated blocks (``common.rotated_block_medians``). Coverage: each model of a small set
exported by each route at 128x128, fp32, parity bar met or not.

Usage: python benchmarks/converter_routes.py --onnx2tf-python .venv/bin/python \
           --litert-python /tmp/venv-lt/bin/python [--repeats 2] [--skip-coverage] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import REPO, rotated_block_medians

COVERAGE_MODELS = ("mdepth-mnv2-fbnet", "mdepth-tiny", "fastdepth", "psp:make")
PSP_FILE = "psp.py"  # the PSP-style head of tests/test_converter_routes.py, written as a factory module


def export(python: str, route: str, out: Path, model: str = "mdepth-mnv2-fbnet", size: str = "256x256",
           precision: str = "fp32,fp16", cwd: Path = REPO) -> tuple[float, bool]:
    """Wall time (s) of one export command and whether it succeeded."""
    start = time.perf_counter()
    done = subprocess.run([python, "-m", "mobiledepth", "export", "--model", model, "--input-size", size,
                           "--precision", precision, "--converter", route, "--out", str(out), "--quiet",
                           "--no-store"], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return time.perf_counter() - start, done.returncode == 0


def export_times(pythons: dict[str, str], work: Path, repeats: int) -> dict:
    """Alternating whole-command exports of the paper model per route; medians."""
    times: dict[str, list[float]] = {route: [] for route in pythons}
    for i in range(repeats):
        order = list(pythons) if i % 2 == 0 else list(reversed(pythons))
        for route in order:
            seconds, ok = export(pythons[route], route, work / f"{route}-{i}")
            assert ok, f"{route} export failed"
            times[route].append(round(seconds, 1))
    return {route: {"median_s": statistics.median(t), "runs_s": t} for route, t in times.items()}


def latencies(runs: dict[str, Path], onnx_file: Path, threads: int) -> dict:
    """fp32 artifact per route and ONNX Runtime on the same model, medians (ms) and ratios to ORT."""
    import numpy as np

    from mobiledepth.export.runtimes import OnnxRuntime, TfliteRuntime

    image = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    runtimes = {route: TfliteRuntime(run / "model_fp32.tflite", threads=threads) for route, run in runs.items()}
    runtimes["onnxruntime"] = OnnxRuntime(onnx_file, threads=threads)

    def timer(runtime):
        def once() -> float:
            start = time.perf_counter()
            runtime(image)
            return time.perf_counter() - start
        return once

    medians = rotated_block_medians({name: timer(rt) for name, rt in runtimes.items()})
    ort = medians["onnxruntime"]["median_ms"]
    return {name: {**m, "vs_ort": round(m["median_ms"] / ort, 3)} for name, m in medians.items()}


def coverage(pythons: dict[str, str], work: Path) -> dict:
    """Per model and route: did a 128x128 fp32 export meet the parity bar?"""
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from test_converter_routes import PSP_MODULE

    (work / PSP_FILE).write_text(PSP_MODULE)
    result: dict[str, dict] = {}
    for model in COVERAGE_MODELS:
        for route, python in pythons.items():
            _, ok = export(python, route, work / f"cov-{model.replace(':', '-')}-{route}", model, "128x128",
                                 "fp32", cwd=work)
            result.setdefault(model, {})[route] = ok
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--onnx2tf-python", required=True)
    parser.add_argument("--litert-python", required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-coverage", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    # absolute paths (not resolved: a venv's python is a symlink whose target is not the venv):
    # the coverage exports run in the work folder
    pythons = {"onnx2tf": os.path.abspath(args.onnx2tf_python), "litert-torch": os.path.abspath(args.litert_python)}
    work = Path(tempfile.mkdtemp(prefix="converter-routes-"))
    report = {"export_s": export_times(pythons, work, args.repeats)}
    report["export_ratio_litert_vs_onnx2tf"] = round(
        report["export_s"]["litert-torch"]["median_s"] / report["export_s"]["onnx2tf"]["median_s"], 3)
    runs = {route: work / f"{route}-0" for route in pythons}
    report["latency"] = {threads: latencies(runs, runs["onnx2tf"] / "model.onnx", threads) for threads in (1, 2)}
    print(json.dumps(report, indent=2), flush=True)  # what is measured so far survives a coverage failure
    if not args.skip_coverage:
        report["coverage"] = coverage(pythons, work)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
