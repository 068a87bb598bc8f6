"""`mobiledepth check` through the real CLI: outputs and the store are checked before timing, a
broken baseline is refused naming the field, and a baseline knows its model by identity
(sha256, spec hash, precision, input size), not by file name."""

from __future__ import annotations

import json
import shutil

import pytest

from cli_faults import assert_user_error, run_cli, tree

FAST = ("--runs", "8", "--max-runs", "8", "--warmup", "1")
TIMED = "latency gate"  # the title of the result table: printed only after timing


@pytest.fixture(scope="module")
def models(tiny_export, tmp_path_factory):
    """The tiny export (fp32 + fp16 with export.json), and its fp16 file alone in a folder without export.json."""
    bare = tmp_path_factory.mktemp("bare") / "model_fp16.tflite"
    shutil.copyfile(tiny_export.run_dir / "model_fp16.tflite", bare)
    return {"fp32": tiny_export.run_dir / "model_fp32.tflite", "fp16": tiny_export.run_dir / "model_fp16.tflite",
            "bare_fp16": bare}


@pytest.fixture(scope="module")
def baseline(models, tmp_path_factory):
    """A baseline of the tiny fp32 export made by the CLI (few runs: only its content matters here)."""
    path = tmp_path_factory.mktemp("baseline") / "b.json"
    made = run_cli("check", models["fp32"], "--baseline", path, "--update-baseline", *FAST, "--model-name", "tiny",
                   store=path.parent / "s.sqlite")
    assert made.code == 0, made.err
    return json.loads(path.read_text())


def _write(tmp_path, data) -> str:
    path = tmp_path / "b.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_new_baselines_record_the_model_identity(baseline, tiny_export):
    model = baseline["model"]
    fp32 = next(a for a in tiny_export.artifacts if a["path"] == "model_fp32.tflite")
    assert model["sha256"] == fp32["sha256"] and model["spec_hash"] == tiny_export.record["model"]["spec_hash"]
    assert model["precision"] == "fp32" and model["input_size"] == [64, 64]


@pytest.mark.parametrize("target, message", [("/proc/nope/r.json", "cannot be written"), (".", "is a folder")])
def test_unwritable_json_is_refused_before_timing(models, tmp_path, target, message):
    before = tree(tmp_path)
    result = run_cli("check", models["fp32"], "--against", models["fp32"], *FAST, "--json", target,
                     store=tmp_path / "s.sqlite", cwd=tmp_path)
    assert_user_error(result, "--json", message)
    assert TIMED not in result.out and tree(tmp_path) == before


def test_unwritable_baseline_to_update_is_refused_before_timing(models, tmp_path):
    result = run_cli("check", models["fp32"], "--baseline", "/proc/nope/b.json", "--update-baseline", *FAST,
                     "--model-name", "tiny", store=tmp_path / "s.sqlite")
    assert_user_error(result, "--baseline /proc/nope/b.json", "cannot be written")


def test_a_store_that_cannot_be_opened_is_refused_before_timing(models, baseline, tmp_path):
    path = _write(tmp_path, baseline)
    before = tree(tmp_path)
    result = run_cli("check", models["fp32"], "--baseline", path, *FAST, store="/proc/nope/x.db")
    assert_user_error(result, "/proc/nope/x.db", "--store")
    assert TIMED not in result.out and tree(tmp_path) == before


BROKEN = [
    (lambda b: "{not json", "is not JSON"),
    (lambda b: {**b, "samples_us": [1.0] * 9 + ["slow"]}, "'samples_us' holds 'slow'"),
    (lambda b: {**b, "samples_us": []}, "'samples_us' is empty"),
    (lambda b: {**b, "calibration_samples_us": []}, "'calibration_samples_us' is empty"),
    (lambda b: {k: v for k, v in b.items() if k != "threads"}, "no 'threads' field"),
    (lambda b: {**b, "model": {k: v for k, v in b["model"].items() if k != "input_shapes"}},
     "no 'model.input_shapes' field"),
    (lambda b: {**b, "reference": {**b["reference"], "data": "AAAA" + b["reference"]["data"][4:]}},
     "its reference network is damaged"),
    (lambda b: {**b, "reference": {**b["reference"], "model_ratio": 0}}, "'reference.model_ratio' is 0"),
]


@pytest.mark.parametrize("break_it, message", BROKEN)
def test_a_broken_baseline_is_refused_naming_the_field(models, baseline, tmp_path, break_it, message):
    path = _write(tmp_path, break_it(baseline))
    result = run_cli("check", models["fp32"], "--baseline", path, *FAST, "--model-name", "tiny",
                     store=tmp_path / "s.sqlite")
    assert_user_error(result, message, "--update-baseline")
    assert TIMED not in result.out


def _model(baseline, **changes) -> dict:
    return {**baseline, "model": {**baseline["model"], **changes}}


def test_another_model_is_refused_unless_allowed(models, baseline, tmp_path):
    cases = [
        (models["fp32"], _model(baseline, sha256="0" * 64, spec_hash="f" * 64), "another network"),
        (models["fp16"], baseline, "precision fp16 (baseline fp32)"),
        (models["fp32"], _model(baseline, sha256="0" * 64, input_size=[128, 128]),
         "input size 64x64 (baseline 128x128)"),
    ]
    for model, data, message in cases:
        result = run_cli("check", model, "--baseline", _write(tmp_path, data), *FAST, "--model-name", "tiny",
                         store=tmp_path / "s.sqlite")
        assert_user_error(result, "was made for another model", message, "--allow-different-model")
        assert TIMED not in result.out
    allowed = run_cli("check", models["fp16"], "--baseline", _write(tmp_path, baseline), *FAST, "--model-name", "tiny",
                      "--allow-different-model", store=tmp_path / "s.sqlite")
    assert allowed.code in (0, 1), allowed.err  # compared: pass or regression, not refused
    assert TIMED in allowed.out and "warning:" in allowed.out and "precision fp16" in allowed.out


def test_another_file_of_the_same_network_is_compared(models, baseline, tmp_path):
    """A new converter changes the sha256, not the network: the spec hash says it is the same model."""
    result = run_cli("check", models["fp32"], "--baseline", _write(tmp_path, _model(baseline, sha256="0" * 64)),
                     *FAST, "--model-name", "another-name", "--tolerance", "90%", store=tmp_path / "s.sqlite")
    assert result.code in (0, 1) and "Traceback" not in result.err, result.err
    assert TIMED in result.out and "warning:" not in result.out


def test_a_baseline_without_identity_warns_and_compares_as_before(models, baseline, tmp_path):
    legacy = {**baseline, "model": {k: v for k, v in baseline["model"].items()
                                    if k not in ("spec_hash", "precision", "input_size")}}
    path = _write(tmp_path, legacy)
    result = run_cli("check", models["fp32"], "--baseline", path, *FAST, "--model-name", "tiny",
                     store=tmp_path / "s.sqlite")
    assert result.code in (0, 1), result.err
    warnings = [line for line in result.out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "does not record the model's identity" in warnings[0]
    renamed = run_cli("check", models["fp32"], "--baseline", path, *FAST, "--model-name", "other",
                      store=tmp_path / "s.sqlite")
    assert_user_error(renamed, "model 'other' (baseline 'tiny')")


def test_ab_refuses_another_precision_unless_allowed(models, tmp_path):
    # the bare fp16 file has no export.json beside it: its precision is read off its tensors
    result = run_cli("check", models["bare_fp16"], "--against", models["fp32"], *FAST, store=tmp_path / "s.sqlite")
    assert_user_error(result, "do not do the same work", "precision fp16 (--against fp32)", "--allow-different-model")
    assert TIMED not in result.out
    allowed = run_cli("check", models["bare_fp16"], "--against", models["fp32"], *FAST, "--allow-different-model",
                      store=tmp_path / "s.sqlite")
    assert allowed.code in (0, 1), allowed.err
    assert TIMED in allowed.out and "precision fp16" in allowed.out
