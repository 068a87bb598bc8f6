"""The bench stage (mobiledepth.bench) and the `mobiledepth bench` command."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from mobiledepth.bench import bench
from mobiledepth.cli import main
from mobiledepth.errors import UserError
from mobiledepth.io import sha256_file

AB_TESTS = Path(__file__).resolve().parent / "android_bench"


def _load(name: str, file: Path):
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def stage_tflite(tmp_path_factory) -> Path:
    builder = _load("ab_tflite_models_stage", AB_TESTS / "ab_tflite_models.py")
    return builder.build_conv_tflite(tmp_path_factory.mktemp("stage") / "tiny.tflite")


@pytest.fixture
def run_dir(tmp_path, stage_tflite) -> Path:
    """An export run directory as `mobiledepth export` writes it (format of the team contract)."""
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    shutil.copy(stage_tflite, run / "model_fp32.tflite")
    (run / "model.onnx").write_bytes(b"onnx placeholder")
    artifact = {
        "path": "model_fp32.tflite", "format": "tflite", "precision": "fp32", "layout": "NHWC",
        "input_shape": [1, 32, 32, 3], "output_shape": [1, 32, 32, 1],
        "size_bytes": (run / "model_fp32.tflite").stat().st_size, "sha256": sha256_file(run / "model_fp32.tflite"),
        "parity": {"max_abs_err_rel": 0.0, "mean_abs_err_rel": 0.0, "ordinal_agreement": 1.0, "passed": True, "bar": 0.01},
    }
    onnx = {**artifact, "path": "model.onnx", "format": "onnx", "layout": "NCHW", "sha256": sha256_file(run / "model.onnx")}
    record = {
        "kind": "export", "schema": 1, "created_at": "2026-11-24T00:00:00Z",
        "model": {"name": "mdepth-tiny", "source": "test", "spec_hash": "x", "params": 1, "macs": 1,
                  "checkpoint": None, "checkpoint_sha256": None},
        "input_size": [32, 32], "artifacts": [onnx, artifact], "versions": {}, "timings_s": {},
    }
    (run / "export.json").write_text(json.dumps(record))
    return run


def test_bench_run_dir_links_results_to_artifacts(run_dir):
    run = bench(run_dir, devices=["host"], runs=6, warmup=1)
    [result] = run.results  # the ONNX artifact is not a TFLite model: skipped
    export = json.loads((run_dir / "export.json").read_text())
    assert result["artifact_sha256"] == export["artifacts"][1]["sha256"]
    assert result["model_name"] == "mdepth-tiny" and result["precision"] == "fp32"
    assert result["model_path"] == "model_fp32.tflite" and len(result["samples_us"]) == 6
    record = json.loads((run_dir / "bench.json").read_text())
    assert run.record_path == run_dir / "bench.json"
    assert record["kind"] == "bench" and record["schema"] == 1 and record["created_at"].endswith("Z")
    assert record["results"] == run.results
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    bench(run_dir, devices=["host"], runs=3, warmup=0)
    assert len(json.loads((run_dir / "bench.json").read_text())["results"]) == 2  # results accumulate


def test_bench_single_tflite_writes_beside_it(stage_tflite, tmp_path):
    model = tmp_path / "m.tflite"
    shutil.copy(stage_tflite, model)
    run = bench(model, runs=3, warmup=1)
    assert run.record_path == tmp_path / "bench.json"
    assert run.results[0]["artifact_sha256"] == sha256_file(model) and run.results[0]["model_name"] is None


def test_changed_artifact_is_refused(run_dir):
    (run_dir / "model_fp32.tflite").write_bytes((run_dir / "model_fp32.tflite").read_bytes() + b"x")
    with pytest.raises(UserError, match="changed since export"):
        bench(run_dir, runs=2)
    assert not (run_dir / "bench.json").exists()


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: (d / "export.json").unlink(), "has no export.json"),
        (lambda d: (d / "export.json").write_text("{oops"), "not valid JSON"),
        (lambda d: (d / "export.json").write_text(json.dumps({"kind": "eval"})), "not an export record"),
        (lambda d: (d / "export.json").write_text(json.dumps({"kind": "export", "artifacts": []})), "no TFLite artifact"),
        (lambda d: (d / "model_fp32.tflite").unlink(), "is missing"),
    ],
)
def test_bad_run_dirs(run_dir, setup, message):
    setup(run_dir)
    with pytest.raises(UserError, match=message):
        bench(run_dir, runs=2)


def test_bad_targets(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        bench(tmp_path / "nothing")
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(UserError, match="not a .tflite file"):
        bench(text)


def test_foreign_bench_json_is_not_overwritten(run_dir):
    (run_dir / "bench.json").write_text("not json")
    with pytest.raises(UserError, match="not valid JSON"):
        bench(run_dir, runs=2)
    assert (run_dir / "bench.json").read_text() == "not json"


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text('{"kind": "export"}'), "not a bench record"),
    (lambda p: p.mkdir(), "is a folder"),
])
def test_bench_json_destination_is_checked_before_timing(run_dir, monkeypatch, make, message):
    import android_bench.runner

    timed = []
    monkeypatch.setattr(android_bench.runner, "benchmark", lambda *args, **kwargs: timed.append(args) or [])
    make(run_dir / "bench.json")
    with pytest.raises(UserError, match=message):
        bench(run_dir, devices=["host"], runs=2, warmup=0)
    assert timed == []  # refused before anything was timed


def test_cli_checks_the_store_before_timing(run_dir, tmp_path, monkeypatch, capsys):
    import android_bench.runner

    timed = []
    monkeypatch.setattr(android_bench.runner, "benchmark", lambda *args, **kwargs: timed.append(args) or [])
    (tmp_path / "plain").write_text("x")
    assert main(["bench", str(run_dir), "--store", str(tmp_path / "plain" / "s.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: store ") and "--store PATH or MOBILEDEPTH_STORE" in err
    assert timed == [] and not (run_dir / "bench.json").exists()


def test_cli_json_and_table(run_dir, capsys):
    assert main(["bench", str(run_dir), "--runs", "4", "--warmup", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["record_path"] == str(run_dir / "bench.json") and data["results"][0]["stats"]["count"] == 4
    assert main(["bench", str(run_dir), "--runs", "3"]) == 0
    out = capsys.readouterr().out
    assert "model_fp32.tflite" in out and "host" in out and "wrote" in out


def test_cli_host_gpu_is_one_line_error(run_dir, capsys):
    assert main(["bench", str(run_dir), "--delegate", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: device 'host' does not support delegate 'gpu'; it supports: cpu"


# -- the phone path through the mobiledepth command (stand-in adb from tests/android_bench) ------
@pytest.fixture
def fake_phone(tmp_path, monkeypatch):
    helpers = _load("ab_conftest_stage", AB_TESTS / "conftest.py")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{AB_TESTS / "fakes" / "adb.py"}" "$@"\n')
    adb.chmod(0o755)
    phones = helpers.FakePhones(tmp_path / "fake")
    binary = tmp_path / "android_aarch64_benchmark_model"
    binary.write_bytes(helpers.arm64_stub_bytes())
    monkeypatch.setenv("ADB", str(adb))
    monkeypatch.setenv("FAKE_ADB_STATE", str(phones.state_path))
    monkeypatch.setenv("ANDROID_BENCH_BINARY", str(binary))
    monkeypatch.delenv("ANDROID_BENCH_PROFILES", raising=False)
    return phones


def test_cli_warns_in_plain_words_on_silent_gpu_fallback(run_dir, fake_phone, capsys):
    fake_phone.set([fake_phone.phone("R5CR10AAA", "SM-G991B", fault="fallback_none")])
    assert main(["bench", str(run_dir), "--device", "S21", "--delegate", "gpu", "--runs", "3"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "did not take the graph: everything ran on the CPU" in out and "not a GPU number" in out
    [result] = json.loads((run_dir / "bench.json").read_text())["results"]
    assert result["fallback"] is True and result["device"]["soc"] == "Exynos 2100"
    assert result["artifact_sha256"] == sha256_file(run_dir / "model_fp32.tflite")
    assert main(["bench", str(run_dir), "-d", "S21", "--delegate", "gpu", "--runs", "3", "--require-full-delegation"]) == 2
    last = json.loads((run_dir / "bench.json").read_text())["results"][-1]
    assert last["failed"] and last["stats"]["median"] is None and "--require-full-delegation" in last["error"]


def test_cli_names_the_refused_op_and_the_way_out(run_dir, fake_phone, capsys):
    fake_phone.set([fake_phone.phone("R5CR10AAA", "SM-G991B", fault="refuses_depth_to_space")])
    assert main(["bench", str(run_dir), "--device", "S21", "--delegate", "gpu", "--runs", "3"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "took only part of the graph" in out and "ops it does not support: DEPTH_TO_SPACE" in out
    assert "--no-rewrites" in out
    [result] = json.loads((run_dir / "bench.json").read_text())["results"]
    assert result["fallback"] is True and result["delegation"]["unsupported_ops"][0]["op"] == "DEPTH_TO_SPACE"


def test_cli_phone_failure_is_recorded_as_failed(run_dir, fake_phone, capsys):
    fake_phone.set([fake_phone.phone("R5CR10AAA", "SM-G991B", fault="crash")])
    assert main(["bench", str(run_dir), "--device", "S21", "--runs", "3"]) == 2
    [result] = json.loads((run_dir / "bench.json").read_text())["results"]
    assert result["failed"] and "crashed" in result["error"] and result["samples_us"] == []
    assert "failed" in capsys.readouterr().out
