"""BenchResult helpers: statistics from raw samples, exact pooling, fallback policy."""

from __future__ import annotations


import numpy as np
import pytest

from android_bench.result import (
    apply_delegation_policy,
    describe_delegation,
    mark_failed,
    new_result,
    pool_tool_stats,
    stats_from_samples,
)


def test_stats_from_samples_match_numpy():
    samples = [12.0, 10.0, 11.5, 30.0, 10.2, 10.9, 11.1]
    stats = stats_from_samples(samples)
    assert stats["count"] == 7
    assert stats["mean"] == pytest.approx(np.mean(samples))
    assert stats["std"] == pytest.approx(np.std(samples))  # population std, like benchmark_model
    for key, q in (("median", 50), ("p90", 90), ("p5", 5), ("p95", 95)):
        assert stats[key] == pytest.approx(np.percentile(samples, q)), key
    assert (stats["min"], stats["max"]) == (10.0, 30.0)


def _tool_line(values):
    return {"count": len(values), "avg": float(np.mean(values)), "std": float(np.std(values)),
            "min": min(values), "max": max(values), "median": float(np.median(values)), "p5": None, "p95": None}


def test_pooling_is_exact_for_moments_and_drops_percentiles():
    a, b = [10.0, 12.0, 11.0], [20.0, 22.0]
    pooled = pool_tool_stats([_tool_line(a), _tool_line(b)])
    both = a + b
    assert pooled["count"] == 5
    assert pooled["mean"] == pytest.approx(np.mean(both))
    assert pooled["std"] == pytest.approx(np.std(both))
    assert (pooled["min"], pooled["max"]) == (10.0, 22.0)
    assert pooled["median"] is None and pooled["p90"] is None


def test_single_invocation_keeps_tool_percentiles():
    stats = pool_tool_stats([{"count": 3, "avg": 2.0, "std": 0.5, "min": 1, "max": 3, "median": 2, "p5": 1, "p95": 3}])
    assert stats["median"] == 2 and stats["p5"] == 1 and stats["p95"] == 3 and stats["p90"] is None


def _gpu_result(status, nodes=(None, None)):
    result = new_result(delegate="gpu", samples_us=[1.0], stats=stats_from_samples([1.0]))
    result["delegation"].update(status=status, delegated_nodes=nodes[0], total_nodes=nodes[1])
    return result


@pytest.mark.parametrize("status, fallback", [("none", True), ("partial", True), ("full", False), (None, False)])
def test_fallback_flag(status, fallback):
    assert apply_delegation_policy(_gpu_result(status), require_full=False)["fallback"] is fallback


def test_cpu_partial_xnnpack_is_not_a_fallback():
    result = new_result(delegate="cpu")
    result["delegation"]["status"] = "partial"
    assert apply_delegation_policy(result, False)["fallback"] is False


@pytest.mark.parametrize("status", ["none", "partial", None])
def test_require_full_delegation_fails_without_numbers(status):
    result = apply_delegation_policy(_gpu_result(status, (10, 14)), require_full=True)
    assert result["failed"] and "--require-full-delegation" in result["error"]
    assert result["samples_us"] == [] and all(v is None for v in result["stats"].values())


def test_describe_delegation_in_plain_words():
    text = describe_delegation(_gpu_result("partial", (10, 14)))
    assert "only part of the graph" in text and "10 of 14 nodes" in text
    assert "did not take the graph" in describe_delegation(_gpu_result("none"))


def test_mark_failed_drops_every_number():
    result = new_result(samples_us=[5.0], stats=stats_from_samples([5.0]), init_us=3.0)
    result["memory"]["peak_mb"] = 7.0
    mark_failed(result, "boom")
    assert result["failed"] and result["error"] == "boom"
    assert result["samples_us"] == [] and result["init_us"] is None and result["memory"]["peak_mb"] is None
    assert all(v is None for v in result["stats"].values())


def test_new_result_has_every_contract_key():
    keys = {"artifact_sha256", "model_path", "model_name", "precision", "device", "delegate", "threads", "tool",
            "tool_version", "runs", "warmup", "samples_us", "samples_kind", "stats", "init_us", "first_inference_us",
            "warmup_avg_us", "memory", "delegation", "fallback", "failed", "error", "started_at", "duration_s"}
    result = new_result()
    assert set(result) == keys
    assert set(result["device"]) == {"profile", "serial", "model_code", "soc", "android"}
    assert set(result["stats"]) == {"count", "min", "max", "mean", "std", "median", "p90", "p5", "p95"}
    assert set(result["delegation"]) == {"status", "delegated_nodes", "total_nodes", "kernels", "unsupported_ops",
                                         "delegates", "fully_accelerated", "not_loaded", "strict_check", "api_level",
                                         "nnapi_deprecated", "aot_compiled", "thermal"}
    with pytest.raises(KeyError):
        new_result(bogus=1)
