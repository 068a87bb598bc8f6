"""Converter routes: --converter resolution, route-named artifacts, the recommended pick, the
dynamo ONNX fallback, and the litert-torch route end to end (skipped where it is not installed)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from torch import nn

from mobiledepth.errors import UserError
from mobiledepth.export import routes
from mobiledepth.records import read_export_record

HAS_LITERT = all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_quantizer"))
HAS_ONNXSCRIPT = importlib.util.find_spec("onnxscript") is not None
needs_litert = pytest.mark.skipif(not HAS_LITERT, reason="litert-torch is not installed here "
                                                          "(pip install 'litert-torch==0.10.*')")


class PyramidPooling(nn.Module):
    """A PSP-style head of our own (PSPNet's pyramid pooling: average-pool to 1, 2, 3, 6 bins,
    1x1 conv, upsample, concatenate); a public PSPNet needs torchvision, which this project does not."""

    def __init__(self, channels: int = 16, bins=(1, 2, 3, 6)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, stride=4, padding=1), nn.ReLU())
        self.bins = bins
        self.branches = nn.ModuleList(nn.Conv2d(channels, 4, 1) for _ in bins)
        self.head = nn.Conv2d(channels + 4 * len(bins), 1, 3, padding=1)

    def forward(self, x):
        f = self.stem(x)
        pooled = [nn.functional.interpolate(conv(nn.functional.adaptive_avg_pool2d(f, b)), size=f.shape[2:],
                                            mode="bilinear", align_corners=False)
                  for b, conv in zip(self.bins, self.branches)]
        out = self.head(torch.cat([f, *pooled], dim=1))
        return nn.functional.interpolate(out, scale_factor=4, mode="bilinear", align_corners=False)


PSP_MODULE = f'''
import torch
from torch import nn
{__import__("inspect").getsource(PyramidPooling)}
def make():
    model = PyramidPooling()
    model.input_size = (64, 64)
    return model
'''


@pytest.fixture()
def psp_module(user_module):
    user_module("psp_net", PSP_MODULE)
    return "psp_net:make"


def test_converter_choice_is_checked_before_work(monkeypatch):
    monkeypatch.setattr(routes, "installed_routes", lambda: ["litert-torch"])
    assert routes.resolve_converters(None) == ["litert-torch"]
    with pytest.raises(UserError, match="unknown converter 'onnx'.*choose from onnx2tf, litert-torch, all"):
        routes.resolve_converters("onnx")
    with pytest.raises(UserError, match="converter onnx2tf is not installed.*--converter litert-torch"):
        routes.resolve_converters("all")
    monkeypatch.setattr(routes, "installed_routes", lambda: [])
    with pytest.raises(UserError, match="no converter is installed"):
        routes.resolve_converters(None)


def _artifact(tmp_path, precision, route, passed=True):
    path = tmp_path / routes.artifact_name(precision, route)
    path.write_bytes(route.encode())
    return {"path": path.name, "format": "tflite", "precision": precision, "route": route, "sha256": route + precision,
            "parity": {"passed": passed}}


def test_fastest_passing_artifact_is_recommended_and_takes_the_plain_name(tmp_path, monkeypatch):
    times = {"onnx2tf": 20.0, "litert-torch": 10.0}
    monkeypatch.setattr(routes, "time_interleaved", lambda paths, image, threads: [times[p.name.split(".")[1]] for p in paths])
    arts = [_artifact(tmp_path, "fp32", "onnx2tf"), _artifact(tmp_path, "fp32", "litert-torch"),
            _artifact(tmp_path, "fp16", "onnx2tf"), _artifact(tmp_path, "fp16", "litert-torch", passed=False)]
    choice = routes.choose_recommended(arts, tmp_path, None)
    assert choice["fp32"]["recommended"] == "litert-torch" and choice["fp32"]["median_ms"]["onnx2tf"] == 20.0
    assert choice["fp16"]["recommended"] == "onnx2tf"  # the faster one breaks parity
    assert [(a["path"], a["recommended"]) for a in arts] == [
        ("model_fp32.onnx2tf.tflite", False), ("model_fp32.tflite", True),
        ("model_fp16.tflite", True), ("model_fp16.litert-torch.tflite", False)]
    assert (tmp_path / "model_fp32.tflite").read_bytes() == b"litert-torch"
    # bench, check, eval and the store read the record through records.py: the recommended one by default
    (tmp_path / "export.json").write_text(json.dumps({"kind": "export", "schema": 1, "artifacts": arts}))
    record = read_export_record(tmp_path)
    assert [a["path"] for a in record.tflite_artifacts(recommended_only=True)] == ["model_fp32.tflite", "model_fp16.tflite"]
    assert record.tflite_artifact()["route"] == "litert-torch" and len(record.tflite_artifacts()) == 4
    assert record.tflite_artifact("onnx2tffp32")["path"] == "model_fp32.onnx2tf.tflite"


def test_bench_times_the_recommended_artifacts_by_default(tmp_path, monkeypatch):
    from mobiledepth.bench import resolve_targets
    from mobiledepth.io import sha256_file

    monkeypatch.setattr(routes, "time_interleaved", lambda paths, image, threads: [2.0, 1.0])
    arts = [_artifact(tmp_path, "fp32", "onnx2tf"), _artifact(tmp_path, "fp32", "litert-torch")]
    routes.choose_recommended(arts, tmp_path, None)
    for art in arts:
        art["sha256"] = sha256_file(tmp_path / art["path"])
    (tmp_path / "export.json").write_text(json.dumps({"kind": "export", "schema": 1, "artifacts": arts}))
    items, _ = resolve_targets(tmp_path)
    assert [item.path.name for item in items] == ["model_fp32.tflite"]


def test_torchscript_refusal_falls_back_to_dynamo(tmp_path):
    from mobiledepth.export.onnx_export import export_onnx_any
    from mobiledepth.export.runtimes import OnnxRuntime

    if not HAS_ONNXSCRIPT:
        pytest.skip("onnxscript is not installed (the dynamo exporter needs it)")
    model = PyramidPooling().eval()
    result = export_onnx_any(model, (64, 64), tmp_path / "psp.onnx")
    assert result.exporter == "dynamo" and result.refused_op == "adaptive_avg_pool2d"
    images = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    assert np.abs(OnnxRuntime(result.path)(images) - expected).max() <= 1e-4 * np.ptp(expected)


def test_both_onnx_exporters_failing_is_one_line_naming_the_op(tmp_path, monkeypatch):
    from mobiledepth.export import onnx_export

    def refuse(*args, **kwargs):
        raise RuntimeError("dynamo could not export\nlong traceback")

    monkeypatch.setattr(onnx_export, "_dynamo", refuse)
    with pytest.raises(onnx_export.OnnxRefused) as caught:
        onnx_export.export_onnx_any(PyramidPooling().eval(), (64, 64), tmp_path / "psp.onnx")
    message = str(caught.value)
    assert "\n" not in message and caught.value.op == "adaptive_avg_pool2d"
    assert message.startswith("ONNX export refuses adaptive_avg_pool2d") and "--converter litert-torch" in message
    assert not (tmp_path / "psp.onnx").exists()


@needs_litert
def test_litert_torch_route_applies_the_rewrites_with_nhwc_io_and_parity(tmp_path, tiny_checkpoint):
    from mobiledepth.export import export_model

    result = export_model("mdepth-tiny", checkpoint=tiny_checkpoint, precisions="fp32,fp16", out=tmp_path / "lt",
                          converter="litert-torch")
    arts = {a["path"]: a for a in result.artifacts}
    assert set(arts) == {"model_fp32.tflite", "model_fp16.tflite"}  # one route: plain names, no ONNX
    assert all(a["route"] == "litert-torch" and a["recommended"] and a["parity"]["passed"] for a in arts.values())
    assert all(a["layout"] == "NHWC" and a["input_shape"] == [1, 64, 64, 3] for a in arts.values())
    assert result.record["graph_rewrites"] == {"phase_split_upsampling": 4}
    assert "RESIZE_NEAREST_NEIGHBOR" not in arts["model_fp32.tflite"]["ops"]
    assert (result.run_dir / "litert-torch.log").exists()


@needs_litert
def test_litert_torch_delivers_when_the_onnx_route_cannot(psp_module, tmp_path, monkeypatch):
    from mobiledepth.export import export_model, onnx_export

    monkeypatch.setattr(routes, "installed_routes", lambda: ["onnx2tf", "litert-torch"])
    monkeypatch.setattr(onnx_export, "_dynamo", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no")))
    result = export_model(psp_module, precisions="fp32", out=tmp_path / "psp", converter="all")
    assert [a["path"] for a in result.artifacts] == ["model_fp32.tflite"]
    assert result.artifacts[0]["route"] == "litert-torch" and result.artifacts[0]["parity"]["passed"]
    assert result.record["converters"]["onnx2tf"]["status"] == "failed"
    assert any("converter onnx2tf failed (ONNX export refuses adaptive_avg_pool2d" in w for w in result.warnings)
