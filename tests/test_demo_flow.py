"""The main job end to end through the CLI: export → bench on host → report, one store."""

from __future__ import annotations

import json
import statistics

import pytest

from mobiledepth.cli import main


def test_export_bench_report_meet_in_one_store(tmp_path, tiny_checkpoint, capsys):
    store = tmp_path / "store.sqlite"
    run = tmp_path / "run"
    assert main(["export", "--model", "mdepth-tiny", "--checkpoint", str(tiny_checkpoint), "--precision", "fp32",
                 "--out", str(run), "--store", str(store), "--quiet"]) == 0
    assert main(["bench", str(run), "--device", "host", "--runs", "5", "--warmup", "1", "--store", str(store)]) == 0
    capsys.readouterr()
    assert main(["report", "--format", "json", "--store", str(store)]) == 0
    report = json.loads(capsys.readouterr().out)
    export = json.loads((run / "export.json").read_text())
    bench = json.loads((run / "bench.json").read_text())["results"]
    # every installed route converts; bench takes the recommended artifact (the fastest that meets its bar)
    tflite = next(a for a in export["artifacts"] if a["format"] == "tflite" and a.get("recommended", True))
    assert [b["artifact_sha256"] for b in bench] == [tflite["sha256"]]
    samples = bench[0]["samples_us"]
    measured = [row for row in report["rows"] if row["source"] == "measured"]
    assert len(measured) == 1 and len(samples) == 5
    row = measured[0]
    # the join: the benchmark's timings and the export's facts meet on the artifact's sha256
    assert (row["artifact_sha256"], row["model"], row["precision"], row["input_size"]) == \
        (tflite["sha256"], "mdepth-tiny", "fp32", "64x64")
    assert (row["device"], row["delegate"], row["threads"], row["n"]) == ("host", "cpu", 1, 5)
    assert row["params"] == export["model"]["params"] == 26_377  # mdepth-tiny without heads
    assert row["macs"] == export["model"]["macs"]
    assert row["ordinal_agreement"] == tflite["parity"]["ordinal_agreement"]
    assert row["random_weights"] is False and row["spec_status"] == "current"
    assert row["p50_ms"] == pytest.approx(statistics.median(samples) / 1000, abs=5e-4)  # ms, 3 decimals
    assert row["mean_ms"] == pytest.approx(statistics.fmean(samples) / 1000, abs=5e-4)


def test_no_store_leaves_the_store_alone(tmp_path, tiny_checkpoint):
    store = tmp_path / "store.sqlite"
    assert main(["export", "--model", "mdepth-tiny", "--checkpoint", str(tiny_checkpoint), "--precision", "fp32",
                 "--out", str(tmp_path / "run"), "--store", str(store), "--no-store", "--quiet"]) == 0
    assert not store.exists()
