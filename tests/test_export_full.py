"""Full-size export of the paper's model (slow tier: `pytest -m slow`)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("size", [(256, 256), (224, 448)])
def test_paper_model_exports_with_parity(tmp_path, size):
    from mobiledepth.export import export_model
    from mobiledepth.export.calibration import generated_images
    from mobiledepth.export.runtimes import load_runtime

    result = export_model("mdepth-mnv2-fbnet", input_size=size, precisions="fp32,fp16", out=tmp_path / "paper")
    parity = {a["path"]: a["parity"] for a in result.artifacts}
    assert parity["model.onnx"]["passed"] and parity["model_fp32.tflite"]["passed"]
    assert parity["model_fp32.tflite"]["max_abs_err_rel"] <= 1e-4
    fp32 = next(a for a in result.artifacts if a["path"] == "model_fp32.tflite")
    assert fp32["input_shape"] == [1, *size, 3] and "TRANSPOSE" not in fp32["ops"]
    images = generated_images(2, size, seed=77)
    onnx_out = load_runtime(result.run_dir / "model.onnx")(images)
    tflite_out = load_runtime(result.run_dir / "model_fp32.tflite")(images)
    assert np.abs(onnx_out - tflite_out).max() / np.ptp(onnx_out) <= 1e-4
