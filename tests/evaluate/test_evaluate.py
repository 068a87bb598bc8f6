"""Evaluation of a model on a dataset: one loop for every backend, the eval record, CLI errors."""

import json

import numpy as np
import pytest
from PIL import Image

from mobiledepth.data.diw import load_dataset
from mobiledepth.errors import UserError
from mobiledepth.evaluate.evaluate import evaluate, evaluate_module, evaluate_runtime, open_runtime


class ColumnRuntime:
    """A fake model: depth = column index (larger x = farther), at the 8x8 input size."""

    backend = "fake"
    input_size = (8, 8)

    def __call__(self, images):
        n = images.shape[0]
        return np.broadcast_to(np.arange(8, dtype=np.float32), (n, 1, 8, 8)).copy()


def test_evaluate_runtime_by_hand(tmp_path):
    for name in ("a", "b"):
        Image.new("RGB", (24, 16)).save(tmp_path / f"{name}.thumb", format="JPEG")
    (tmp_path / "test.csv").write_text(
        "./a.thumb\n1,20,1,2,>,24,16\n"  # x 19 vs 1: A farther -> correct
        "./a.thumb\n5,20,9,2,<,24,16\n"  # says A closer -> wrong
        "./b.thumb\n3,5,12,5,>,24,16\n"  # same column -> tie -> wrong
        "./b.thumb\n3,1,3,24,<,24,16\n"  # borders x 0 vs 23: A closer -> correct
    )
    data = load_dataset(tmp_path / "test.csv")
    result, per_image = evaluate_runtime(ColumnRuntime(), data, (8, 8), batch_size=1)
    assert (result.correct, result.pairs) == (2, 4) and per_image == [1, 1]
    flipped, _ = evaluate_runtime(ColumnRuntime(), data, (8, 8), batch_size=2, depth_like=False)
    assert (flipped.correct, flipped.pairs) == (1, 4)  # the three non-ties flip (only pair 2 right), the tie stays wrong


def test_evaluate_zoo_model_writes_the_eval_record(synth_root, tmp_path):
    out = tmp_path / "eval.json"
    result = evaluate("mdepth-tiny", synth_root, batch_size=5, input_size=(64, 96), out=out)
    record = json.loads(out.read_text())
    for key in ("kind", "schema", "created_at", "model_path", "artifact_sha256", "model_name", "backend",
                "precision", "dataset", "metric", "value", "correct", "pairs"):
        assert key in record
    assert record["kind"] == "eval" and record["schema"] == 1 and record["metric"] == "whdr"
    assert record["backend"] == "torch" and record["model_name"] == "mdepth-tiny"
    assert record["pairs"] == 12 and record["value"] == pytest.approx(1 - record["correct"] / 12)
    assert set(record["dataset"]) >= {"name", "root", "hash", "images", "pairs"}
    assert len(record["dataset"]["hash"]) == 64


def test_checkpoint_and_onnx_backends_agree_with_the_module(synth_root, tmp_path):
    torch = pytest.importorskip("torch")
    from mobiledepth.arch import build_model, save_checkpoint
    from mobiledepth.export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = build_model("mdepth-tiny", with_heads=False).eval()
    data = load_dataset(synth_root)
    reference = evaluate_module(model, data, (64, 96))
    ckpt = save_checkpoint(tmp_path / "m.pt", model, model.spec, input_size=[64, 96])
    from_ckpt = evaluate(str(ckpt), synth_root)
    assert from_ckpt.input_size == (64, 96)  # read from the checkpoint's meta
    assert (from_ckpt.whdr.correct, from_ckpt.artifact_sha256 is not None) == (reference.correct, True)
    onnx_path = export_onnx(model, (64, 96), tmp_path / "m.onnx")
    from_onnx = evaluate(str(onnx_path), synth_root, batch_size=4)
    assert from_onnx.backend == "onnx" and from_onnx.whdr == reference


def test_open_runtime_rejects_bad_combinations(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(UserError, match="pass --backend onnx"):
        open_runtime(str(tmp_path / "m.onnx"), backend="torch")
    with pytest.raises(UserError, match="does not exist"):
        open_runtime(str(tmp_path / "gone.tflite"))
    with pytest.raises(UserError, match="multiple of 32"):
        open_runtime("mdepth-tiny", input_size=(50, 64))


def test_eval_cli_json_and_errors(synth_root, tmp_path, capsys):
    from mobiledepth.cli import main

    assert main(["eval", "--model", "mdepth-tiny", "--data", str(synth_root), "--input-size", "64x96",
                 "--json", "--no-store", "--limit", "4"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["pairs"] == 4 and record["dataset"]["images"] == 4
    for argv in (
        ["eval", "--model", "nope-model", "--data", str(synth_root), "--no-store"],
        ["eval", "--model", "mdepth-tiny", "--data", str(tmp_path / "missing"), "--no-store"],
        ["eval", "--model", "mdepth-tiny", "--data", str(synth_root), "--input-size", "50x50", "--no-store"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err


def test_eval_cli_ingests_into_the_given_store(synth_root, tmp_path, capsys):
    import sqlite3

    from mobiledepth.cli import main

    store = tmp_path / "store.sqlite"
    assert main(["eval", "--model", "mdepth-tiny", "--data", str(synth_root), "--input-size", "64x96",
                 "--limit", "3", "--store", str(store), "--out", str(tmp_path / "rec.json")]) == 0
    assert "stored in" in capsys.readouterr().out
    record = json.loads((tmp_path / "rec.json").read_text())
    with sqlite3.connect(store) as conn:
        rows = conn.execute("SELECT metric, value, pairs, dataset_hash FROM evals").fetchall()
    assert rows == [("whdr", record["value"], 3, record["dataset"]["hash"])]


@pytest.mark.slow
def test_tflite_fp32_and_int8_evaluate_like_torch(synth_root, tmp_path):
    """Export a trained-from-seed tiny model to TFLite and evaluate every artifact (about a minute)."""
    torch = pytest.importorskip("torch")
    from mobiledepth.arch import build_model, save_checkpoint
    from mobiledepth.export import export_model

    torch.manual_seed(1)
    model = build_model("mdepth-tiny")
    ckpt = save_checkpoint(tmp_path / "m.pt", model, model.spec, input_size=[64, 96])
    reference = evaluate(str(ckpt), synth_root)
    exported = export_model(model="mdepth-tiny", checkpoint=str(ckpt), input_size=(64, 96),
                            precisions="fp32,int8", calibration_data=str(synth_root), out=str(tmp_path / "export"))
    results = {}
    for artifact in exported.artifacts:
        if artifact["format"] == "tflite":
            results[artifact["precision"]] = evaluate(str(exported.run_dir / artifact["path"]), synth_root)
    assert results["fp32"].backend == "tflite" and results["fp32"].precision == "fp32"
    assert results["int8"].precision == "int8"
    assert abs(results["fp32"].whdr.correct - reference.whdr.correct) <= 1  # fp32 rounding may flip a near-tie
    assert 0 <= results["int8"].value <= 1
