"""mobiledepth.records: the envelope, the one timestamp style, the reader and its one-line errors."""

from __future__ import annotations

import json
from datetime import timezone

import pytest

from mobiledepth.errors import UserError
from mobiledepth.records import (RECORD_KINDS, new_record, parse_timestamp, read_export_record, read_record,
                                 utc_timestamp)


def _export(tmp_path, record):
    (tmp_path / "export.json").write_text(json.dumps(record))
    return tmp_path


def test_new_record_puts_the_envelope_first_in_the_z_style():
    record = new_record("bench", results=[])
    assert list(record)[:4] == ["kind", "schema", "created_at", "results"]
    assert record["kind"] == "bench" and record["schema"] == 1 and record["created_at"].endswith("Z")
    assert parse_timestamp(record["created_at"]).tzinfo == timezone.utc
    assert new_record("eval", created_at="2026-11-24T12:00:00Z")["created_at"] == "2026-11-24T12:00:00Z"
    with pytest.raises(ValueError, match="not a record kind"):
        new_record("nonsense")


def test_both_timestamp_styles_read_as_the_same_instant():
    assert parse_timestamp("2026-11-24T10:00:00Z") == parse_timestamp("2026-11-24T10:00:00+00:00")
    assert utc_timestamp().endswith("Z") and len(utc_timestamp()) == len("2026-11-24T10:00:00Z")
    for bad in ("yesterday", "2026-11-24T10:00:00", None):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


def test_every_kind_a_stage_writes_is_defined():
    assert set(RECORD_KINDS) == {"export", "bench", "eval", "train", "prune", "lut", "lut_validation",
                                 "latency_baseline", "store_export"}


def test_read_record_accepts_old_timestamps_and_records_without_schema():
    old = {"kind": "eval", "schema": 1, "created_at": "2026-01-01T00:00:00+00:00", "metric": "whdr", "value": 0.1}
    assert read_record(old, "eval") is old
    assert read_record({"kind": "eval", "metric": "whdr", "value": 0.1}, "eval")["value"] == 0.1


@pytest.mark.parametrize("record, message", [
    ({"metric": "whdr"}, "no 'kind'"),
    ({"kind": "bench", "results": []}, "not an eval record"),
    ({"kind": "eval", "schema": 2, "metric": "whdr", "value": 0.1}, "schema 2"),
    ({"kind": "eval", "schema": 1, "metric": "whdr"}, "eval record lacks value"),
    ({"kind": "eval", "schema": 1, "created_at": "soon", "metric": "whdr", "value": 0.1}, "created_at = 'soon'"),
])
def test_read_record_names_the_file_and_the_field(tmp_path, record, message):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(record))
    with pytest.raises(UserError, match=message) as info:
        read_record(path, "eval")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_record_of_a_missing_or_broken_file(tmp_path):
    with pytest.raises(UserError, match="no such file.*re-run 'mobiledepth bench'"):
        read_record(tmp_path / "bench.json", "bench")
    (tmp_path / "bench.json").write_text("{oops")
    with pytest.raises(UserError, match="bench.json is not valid JSON"):
        read_record(tmp_path / "bench.json", "bench")


def test_read_export_record_from_a_run_dir_or_its_file(tmp_path):
    record = new_record("export", model={"name": "m", "params": 7}, artifacts=[
        {"path": "model.onnx", "format": "onnx", "sha256": "a"},
        {"path": "model_fp32.tflite", "format": "tflite", "sha256": "b"},
        {"path": "model_fp16.tflite", "format": "tflite", "sha256": "c"}])
    run = _export(tmp_path, record)
    for source in (run, run / "export.json"):
        export = read_export_record(source)
        assert export.run_dir == run and export.model["params"] == 7
        assert [a["sha256"] for a in export.tflite_artifacts()] == ["b", "c"]
        assert export.tflite_artifact()["sha256"] == "b" and export.tflite_artifact("c")["path"] == "model_fp16.tflite"
        assert export.tflite_artifact("a") is None  # the ONNX file is no TFLite artifact


@pytest.mark.parametrize("content, message", [
    (None, "has no export.json"),
    ({"kind": "bench", "results": []}, "not an export record"),
    ({"kind": "export", "model": {}}, "export record lacks artifacts"),
    ({"kind": "export", "artifacts": 3}, "artifacts is not a list of objects"),
])
def test_read_export_record_refuses_what_is_not_one(tmp_path, content, message):
    if content is not None:
        _export(tmp_path, content)
    with pytest.raises(UserError, match=message):
        read_export_record(tmp_path)
