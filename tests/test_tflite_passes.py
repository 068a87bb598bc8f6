"""The TFLite graph pass that folds onnx2tf's NCHW concatenations back to NHWC."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def transposed_concat_model(tmp_path_factory):
    """TRANSPOSE(a), TRANSPOSE(b) → CONCAT(axis=1) → TRANSPOSE → CONV, as onnx2tf writes it."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "ab_tflite_models_passes", Path(__file__).resolve().parent / "android_bench" / "ab_tflite_models.py")
    builders = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builders)
    builders.skip_without_converter()
    path = tmp_path_factory.mktemp("pass") / "concat.tflite"
    builders.build_tflites([{"kind": "transposed_concat", "path": path}])
    return path


def _ops(path) -> dict[str, int]:
    from ai_edge_litert.interpreter import Interpreter

    counts: dict[str, int] = {}
    for op in Interpreter(model_path=str(path))._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts


def _run(path, a, b):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inputs = sorted(interpreter.get_input_details(), key=lambda d: d["shape"][-1], reverse=True)
    interpreter.set_tensor(inputs[0]["index"], a)
    interpreter.set_tensor(inputs[1]["index"], b)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_fold_removes_the_transposes_and_keeps_the_output(transposed_concat_model, tmp_path):
    from mobiledepth.export.tflite_passes import fold_transposed_concats

    before = _ops(transposed_concat_model)
    assert before.get("TRANSPOSE", 0) == 3
    data, folded = fold_transposed_concats(transposed_concat_model.read_bytes())
    assert folded == 1
    out = tmp_path / "folded.tflite"
    out.write_bytes(data)
    assert _ops(out).get("TRANSPOSE", 0) == 0 and _ops(out)["CONCATENATION"] == 1
    rng = np.random.default_rng(1)
    a = rng.standard_normal((1, 8, 8, 6)).astype(np.float32)
    b = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
    np.testing.assert_array_equal(_run(out, a, b), _run(transposed_concat_model, a, b))


def test_fold_leaves_a_model_without_the_pattern_alone(tiny_export):
    from mobiledepth.export.tflite_passes import fold_transposed_concats

    data = (tiny_export.run_dir / "model_fp32.tflite").read_bytes()
    assert fold_transposed_concats(data) == (data, 0)
    assert all("TRANSPOSE" not in a.get("ops", {}) for a in tiny_export.artifacts)
