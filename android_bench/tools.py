"""The two tools called ``benchmark_model`` (SPEC §7b): tell them apart, and build each one's flags.

* ``classic``: TensorFlow Lite's Interpreter tool (``--use_xnnpack/--use_gpu/--use_nnapi``,
  microseconds, delegation lines).
* ``litert2``: LiteRT 2.x's CompiledModel tool (``--use_cpu/--use_gpu/--use_npu``, no NNAPI,
  milliseconds under ``BENCHMARK RESULTS``, no delegation line).

Which one a binary is comes from its ``--help``, probed once per binary (by sha256) and cached.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from android_bench.errors import BenchUserError

CLASSIC = "classic"
LITERT2 = "litert2"
GENERATIONS = (CLASSIC, LITERT2)
TOOL_NAMES = {CLASSIC: "benchmark_model", LITERT2: "litert_benchmark_model"}

_LITERT2_MARKS = ("--use_npu", "--use_cpu", "--dispatch_library_path", "--compiler_plugin_library_path")
_CLASSIC_MARKS = ("--use_xnnpack", "--use_nnapi", "--enable_op_profiling", "--use_hexagon")
_VERSION = re.compile(r"(?:LiteRT|TensorFlow Lite|TFLite|benchmark_model)?[^\n]*?\bversion\b\s*[:=]?\s*v?(\d+\.\d+(?:\.\d+)?[\w.+-]*)",
                      re.IGNORECASE)

_cache: dict[str, "ToolInfo"] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class ToolInfo:
    """What a benchmark binary is: its generation, the version it states (if any) and its sha256."""

    generation: str
    version: str | None
    sha256: str

    @property
    def name(self) -> str:
        return TOOL_NAMES[self.generation]

    def version_label(self) -> str:
        """``<stated version or 'unknown'> sha256:<16 hex>`` for the result's ``tool_version``."""
        return f"{self.version or 'unknown'} sha256:{self.sha256[:16]}"


def classify_help(help_text: str, sha256: str) -> ToolInfo:
    """The generation of a binary from its ``--help`` text (LiteRT 2.x marks win over classic ones)."""
    if any(mark in help_text for mark in _LITERT2_MARKS):
        generation = LITERT2
    elif any(mark in help_text for mark in _CLASSIC_MARKS) or "--graph" in help_text:
        generation = CLASSIC
    else:
        first = next((line.strip() for line in help_text.splitlines() if line.strip()), "no output")
        raise BenchUserError(
            f"the benchmark binary's --help does not look like benchmark_model ({first[:120]}); pass the classic "
            "android_aarch64_benchmark_model or LiteRT's android_arm64/benchmark_model"
        )
    match = _VERSION.search(help_text)
    return ToolInfo(generation, match.group(1) if match else None, sha256)


def probe_once(sha256: str, run_help) -> ToolInfo:
    """The cached ToolInfo of the binary with this sha256; ``run_help()`` (its --help text) runs once."""
    with _cache_lock:
        if sha256 in _cache:
            return _cache[sha256]
    info = classify_help(run_help(), sha256)
    with _cache_lock:
        return _cache.setdefault(sha256, info)


def forget_probes() -> None:
    """Empty the probe cache (tests; a binary replaced under the same bytes cannot happen)."""
    with _cache_lock:
        _cache.clear()


# -- flags ---------------------------------------------------------------------------------------
CLASSIC_DELEGATE_FLAGS = {
    "cpu": ["--use_xnnpack=true"],
    "gpu": ["--use_gpu=true"],
    "nnapi": ["--use_nnapi=true"],
}
LITERT2_DELEGATE_FLAGS = {
    "cpu": ["--use_cpu=true"],
    "gpu": ["--use_gpu=true"],
    "npu": ["--use_npu=true"],
}
STRICT_FLAGS = ["--use_cpu=false", "--require_full_delegation=true"]


def delegate_flags(generation: str, delegate: str, strict: bool = False) -> list[str]:
    """The delegate's flags for this tool generation; a pair the tool lacks is one clear error."""
    table = LITERT2_DELEGATE_FLAGS if generation == LITERT2 else CLASSIC_DELEGATE_FLAGS
    if delegate not in table:
        raise BenchUserError(_missing_delegate_message(generation, delegate))
    flags = list(table[delegate])
    if strict and delegate != "cpu":
        flags += STRICT_FLAGS if generation == LITERT2 else ["--require_full_delegation=true"]
    return flags


def _missing_delegate_message(generation: str, delegate: str) -> str:
    if generation == LITERT2 and delegate == "nnapi":
        return ("the LiteRT 2.x benchmark_model has no NNAPI (deprecated since Android 15); use --delegate gpu or "
                "--delegate npu, or pass the classic android_aarch64_benchmark_model for NNAPI")
    if generation == CLASSIC and delegate == "npu":
        return ("the classic benchmark_model has no LiteRT NPU accelerator; pass LiteRT 2.x's "
                "android_arm64/benchmark_model with --benchmark-binary, or use --delegate nnapi")
    return f"delegate '{delegate}' is not available in the {generation} benchmark_model"
