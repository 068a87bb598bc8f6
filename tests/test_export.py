"""`mobiledepth export`: the chain torch → ONNX → TFLite, heads stripped, parity measured."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from mobiledepth.arch import build_model, load_checkpoint
from mobiledepth.errors import StageFailed, UserError
from mobiledepth.export import export_model
from mobiledepth.export.runtimes import load_runtime
from mobiledepth.io import sha256_file

TINY = "mdepth-tiny"
TINY_SIZE = (64, 64)


def test_record_lists_every_artifact_with_hash_and_layout(tiny_export):
    record = json.loads((tiny_export.run_dir / "export.json").read_text())
    assert record == json.loads(json.dumps(tiny_export.record))
    recommended = [a["path"] for a in record["artifacts"] if a.get("recommended", True)]
    assert recommended == ["model.onnx", "model_fp32.tflite", "model_fp16.tflite", "model_int8.tflite"]
    assert all(a["route"] in ("torch.onnx", "onnx2tf", "litert-torch") for a in record["artifacts"])
    for art in record["artifacts"]:
        path = tiny_export.run_dir / art["path"]
        assert art["sha256"] == sha256_file(path) and art["size_bytes"] == path.stat().st_size
    tflite = [a for a in record["artifacts"] if a["format"] == "tflite"]
    assert all(a["layout"] == "NHWC" and a["input_shape"] == [1, *TINY_SIZE, 3] for a in tflite)
    assert all(a["output_shape"] == [1, *TINY_SIZE, 1] for a in tflite)
    assert record["model"]["params"] == 26377 and record["model"]["macs"] > 0
    assert record["versions"]["onnx2tf"] and record["timings_s"]["tflite"] > 0
    assert (tiny_export.run_dir / "config.yaml").exists() and (tiny_export.run_dir / "onnx2tf.log").exists()
    assert not list(tiny_export.run_dir.parent.glob(".*tmp"))  # no temporary build left behind


def test_parity_bars_are_met_and_int8_is_reported(tiny_export):
    parity = {a["path"]: a["parity"] for a in tiny_export.artifacts}
    assert parity["model.onnx"]["max_abs_err_rel"] <= 1e-4 and parity["model.onnx"]["passed"]
    assert parity["model_fp32.tflite"]["max_abs_err_rel"] <= 1e-4 and parity["model_fp32.tflite"]["passed"]
    assert parity["model_fp16.tflite"]["max_abs_err_rel"] <= 1e-2
    assert parity["model_fp16.tflite"]["ordinal_agreement"] >= 0.999
    assert parity["model_int8.tflite"]["passed"] is None  # reported, no bar
    assert 0.5 < parity["model_int8.tflite"]["ordinal_agreement"] <= 1.0


def test_artifacts_compute_what_torch_computes_on_unseen_images(tiny_export, tiny_checkpoint, test_images):
    """Independent of the export's own check: fresh images, NHWC handled by the runtime."""
    model, _, _ = load_checkpoint(tiny_checkpoint, with_heads=False)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(test_images)).numpy()
    span = expected.max() - expected.min()
    for name, tol in (("model.onnx", 1e-4), ("model_fp32.tflite", 1e-4), ("model_fp16.tflite", 1e-2)):
        got = load_runtime(tiny_export.run_dir / name)(test_images)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() / span <= tol, name


def test_int8_runtime_quantises_input_and_dequantises_output(tiny_export, test_images):
    runtime = load_runtime(tiny_export.run_dir / "model_int8.tflite")
    assert runtime.precision == "int8" and runtime.input["dtype"] == np.int8
    out = runtime(test_images)
    assert out.dtype == np.float32 and out.shape == (3, 1, *TINY_SIZE) and np.ptp(out) > 0


def test_heads_are_not_in_the_exported_graphs(tiny_export):
    with_heads = build_model(TINY)
    convs_with_heads = sum(isinstance(m, torch.nn.Conv2d) for m in with_heads.modules())
    head_convs = sum(isinstance(m, torch.nn.Conv2d) for m in with_heads.heads.modules())
    assert head_convs == 2
    # each phase-split upsampling block runs its depthwise and projection convs once per phase (4x)
    assert tiny_export.record["graph_rewrites"] == {"phase_split_upsampling": 4}
    deployed_convs = convs_with_heads - head_convs + 4 * 3 * 2
    graph = onnx.load(str(tiny_export.run_dir / "model.onnx")).graph
    assert len(graph.input) == 1 and len(graph.output) == 1
    assert sum(node.op_type == "Conv" for node in graph.node) == deployed_convs
    ops = next(a for a in tiny_export.artifacts if a["path"] == "model_fp32.tflite")["ops"]
    assert ops.get("CONV_2D", 0) + ops.get("DEPTHWISE_CONV_2D", 0) == deployed_convs


def _fake_converter(source_dir: Path):
    """Stands in for onnx2tf by copying an earlier conversion (for failure-path tests)."""
    def convert(onnx_path, work_dir, images, timeout_s=0):
        work_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(source_dir / "model_fp32.tflite", work_dir / "fp32.tflite")
        shutil.copy(source_dir / "model_fp16.tflite", work_dir / "fp16.tflite")
        return {"fp32": work_dir / "fp32.tflite", "fp16": work_dir / "fp16.tflite", "saved_model": work_dir}
    return convert


def test_broken_parity_fails_and_publishes_nothing(tiny_export, tiny_checkpoint, tmp_path, monkeypatch):
    import mobiledepth.export.parity as parity
    import mobiledepth.export.tflite as tflite

    monkeypatch.setattr(tflite, "convert_with_onnx2tf", _fake_converter(tiny_export.run_dir))
    monkeypatch.setitem(parity.PARITY_BARS, "fp32", {"max_abs_err_rel": 0.0})
    out = tmp_path / "run"
    with pytest.raises(StageFailed, match="breaks parity"):
        export_model(TINY, checkpoint=tiny_checkpoint, out=out)
    assert not out.exists()
    failed = json.loads((tmp_path / "run.failed" / "export.json").read_text())
    assert failed["failed"] is True and "breaks parity" in failed["error"] and failed["artifacts"]
    assert not list(tmp_path.glob(".*tmp"))


def test_a_previous_good_export_survives_a_failed_one(tiny_export, tiny_checkpoint, tmp_path, monkeypatch):
    import mobiledepth.export.parity as parity
    import mobiledepth.export.tflite as tflite

    out = tmp_path / "run"
    shutil.copytree(tiny_export.run_dir, out)
    before = (out / "export.json").read_text()
    monkeypatch.setattr(tflite, "convert_with_onnx2tf", _fake_converter(tiny_export.run_dir))
    monkeypatch.setitem(parity.PARITY_BARS, "fp16", {"max_abs_err_rel": 0.0})
    with pytest.raises(StageFailed):
        export_model(TINY, checkpoint=tiny_checkpoint, out=out)
    assert (out / "export.json").read_text() == before


FACTORY_MODULE = '''
import torch

class TwoHeaded(torch.nn.Module):
    """A user's model: returns (depth, training-only auxiliary map)."""
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 1, 3, padding=1))
        self.aux = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.body(x), self.aux(x)

def make():
    torch.manual_seed(0)
    model = TwoHeaded()
    model.input_size = (32, 32)
    return model

def broken():
    return "not a module"
'''


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_depth.py").write_text(FACTORY_MODULE)
    monkeypatch.chdir(tmp_path)
    yield "user_depth"


def test_user_factory_goes_through_the_same_chain(user_module, tmp_path):
    result = export_model(f"{user_module}:make", precisions="fp32", out=tmp_path / "user")
    graph = onnx.load(str(result.run_dir / "model.onnx")).graph
    assert len(graph.output) == 1 and sum(n.op_type == "Conv" for n in graph.node) == 2  # aux dropped
    assert result.record["model"]["source"] == "factory"
    assert all(a["parity"]["passed"] for a in result.artifacts)
    assert result.run_dir == tmp_path / "user" and result.record["input_size"] == [32, 32]


def test_bad_factories_are_one_line_errors(user_module):
    with pytest.raises(UserError, match="cannot import 'no_such_module'"):
        export_model("no_such_module:make")
    with pytest.raises(UserError, match="has no callable 'nope'"):
        export_model(f"{user_module}:nope")
    with pytest.raises(UserError, match="not a torch.nn.Module"):
        export_model(f"{user_module}:broken")


def test_bad_inputs_fail_before_any_work(tmp_path, tiny_checkpoint):
    with pytest.raises(UserError, match="did you mean 'int8'"):
        export_model(TINY, precisions="fp32,in8")
    with pytest.raises(UserError, match="multiples of 32"):
        export_model(TINY, input_size=(100, 64))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="holds no images"):
        export_model(TINY, calibration_data=empty, out=tmp_path / "x")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="a-file is a file, not a folder"):
        export_model(TINY, checkpoint=tiny_checkpoint, out=blocker / "run")
    assert not (tmp_path / "x").exists()


def test_checkpoint_exports_say_their_weights_are_not_random(tiny_export):
    assert tiny_export.record["random_weights"] is False and tiny_export.record["seed"] is None


def test_int8_below_its_warning_bar_is_a_warning_not_an_error(tiny_export):
    int8 = next(a for a in tiny_export.artifacts if a["precision"] == "int8")
    assert int8["parity"]["passed"] is None and int8["parity"]["ordinal_agreement"] < 0.99
    warning = [w for w in tiny_export.warnings if w.startswith("model_int8.tflite: int8 orders")]
    assert len(warning) == 1 and f"{int8['parity']['ordinal_agreement']:.4f} < 0.99" in warning[0]


def test_stale_builds_of_dead_runs_are_swept_and_live_ones_kept(tmp_path):
    import os
    import subprocess

    from mobiledepth.export.pipeline import sweep_stale_builds

    finished = subprocess.Popen(["true"])
    finished.wait()
    dead, live = finished.pid, os.getpid()
    out = tmp_path / "run"
    for name in (f".run.build-{dead}-x1.tmp", f".run.build-{live}-x2.tmp", f".other.build-{dead}-x3.tmp",
                 f".run.old-{dead}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "export.json").write_text(name)
    removed = sweep_stale_builds(out)
    assert [p.name for p in removed] == [f".run.build-{dead}-x1.tmp"]
    # a good export a dead run had moved aside, with nothing in its place, is put back
    assert (out / "export.json").read_text() == f".run.old-{dead}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".other.build-{dead}-x3.tmp", f".run.build-{live}-x2.tmp", "run"]
