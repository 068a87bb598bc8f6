"""Exported model latency on this machine: TFLite interpreter (XNNPACK) next to ONNX Runtime
on the same model, 1 and 2 threads, medians over interleaved passes, and achieved GFLOP/s
(issue 2 §4).

Usage: .venv/bin/python benchmarks/latency_host.py [--model mdepth-mnv2-fbnet] [--sizes 256x256,224x448]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, interleaved_medians


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
    print(f"| model | input | MACs | threads | ONNX Runtime fp32 ms | TFLite fp32 ms | TFLite/ORT | GFLOP/s (TFLite) |"
          + (" TFLite int8 ms |" if "int8" in args.precisions else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|" if "int8" in args.precisions else ""))
    for size_text in args.sizes.split(","):
        size = parse_input_size(size_text)
        result = export_model(args.model, input_size=size, precisions=args.precisions, out=work / size_text)
        macs = result.record["model"]["macs"]
        for threads in (1, 2):
            timers = {"ort": ort_timer(result.run_dir / "model.onnx", threads, size),
                      "fp32": tflite_timer(result.run_dir / "model_fp32.tflite", threads)}
            if "int8" in args.precisions:
                timers["int8"] = tflite_timer(result.run_dir / "model_int8.tflite", threads)
            med = interleaved_medians(timers, passes=args.passes)
            o, t = med["ort"]["median_ms"], med["fp32"]["median_ms"]
            row = (f"| {args.model} | {size_text} | {macs / 1e9:.3f} G | {threads} | {o:.2f} | {t:.2f} | {t / o:.2f} | "
                   f"{2 * macs / (t / 1e3) / 1e9:.0f} |")
            if "int8" in med:
                row += f" {med['int8']['median_ms']:.2f} |"
            print(row, flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
