"""The host runner on a real tiny TFLite model (built with tensorflow's converter)."""

from __future__ import annotations

import numpy as np
import pytest

from android_bench.errors import BenchUserError
from android_bench.host import HostModel, run_host


def test_run_host_keeps_every_sample_and_derives_stats(tiny_tflite):
    result = run_host(tiny_tflite, threads=1, runs=25, warmup=3)
    samples = result["samples_us"]
    assert not result["failed"] and result["samples_kind"] == "per_run" and len(samples) == 25
    assert all(s > 0 for s in samples)
    stats = result["stats"]
    assert stats["count"] == 25
    assert stats["median"] == pytest.approx(np.median(samples))
    assert stats["p90"] == pytest.approx(np.percentile(samples, 90))
    assert stats["mean"] == pytest.approx(np.mean(samples))
    assert stats["std"] == pytest.approx(np.std(samples))
    assert stats["min"] == min(samples) and stats["max"] == max(samples)
    assert result["device"]["profile"] == "host" and result["delegate"] == "cpu"
    assert result["tool"] == "ai-edge-litert" and result["tool_version"]
    assert result["init_us"] > 0 and result["first_inference_us"] > 0 and result["warmup_avg_us"] > 0
    assert result["memory"]["peak_mb"] > 0
    delegation = result["delegation"]
    assert {k: delegation[k] for k in ("status", "delegated_nodes", "total_nodes", "kernels")} == \
        {"status": "full", "delegated_nodes": 3, "total_nodes": 3, "kernels": 1}
    assert len(result["artifact_sha256"]) == 64


def test_host_model_runs_the_model_on_a_fixed_nonzero_input(tiny_tflite):
    model = HostModel(tiny_tflite, threads=2)
    assert model.time_once() > 0
    detail = model.interpreter.get_input_details()[0]
    data = model.interpreter.get_tensor(detail["index"])
    assert data.shape == (1, 32, 32, 3) and np.all(data != 0)
    model.time_once()
    out = model.interpreter.get_tensor(model.interpreter.get_output_details()[0]["index"])
    assert out.shape == (1, 32, 32, 1) and np.isfinite(out).all()


def test_zero_warmup_uses_the_first_timed_run_as_first_inference(tiny_tflite):
    result = run_host(tiny_tflite, runs=3, warmup=0)
    assert result["warmup_avg_us"] is None and result["first_inference_us"] == result["samples_us"][0]


@pytest.mark.parametrize("kwargs, message", [({"runs": 0}, "--runs"), ({"threads": 0}, "--threads"), ({"warmup": -1}, "--warmup")])
def test_bad_counts_are_rejected(tiny_tflite, kwargs, message):
    with pytest.raises(BenchUserError, match=message):
        run_host(tiny_tflite, **kwargs)


def test_missing_and_broken_models(tmp_path):
    with pytest.raises(BenchUserError, match="does not exist"):
        run_host(tmp_path / "missing.tflite")
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(BenchUserError, match="not a loadable TFLite model"):
        run_host(broken)


def test_host_compiled_model_runtime_or_one_clear_line(tiny_tflite):
    """LiteRT 2.x's CompiledModel on host where ai-edge-litert has it (2.3+), else one line naming the fix."""
    from android_bench.errors import BenchUserError
    from android_bench.host import run_host

    try:
        from ai_edge_litert import compiled_model as api
        has_api = hasattr(api, "Options") and hasattr(api.CompiledModel, "is_fully_accelerated")
    except ImportError:
        has_api = False
    if not has_api:
        with pytest.raises(BenchUserError, match=r"ai-edge-litert>=2\.3.*--host-runtime interpreter|ai-edge-litert 2\.3"):
            run_host(tiny_tflite, runs=3, warmup=1, runtime="compiled_model")
        return
    result = run_host(tiny_tflite, runs=3, warmup=1, runtime="compiled_model")
    assert result["tool"] == "ai-edge-litert:CompiledModel" and len(result["samples_us"]) == 3
    assert result["delegation"]["status"] == "full" and result["delegation"]["fully_accelerated"] is True
