"""Exported model latency on this machine: TFLite interpreter (XNNPACK) next to ONNX Runtime
on the same model, 1 and 2 threads, medians over passes of rotated blocks, and achieved GFLOP/s
(issue 2 §4). TFLite is timed as exported (phase-split upsampling) and with ``--no-rewrites``;
ONNX Runtime runs the ONNX file PyTorch writes without rewrites (the model a user would
otherwise deploy with it).

Usage: .venv/bin/python benchmarks/latency_host.py [--model mdepth-mnv2-fbnet] [--sizes 256x256,224x448]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, rotated_block_medians


def ort_timer(path: Path, threads: int, size):
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)}

    def run():
        start = time.perf_counter()
        session.run(None, feed)
        return time.perf_counter() - start
    return run


def tflite_timer(path: Path, threads: int):
    from android_bench.host import HostModel

    model = HostModel(str(path), threads=threads)
    return lambda: model.time_once() / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="mdepth-mnv2-fbnet")
    parser.add_argument("--sizes", default="256x256,224x448")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    from mobiledepth.sizes import parse_input_size
    from mobiledepth.export import export_model

    work = Path(tempfile.mkdtemp(prefix="latency-"))
    int8 = "int8" in args.precisions
    print("| input | MACs | threads | ONNX Runtime fp32 | TFLite fp32, no rewrites | TFLite fp32 | TFLite / ORT "
          "| GFLOP/s (TFLite) |" + (" TFLite int8 |" if int8 else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|" if int8 else ""))
    for size_text in args.sizes.split(","):
        size = parse_input_size(size_text)
        result = export_model(args.model, input_size=size, precisions=args.precisions, out=work / size_text)
        plain = export_model(args.model, input_size=size, precisions="fp32", out=work / f"{size_text}-plain",
                             rewrites=False)
        macs = result.record["model"]["macs"]
        for threads in (1, 2):
            timers = {"ort": ort_timer(plain.run_dir / "model.onnx", threads, size),
                      "plain": tflite_timer(plain.run_dir / "model_fp32.tflite", threads),
                      "fp32": tflite_timer(result.run_dir / "model_fp32.tflite", threads)}
            if int8:
                timers["int8"] = tflite_timer(result.run_dir / "model_int8.tflite", threads)
            med = {name: value["median_ms"] for name, value in rotated_block_medians(timers, passes=args.passes).items()}
            row = (f"| {size_text} | {macs / 1e9:.3f} G | {threads} | {med['ort']:.2f} ms | {med['plain']:.2f} ms | "
                   f"{med['fp32']:.2f} ms | {med['fp32'] / med['ort']:.2f} | {2 * macs / (med['fp32'] / 1e3) / 1e9:.0f} |")
            if int8:
                row += f" {med['int8']:.2f} ms |"
            print(row, flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
