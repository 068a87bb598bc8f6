"""Does the host runner's median agree with a plain interpreter loop timed independently?

Builds a small-to-medium TFLite model (MobileNetV2 alpha=1.0 at 224x224, random weights,
no download; or use --model PATH), then compares, in the same process:
  A. android_bench.host.run_host(model, threads, runs=CHUNK, warmup)  - its raw samples
  B. a plain loop: one ai_edge_litert Interpreter created here, the same input values,
     `invoke()` timed with time.perf_counter()                         - its raw samples
This machine is shared (2 cores, other jobs come and go), so A and B are interleaved in
short chunks (A B, then B A, ...) so that both see the same load; each pass reports the
median of all A samples and of all B samples, and the summary is the median over passes.
Exit 1 when the two medians differ by more than --tolerance (default 5 %).

    .venv/bin/python benchmarks/host_runner_agreement.py [--passes 5] [--chunks 10] [--chunk-runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_model(path: Path, size: int, alpha: float) -> Path:
    """MobileNetV2 (random weights, no download) converted to float32 TFLite."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    model = tf.keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, weights=None, classes=10)
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


class PlainLoop:
    """An interpreter timed with nothing from android_bench: perf_counter around invoke()."""

    def __init__(self, model_path: Path, threads: int, warmup: int):
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
        self.interpreter.allocate_tensors()
        detail = self.interpreter.get_input_details()[0]
        # The same input values as the host runner (a ramp in (0, 1)), so only the timing differs.
        size = int(np.prod(detail["shape"]))
        ramp = (np.arange(size, dtype=np.float64) % 251 + 1) / 252.0
        self.interpreter.set_tensor(detail["index"], ramp.astype(detail["dtype"]).reshape(detail["shape"]))
        for _ in range(warmup):
            self.interpreter.invoke()

    def times_us(self, runs: int) -> list[float]:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.interpreter.invoke()
            times.append((time.perf_counter() - start) * 1e6)
        return times


def one_pass(model: Path, args) -> tuple[float, float]:
    from android_bench.host import run_host

    host_samples: list[float] = []
    loop_samples: list[float] = []
    loop = PlainLoop(model, args.threads, args.warmup)
    for chunk in range(args.chunks):
        order = ("host", "loop") if chunk % 2 == 0 else ("loop", "host")
        for which in order:
            if which == "host":
                host_samples += run_host(model, args.threads, args.chunk_runs, args.warmup)["samples_us"]
            else:
                loop_samples += loop.times_us(args.chunk_runs)
    return statistics.median(host_samples), statistics.median(loop_samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="an existing .tflite (default: build MobileNetV2 224x224)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=10, help="interleaved chunks per pass")
    parser.add_argument("--chunk-runs", type=int, default=10, help="timed runs per chunk")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tolerance", type=float, default=0.05)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_model(Path(tmp) / f"mobilenet_v2_{args.alpha:g}_{args.size}.tflite", args.size, args.alpha)
        per_side = args.chunks * args.chunk_runs
        print(f"model: {model.name} ({model.stat().st_size / 1e6:.2f} MB), threads={args.threads}, "
              f"{per_side} timed runs per side per pass ({args.chunks} interleaved chunks of {args.chunk_runs}), "
              f"passes={args.passes}")
        print(f"{'pass':>4}  {'run_host median ms':>19}  {'plain loop median ms':>21}  {'ratio':>6}")
        host_medians, loop_medians = [], []
        for index in range(args.passes):
            host, loop = one_pass(model, args)
            host_medians.append(host)
            loop_medians.append(loop)
            print(f"{index + 1:>4}  {host / 1000:>19.3f}  {loop / 1000:>21.3f}  {host / loop:>6.3f}")
        host, loop = statistics.median(host_medians), statistics.median(loop_medians)
        ratio = host / loop
        print(f"{'all':>4}  {host / 1000:>19.3f}  {loop / 1000:>21.3f}  {ratio:>6.3f}   (median over passes)")
        agree = abs(ratio - 1.0) <= args.tolerance
        print(f"verdict: {'AGREE' if agree else 'DISAGREE'} (|ratio - 1| = {abs(ratio - 1):.1%}, tolerance {args.tolerance:.0%})")
        return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
