"""benchmark_model command lines per tool generation and delegate (docs/bench.md), pinned with taskset."""

from __future__ import annotations

from android_bench.errors import BenchUserError
from android_bench.profiles import DELEGATES
from android_bench.tools import CLASSIC, CLASSIC_DELEGATE_FLAGS, LITERT2, delegate_flags

DELEGATE_FLAGS = CLASSIC_DELEGATE_FLAGS  # the classic tool's table (kept for callers of the old name)


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
    generation: str = CLASSIC,
    strict: bool = False,
    npu_flags: tuple[str, ...] = (),
) -> list[str]:
    """The flags of one benchmark_model invocation for ``delegate`` on model ``graph``.

    ``strict`` asks the tool itself to refuse anything but full delegation (LiteRT 2.x:
    ``--use_cpu=false --require_full_delegation=true``); ``npu_flags`` are the vendor's extra
    flags of an NPU run (LiteRT 2.x only).
    """
    if delegate not in DELEGATES:
        raise BenchUserError(f"unknown delegate '{delegate}'; choose one of: {', '.join(DELEGATES)}")
    check_counts(threads, runs, warmup)
    flags = [f"--graph={graph}", *delegate_flags(generation, delegate, strict), *npu_flags]
    flags += [f"--num_threads={threads}", f"--num_runs={runs}", f"--warmup_runs={warmup}"]
    if profile_ops:
        flags.append("--use_profiler=true" if generation == LITERT2 else "--enable_op_profiling=true")
    if peak_memory and generation == CLASSIC:
        flags.append("--report_peak_memory_footprint=true")
    return flags


def device_command(binary: str, flags: list[str], cpu_mask: str | None = None,
                   env: dict[str, str] | None = None) -> list[str]:
    """argv for the phone: ``[env K=V…] [taskset MASK] BINARY FLAGS…`` (quoted later by the adb layer)."""
    prefix = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
    if cpu_mask:
        prefix += ["taskset", cpu_mask]
    return [*prefix, binary, *flags]
