"""The BenchResult record shared by the phone and host runners (see the team contract).

A result is a plain dict so it serialises to JSON as-is. Missing values are ``None``,
never guessed; a failed result has ``failed: True``, an ``error`` text and no numbers.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

ACCELERATORS = ("gpu", "nnapi", "npu")  # delegates whose refusal means a silent CPU fallback
NNAPI_DEPRECATED_API = 35  # Android 15: NNAPI is deprecated (SPEC §7b)
NNAPI_INSTEAD = "use --delegate gpu, or --delegate npu with LiteRT 2.x's benchmark_model"
STATS_KEYS = ("count", "min", "max", "mean", "std", "median", "p90", "p5", "p95")


def utc_now() -> str:
    """ISO-8601 UTC timestamp with seconds precision."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def empty_stats() -> dict[str, Any]:
    return {key: None for key in STATS_KEYS}


def empty_delegation() -> dict[str, Any]:
    """Where the graph ran, and what the run knows about it (a JSON column of the store)."""
    return {
        "status": None, "delegated_nodes": None, "total_nodes": None, "kernels": None, "unsupported_ops": [],
        "delegates": {},  # classic tool: each delegate it names -> its own status
        "fully_accelerated": None,  # LiteRT 2.x
        "not_loaded": [],  # LiteRT 2.x accelerators that could not be loaded and registered
        "strict_check": None,  # LiteRT 2.x: "passed" or the strict run's error
        "api_level": None,  # the phone's ro.build.version.sdk
        "nnapi_deprecated": False,  # an NNAPI run on API >= 35
        "aot_compiled": None,  # NPU runs: the model was compiled ahead of time
        # phones: `dumpsys thermalservice` before and after the timed block (android_bench.thermal
        # .thermal_record); None where the phone reports none. Kept here, in a JSON column, not in a new one.
        "thermal": None,
    }


def new_result(**fields: Any) -> dict[str, Any]:
    """A BenchResult dict with every contract key present (None where unknown)."""
    result: dict[str, Any] = {
        "artifact_sha256": None,
        "model_path": None,
        "model_name": None,
        "precision": None,
        "device": {"profile": None, "serial": None, "model_code": None, "soc": None, "android": None},
        "delegate": None,
        "threads": None,
        "tool": None,
        "tool_version": None,
        "runs": None,
        "warmup": None,
        "samples_us": [],
        "samples_kind": None,
        "stats": empty_stats(),
        "init_us": None,
        "first_inference_us": None,
        "warmup_avg_us": None,
        "memory": {"init_mb": None, "overall_mb": None, "peak_mb": None},
        "delegation": empty_delegation(),
        "fallback": False,
        "failed": False,
        "error": None,
        "started_at": utc_now(),
        "duration_s": None,
    }
    for key, value in fields.items():
        if key not in result:
            raise KeyError(f"not a BenchResult field: {key}")
        result[key] = value
    return result


def mark_failed(result: dict[str, Any], error: str) -> dict[str, Any]:
    """Turn a result into a failed one: keep identity fields, drop every number."""
    result.update(
        failed=True,
        error=error,
        samples_us=[],
        stats=empty_stats(),
        init_us=None,
        first_inference_us=None,
        warmup_avg_us=None,
        memory={"init_mb": None, "overall_mb": None, "peak_mb": None},
    )
    return result


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of already sorted values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def stats_from_samples(samples: Iterable[float]) -> dict[str, Any]:
    """count/min/max/mean/std (population, like benchmark_model)/median/p90/p5/p95 of raw samples."""
    values = sorted(float(v) for v in samples)
    if not values:
        return {**empty_stats(), "count": 0}
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return {
        "count": n,
        "min": values[0],
        "max": values[-1],
        "mean": mean,
        "std": std,
        "median": percentile(values, 50),
        "p90": percentile(values, 90),
        "p5": percentile(values, 5),
        "p95": percentile(values, 95),
    }


def stats_from_tool(tool_stats: dict[str, Any] | None) -> dict[str, Any]:
    """Map one parsed benchmark_model stats line to the contract's stats (p90 is never printed)."""
    stats = empty_stats()
    if not tool_stats:
        return stats
    stats.update(
        count=tool_stats.get("count"),
        min=tool_stats.get("min"),
        max=tool_stats.get("max"),
        mean=tool_stats.get("avg"),
        std=tool_stats.get("std"),
        median=tool_stats.get("median"),
        p5=tool_stats.get("p5"),
        p95=tool_stats.get("p95"),
    )
    return stats


def pool_tool_stats(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Combine the stats of several benchmark_model invocations exactly where the maths allows.

    count, min, max, mean and the population std pool exactly from each part's count, mean
    and std. Percentiles do not pool, so median/p5/p95 are kept only for a single part.
    """
    if len(parts) == 1:
        return stats_from_tool(parts[0])
    stats = empty_stats()
    if not parts or any(p.get("count") in (None, 0) or p.get("avg") is None for p in parts):
        return stats
    total = sum(p["count"] for p in parts)
    mean = sum(p["count"] * p["avg"] for p in parts) / total
    stats.update(count=total, mean=mean)
    if all(p.get("min") is not None for p in parts):
        stats["min"] = min(p["min"] for p in parts)
    if all(p.get("max") is not None for p in parts):
        stats["max"] = max(p["max"] for p in parts)
    if all(p.get("std") is not None for p in parts):
        second_moment = sum(p["count"] * (p["std"] ** 2 + p["avg"] ** 2) for p in parts) / total
        stats["std"] = math.sqrt(max(second_moment - mean**2, 0.0))
    return stats


def apply_delegation_policy(result: dict[str, Any], require_full: bool) -> dict[str, Any]:
    """Mark a silent fallback; with ``require_full`` anything but full delegation fails the run."""
    status = result["delegation"]["status"]
    if result["delegate"] in ACCELERATORS and status in ("none", "partial"):
        result["fallback"] = True
    if require_full and status != "full" and not result["failed"]:
        mark_failed(result, f"--require-full-delegation: {describe_delegation(result)}")
    return result


def litert_status(delegation: dict[str, Any], delegate: str, strict: bool | str | None) -> str | None:
    """Delegation of a LiteRT 2.x run, which prints no delegation line (SPEC §7b).

    ``strict`` is the strict run's outcome: True (passed), an error text (failed), None (not run).
    An accelerator that could not be loaded means nothing ran on it; with the CPU enabled,
    ``Fully accelerated: True`` proves nothing (the CPU accelerates too), so only the strict run
    (``--use_cpu=false --require_full_delegation=true``) can say "full".
    """
    if delegate == "cpu":
        return {True: "full", False: "partial"}.get(delegation.get("fully_accelerated"))
    if delegate in delegation.get("not_loaded", []):
        return "none"
    if strict is True:
        return "full"
    if isinstance(strict, str) or delegation.get("fully_accelerated") is False:
        return "partial"
    return None


def flag_nnapi_deprecation(result: dict[str, Any], api_level: int | None) -> None:
    """Record the API level; an NNAPI result on Android 15+ (API >= 35) carries the deprecated flag."""
    result["delegation"]["api_level"] = api_level
    if result["delegate"] == "nnapi" and api_level is not None and api_level >= NNAPI_DEPRECATED_API:
        result["delegation"]["nnapi_deprecated"] = True


def describe_delegation(result: dict[str, Any]) -> str:
    """Plain words for where the graph really ran."""
    delegate = (result["delegate"] or "?").upper()
    d = result["delegation"]
    counts = ""
    if d["delegated_nodes"] is not None and d["total_nodes"] is not None:
        counts = f" ({d['delegated_nodes']} of {d['total_nodes']} nodes on the {delegate} delegate)"
    elif d["kernels"]:
        counts = f" ({d['kernels']} delegate kernels)"
    if d.get("not_loaded") and (result["delegate"] or "") in d["not_loaded"]:
        counts += f"; the {delegate} accelerator could not be loaded and registered"
    if isinstance(d.get("strict_check"), str) and d["strict_check"] != "passed":
        counts += f"; strict run: {d['strict_check']}"
    refused = d.get("unsupported_ops") or []
    if refused:
        counts += "; ops it does not support: " + ", ".join(sorted({o["op"] for o in refused}))
    if d["status"] == "none":
        return f"the {delegate} delegate did not take the graph: everything ran on the CPU{counts}"
    if d["status"] == "partial":
        return f"the {delegate} delegate took only part of the graph; the rest ran on the CPU{counts}"
    if d["status"] == "full":
        return f"the {delegate} delegate ran the whole graph{counts}"
    return f"benchmark_model did not report whether the {delegate} delegate took the graph"
