"""The main job end to end through the CLI: export → bench on host → report, one store."""

from __future__ import annotations

import json

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
    text = json.dumps(report)
    sha = json.loads((run / "export.json").read_text())["artifacts"][1]["sha256"]
    assert "mdepth-tiny" in text and sha in text


def test_no_store_leaves_the_store_alone(tmp_path, tiny_checkpoint):
    store = tmp_path / "store.sqlite"
    assert main(["export", "--model", "mdepth-tiny", "--checkpoint", str(tiny_checkpoint), "--precision", "fp32",
                 "--out", str(tmp_path / "run"), "--store", str(store), "--no-store", "--quiet"]) == 0
    assert not store.exists()
