"""benchmark_model command lines per delegate (docs/bench.md), pinned to the big cores with taskset."""

from __future__ import annotations

from android_bench.errors import BenchUserError
from android_bench.profiles import DELEGATES

DELEGATE_FLAGS = {
    "cpu": ["--use_xnnpack=true"],
    "gpu": ["--use_gpu=true"],
    "nnapi": ["--use_nnapi=true"],
}


def check_counts(threads: int, runs: int, warmup: int) -> None:
    """Reject impossible counts up front with the fix in the message."""
    if threads < 1:
        raise BenchUserError(f"--threads must be at least 1 (got {threads})")
    if runs < 1:
        raise BenchUserError(f"--runs must be at least 1 (got {runs})")
    if warmup < 0:
        raise BenchUserError(f"--warmup must be 0 or more (got {warmup})")


def benchmark_flags(
    graph: str,
    delegate: str,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    profile_ops: bool = False,
    peak_memory: bool = True,
) -> list[str]:
    """The flags of one benchmark_model invocation for ``delegate`` on model ``graph``."""
    if delegate not in DELEGATE_FLAGS:
        raise BenchUserError(f"unknown delegate '{delegate}'; choose one of: {', '.join(DELEGATES)}")
    check_counts(threads, runs, warmup)
    flags = [f"--graph={graph}", *DELEGATE_FLAGS[delegate], f"--num_threads={threads}"]
    flags += [f"--num_runs={runs}", f"--warmup_runs={warmup}"]
    if profile_ops:
        flags.append("--enable_op_profiling=true")
    if peak_memory:
        flags.append("--report_peak_memory_footprint=true")
    return flags


def device_command(binary: str, flags: list[str], cpu_mask: str | None = None) -> list[str]:
    """argv for the phone: ``[taskset MASK] BINARY FLAGS…`` (quoted later by the adb layer)."""
    prefix = ["taskset", cpu_mask] if cpu_mask else []
    return [*prefix, binary, *flags]
