"""Shared pieces of the benchmark scripts: interleaved timing and medians."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rotated_block_medians(timers: dict, passes: int = 5, runs_per_pass: int = 20, warmup: int = 5,
                          settle_s: float = 0.05) -> dict:
    """Median (ms) per timer over ``passes`` passes; in each pass every timer runs a block of
    ``runs_per_pass`` runs, the order of the blocks rotating from pass to pass so that machine drift
    hits them all alike. Each timer returns seconds of one run.

    Blocks, not run-by-run turns: a multi-threaded runtime's worker threads spin for a while after
    each run (ONNX Runtime and XNNPACK's thread pools both do), so on a 2-core machine the next
    *other* runtime's run would share its cores with them. Run by run, 2-thread timings of
    ONNX Runtime and TFLite came out up to 1.8x slower than in blocks (docs/benchmarks.md).
    The harness is android_bench's, the one the CI gate and LUT validation use."""
    from android_bench.interleave import CallTimer, Interleaved

    harness = Interleaved([lambda timer=timer: CallTimer(timer) for timer in timers.values()], block=runs_per_pass,
                          untimed=1, warmup=warmup, order="rotate", pause_s=settle_s, drop_failures=False)
    harness.run(passes)
    pass_medians = {name: [statistics.median(block) / 1e3 for block in blocks]  # µs -> ms
                    for name, blocks in zip(timers, harness.blocks)}
    return {name: {"median_ms": statistics.median(values), "pass_medians_ms": [round(v, 3) for v in values]}
            for name, values in pass_medians.items()}


def timed_command(command: list[str], **kwargs) -> float:
    """Wall time (s) of a command; it must succeed."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - start


def python() -> str:
    return sys.executable
