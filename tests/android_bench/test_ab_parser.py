"""The benchmark_model parser on every real fixture and on hand-written outputs of each SPEC §7 variant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from android_bench.cli import main
from android_bench.parser import parse_output, parse_stats_line, strip_prefix

HERE = Path(__file__).resolve().parent
OUTPUTS = HERE / "outputs"
SHARED = HERE.parents[2] / "shared" / "fixtures" / "benchmark_model"


def pick(parsed: dict, dotted: str):
    value = parsed
    for part in dotted.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


# Hand-read expectations: every value below was read off the fixture text by eye.
SHARED_EXPECTED = {
    "gpu_full_delegation.txt": {
        "init_us": 870557, "first_inference_us": 130565, "warmup_avg_us": 122373, "inference_avg_us": 119375,
        "stats.count": 50, "stats.min": 113737, "stats.max": 124776, "stats.avg": 119375, "stats.std": 1948,
        "stats.median": None, "warmup_stats.count": 4, "warmup_stats.avg": 122373,
        "delegation.status": "full", "delegation.kernels": 1, "memory.init_mb": None, "failed": False, "error": None,
    },
    "gpu_unsupported_ops.txt": {
        "stats": None, "inference_avg_us": None, "delegation.status": "partial",
        "delegation.delegated_nodes": 62, "delegation.total_nodes": 969, "failed": True,
        "error": "Node number 1001 (TfLiteGpuDelegate) failed to prepare.",
        "delegation.unsupported_ops": [
            {"op": op, "reason": "Operation is not supported."}
            for op in ("DELEGATE TfLiteFlexDelegate", "EQUAL", "SPLIT", "WHILE")],
    },
    "mi11_cpu_4threads.txt": {
        "init_us": 16242, "first_inference_us": 360262, "warmup_avg_us": 304586, "inference_avg_us": 249684,
        "stats.count": 50, "stats.first": 249042, "stats.curr": 250889, "stats.min": 247067, "stats.max": 254474,
        "stats.avg": 249684, "stats.std": 1442, "memory.init_mb": 4.92969, "memory.overall_mb": 138.809,
        "memory.peak_mb": None, "delegation.status": None, "failed": False, "error": None,
    },
    "mi11_nnapi_fp16.txt": {
        "init_us": 365972, "first_inference_us": 120877, "warmup_avg_us": 108605, "inference_avg_us": 92571.2,
        "stats.count": 50, "stats.first": 96719, "stats.curr": 90158, "stats.avg": 92571.2, "stats.std": 1638,
        "stats.min": 89745, "stats.max": 96719, "warmup_stats": None,
        "memory.init_mb": 6.90625, "memory.overall_mb": 61.0547, "failed": False, "error": None,
    },
}

OWN_EXPECTED = {
    "plain_new_percentiles.txt": {
        "init_us": 45618, "first_inference_us": 61234, "warmup_avg_us": 56321.4, "inference_avg_us": 54102.6,
        "stats.count": 50, "stats.p5": 53120, "stats.median": 53988, "stats.p95": 55873, "stats.std": 842,
        "warmup_stats.count": 9, "warmup_stats.median": 55890,
        "memory.init_mb": 12.1172, "memory.overall_mb": 31.5508, "memory.peak_mb": 36.7461, "failed": False,
        "error": None,
    },
    "info_prefixed_xnnpack.txt": {
        "inference_avg_us": 41290.7, "stats.count": 50, "stats.min": 40713, "warmup_stats.count": 12,
        "delegation.status": "full", "delegation.delegate": "XNNPACK", "delegation.delegated_nodes": 143,
        "delegation.total_nodes": 143, "delegation.partitions": 1, "memory.overall_mb": 33.2461, "failed": False,
        "error": None,
    },
    "logcat_threadtime_apk.txt": {
        "init_us": 948113, "inference_avg_us": 26466.8, "stats.count": 50, "stats.max": 28011,
        "warmup_stats.count": 19, "delegation.status": "full", "delegation.kernels": 1, "failed": False,
        "error": None,
    },
    "logcat_brief.txt": {
        "init_us": 412500, "inference_avg_us": 18254.2, "stats.std": 301, "warmup_stats.avg": 19874,
        "delegation.status": "full", "delegation.delegate": "NNAPI", "failed": False, "error": None,
    },
    "old_format_op_profiling.txt": {
        "init_us": 38467, "warmup_avg_us": 83235, "inference_avg_us": 79760.9, "first_inference_us": None,
        "stats.count": 50, "stats.avg": 79760.9, "warmup_stats.count": 6,
        "memory.init_mb": 2.73438, "memory.overall_mb": 8.23047,
        "op_profile.ops.0.node_type": "CONV_2D", "op_profile.ops.0.avg_ms": 4.269, "op_profile.ops.0.percent": 5.354,
        "op_profile.ops.1.name": "MobilenetV1/MobilenetV1/Conv2d_1_depthwise/Relu6",
        "op_profile.ops.2.cdf_percent": 100.0, "op_profile.ops.2.times_called": 1,
        "op_profile.by_type.1.node_type": "DEPTHWISE_CONV_2D", "op_profile.by_type.1.percent": 33.395,
        "op_profile.top.0.start_ms": 0.0, "op_profile.timings.avg": 6438, "op_profile.nodes_executed": 3,
        "failed": False, "error": None,
    },
    "scientific_notation_slow.txt": {
        "init_us": 1210400.0, "warmup_avg_us": 2431880.0, "inference_avg_us": 2403120.0,
        "stats.avg": 2403120.0, "stats.std": 15672.4, "stats.median": 2399140,
        "warmup_stats.count": 1, "warmup_stats.min": 2431877, "failed": False, "error": None,
    },
    "all_same_runs.txt": {
        "stats.count": 50, "stats.min": 11, "stats.max": 11, "stats.avg": 11, "stats.std": 0,
        "warmup_stats.count": 40, "warmup_stats.avg": 12, "inference_avg_us": 11, "failed": False, "error": None,
    },
    "gpu_partial_kernels.txt": {
        "delegation.status": "partial", "delegation.kernels": 3, "delegation.delegated_nodes": 118,
        "delegation.total_nodes": 131, "delegation.partitions": 3, "inference_avg_us": 36620.4, "failed": False,
        "error": None,
    },
    "nnapi_silent_fallback.txt": {
        "delegation.status": "none", "delegation.delegate": "NNAPI", "delegation.kernels": 0,
        "inference_avg_us": 118406, "failed": False, "error": None,
    },
    "gpu_failed_to_apply.txt": {
        "failed": True, "stats": None, "inference_avg_us": None, "delegation.status": "none",
        "error": "Node number 205 (TfLiteGpuDelegateV2) failed to prepare.; Failed to apply GPU delegate.; "
                 "Benchmarking failed.",
    },
    "crash_segfault.txt": {"failed": True, "error": "Segmentation fault", "stats": None, "inference_avg_us": None,
                           "init_us": 21400.0},
    "replacing_without_total.txt": {
        "delegation.status": "partial", "delegation.delegated_nodes": 62, "delegation.total_nodes": None,
        "delegation.kernels": 2, "stats.count": 50, "warmup_stats": None, "inference_avg_us": 60521.3,
        "failed": False, "error": None,
    },
    "litert_compiled_model.txt": {
        "format": "litert", "init_us": 233810.0, "first_inference_us": 7710550.0, "warmup_avg_us": 7512400.0,
        "inference_avg_us": 7430200.0, "stats.count": 10, "stats.min": 7398020.0, "stats.max": 7490770.0,
        "stats.std": 27310.0, "stats.median": None, "memory.init_mb": 41.23, "memory.overall_mb": 118.5,
        "memory.peak_mb": 121.75, "failed": False, "error": None,
    },
    # Real outputs of ai-edge-litert 2.3.0's litert-benchmark (see outputs/README.md).
    "litert_py_cpu.txt": {
        "format": "litert_python", "init_us": 4890.0, "first_inference_us": 380.0, "warmup_avg_us": 250.0,
        "inference_avg_us": 560.0, "stats.count": 20, "stats.min": 140.0, "stats.max": 8340.0,
        "stats.median": 150.0, "stats.p5": 140.0, "stats.p95": 580.0, "stats.std": 1830.0,
        "delegation.fully_accelerated": True, "delegation.not_loaded": ["npu"],
        "delegation.accelerators": ["CPU"], "failed": False, "error": None,
    },
    "litert_py_npu_not_loaded.txt": {
        "format": "litert_python", "inference_avg_us": 840.0, "stats.count": 10, "stats.median": 210.0,
        "delegation.fully_accelerated": True, "delegation.not_loaded": ["npu"],
        "delegation.accelerators": ["NPU", "CPU"], "failed": False, "error": None,
    },
    "litert_py_gpu_failed.txt": {
        "stats": None, "inference_avg_us": None, "delegation.accelerators": ["GPU", "CPU"], "failed": True,
        "error": "Failed to initialize WebGPU environment: INTERNAL: No adapters found; Failed to get or create "
                 "delegate WebGPU environment: INTERNAL: Failed to initialize WebGPU environment; "
                 "Traceback (most recent call last):; RuntimeError: ERROR: [./litert/cc/litert_compiled_model.h:1961]",
    },
    # Constructed from SPEC §7b's formats of the LiteRT 2.x C++ tool.
    "litert_cc_gpu_not_loaded.txt": {
        "format": "litert", "init_us": 41070.0, "inference_avg_us": 17310.0, "stats.count": 50,
        "stats.std": 290.0, "memory.init_mb": 9.87, "memory.overall_mb": 23.02, "memory.peak_mb": None,
        "delegation.not_loaded": ["gpu"], "delegation.status": None, "failed": False, "error": None,
    },
    "litert_cc_npu_full.txt": {
        "format": "litert", "inference_avg_us": 870.0, "stats.min": 810.0, "stats.std": 40.0,
        "memory.peak_mb": 36.0, "delegation.not_loaded": [], "failed": False, "error": None,
    },
    "litert_cc_full_delegation_with_cpu.txt": {
        "stats": None, "inference_avg_us": None, "failed": True,
        "error": "Requesting full delegation and CPU acceleration are incompatible; Benchmarking failed.",
    },
    # Constructed: the classic tool with two delegates, and with NNAPI missing on the phone.
    "classic_gpu_full_nnapi_none.txt": {
        "inference_avg_us": 17460.2, "stats.count": 57, "delegation.status": "full", "delegation.delegate": "GPU",
        "delegation.delegates": {"gpu": "full", "nnapi": "none"}, "delegation.delegated_nodes": 64,
        "failed": False, "error": None,
    },
    "classic_nnapi_unsupported_platform.txt": {
        "inference_avg_us": 44088.4, "stats.median": 44050, "delegation.status": "none",
        "delegation.delegate": "NNAPI", "delegation.delegates": {"nnapi": "none"}, "failed": False, "error": None,
    },
}


def _check(parsed: dict, expected: dict) -> None:
    for key, want in expected.items():
        got = pick(parsed, key)
        if isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-9), key
        else:
            assert got == want, key


def _shared_files() -> list[Path]:
    return sorted(SHARED.glob("*.txt")) if SHARED.is_dir() else []


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared fixtures not found at {SHARED} (CI checks out shared/ beside the repo)")
@pytest.mark.parametrize("path", _shared_files(), ids=lambda p: p.name)
def test_every_shared_fixture(path):
    assert path.name in SHARED_EXPECTED, f"{path.name}: read its values off the text into SHARED_EXPECTED"
    _check(parse_output(path.read_text()), SHARED_EXPECTED[path.name])


def test_every_own_output_has_expectations():
    benchmark_outputs = [p.name for p in OUTPUTS.glob("*.txt") if not p.name.startswith("thermalservice_")]
    assert sorted(benchmark_outputs) == sorted(OWN_EXPECTED)  # dumpsys thermalservice: tests/android_bench/test_thermal.py


@pytest.mark.parametrize("name, expected", sorted({**SHARED_EXPECTED, **OWN_EXPECTED}.items()))
def test_every_expectation_pins_the_outcome(name, expected):
    """Each fixture says whether it failed, with which error, and its timing or that there is none."""
    assert {"failed", "error", "inference_avg_us"} <= set(expected), name
    assert (expected["error"] is not None) == expected["failed"] == (expected["inference_avg_us"] is None), name


@pytest.mark.parametrize("name", sorted(OWN_EXPECTED))
def test_own_outputs(name):
    _check(parse_output((OUTPUTS / name).read_text()), OWN_EXPECTED[name])


def test_failure_text_is_reported():
    parsed = parse_output((OUTPUTS / "gpu_failed_to_apply.txt").read_text())
    assert "Failed to apply GPU delegate" in parsed["error"] and "Benchmarking failed" in parsed["error"]
    gpu = parse_output((SHARED / "gpu_unsupported_ops.txt").read_text()) if SHARED.is_dir() else None
    if gpu is not None:
        assert "failed to prepare" in gpu["error"]


def test_empty_output_is_a_failure_not_zero():
    parsed = parse_output("")
    assert parsed["failed"] and parsed["error"] == "no timing results in the output"
    assert parsed["stats"] is None and parsed["inference_avg_us"] is None


@pytest.mark.parametrize(
    "line, expected",
    [
        ("count=50 first=1 curr=2 min=1 max=3 avg=2.5 std=0.5", {"count": 50, "avg": 2.5, "median": None}),
        ("count=5 first=1 curr=2 min=1 max=3 avg=1.23457e+06 std=1e+03 p5=1 median=2 p95=3", {"avg": 1234570.0, "std": 1000.0, "median": 2}),
        ("count=7 curr=42(all same)", {"min": 42, "max": 42, "avg": 42, "std": 0}),
        ("count=0", {"count": 0, "avg": None}),
    ],
)
def test_stats_line(line, expected):
    stats = parse_stats_line(line)
    for key, value in expected.items():
        assert stats[key] == value, key


@pytest.mark.parametrize(
    "raw",
    [
        "INFO: count=3 curr=1",
        "VERBOSE: count=3 curr=1",
        "ERROR: count=3 curr=1",
        "11-24 15:02:14.212  8123  8123 I tflite  : count=3 curr=1",
        "I/tflite  ( 8123): count=3 curr=1",
        "I/tflite: count=3 curr=1",
        "INFO: [benchmark_litert_model.h:68] count=3 curr=1",
    ],
)
def test_prefixes_are_stripped(raw):
    assert strip_prefix(raw) == "count=3 curr=1"


def test_cli_parse_json(capsys):
    code = main(["parse", str(OUTPUTS / "plain_new_percentiles.txt"), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["inference_avg_us"] == 54102.6 and data["stats"]["median"] == 53988


def test_cli_parse_failed_output_exits_1(capsys):
    assert main(["parse", str(OUTPUTS / "crash_segfault.txt"), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["failed"] is True


def test_cli_parse_missing_file(capsys, tmp_path):
    assert main(["parse", str(tmp_path / "nope.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_refused_ops_are_named_in_the_fallback_sentence():
    from android_bench.result import describe_delegation

    text = ("INFO: Created TensorFlow Lite delegate for GPU.\n"
            "ERROR: Following operations are not supported by GPU delegate:\n"
            "DEPTH_TO_SPACE: Operation is not supported.\n"
            "60 operations will run on the GPU, and the remaining 4 operations will run on the CPU.\n"
            "count=8 first=1 curr=2 min=1 max=3 avg=2 std=1\n")
    parsed = parse_output(text)
    assert parsed["delegation"]["unsupported_ops"] == [{"op": "DEPTH_TO_SPACE", "reason": "Operation is not supported."}]
    assert parsed["delegation"]["status"] == "partial" and not parsed["failed"]
    sentence = describe_delegation({**parsed, "delegate": "gpu"})
    assert "took only part of the graph" in sentence and "ops it does not support: DEPTH_TO_SPACE" in sentence
