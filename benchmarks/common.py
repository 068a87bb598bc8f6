"""Shared pieces of the benchmark scripts: interleaved timing and medians."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def interleaved_medians(timers: dict, passes: int = 5, runs_per_pass: int = 20, warmup: int = 5) -> dict:
    """Median (ms) per timer over ``passes`` passes, the timers taking turns run by run so
    that machine drift hits them all alike. Each timer returns seconds of one run."""
    for timer in timers.values():
        for _ in range(warmup):
            timer()
    pass_medians: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(passes):
        samples: dict[str, list[float]] = {name: [] for name in timers}
        for _ in range(runs_per_pass):
            for name, timer in timers.items():
                samples[name].append(timer())
        for name, values in samples.items():
            pass_medians[name].append(statistics.median(values) * 1e3)
    return {name: {"median_ms": statistics.median(values), "pass_medians_ms": [round(v, 3) for v in values]}
            for name, values in pass_medians.items()}


def timed_command(command: list[str], **kwargs) -> float:
    """Wall time (s) of a command; it must succeed."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - start


def python() -> str:
    return sys.executable
