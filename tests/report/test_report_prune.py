"""NetAdapt runs in the store (migration 3, idempotent ingestion, export round trip) and in the report."""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from report_records import bench_record, bench_result, eval_record, export_record, old_store, prune_record, sha

from mobiledepth.cli import main
from mobiledepth.errors import UserError
from mobiledepth.io import sha256_file
from mobiledepth.report.report import build_report, render, render_plot_png
from mobiledepth.store import SCHEMA_VERSION, open_store, prune_run_id

GOLDEN = Path(__file__).parent / "golden_no_prune.json"


def fake_spec_status(name, recorded):
    return {"spec-current": "current", "spec-old": "stale"}.get(recorded, "unknown")


def fill(st, records) -> None:
    for rec in records["exports"]:
        st.ingest(rec)
    st.ingest(records["bench"])
    for rec in records["evals"]:
        st.ingest(rec)


def run_dir_with_files(root: Path, record: dict) -> Path:
    """A prune run directory as the loop leaves it: prune.json, one checkpoint per step, the final export."""
    run = root / "run"
    for step in record["iterations"] + [record["final"]]:
        (run / step["checkpoint"]).parent.mkdir(parents=True, exist_ok=True)
        (run / step["checkpoint"]).write_bytes(step["checkpoint"].encode() * 100)
    export = export_record(record["model"]["name"], "spec-pruned", 407_441, 56_000_000, precisions=("fp32",))
    (run / "final" / "export").mkdir(parents=True)
    (run / "final" / "export" / "export.json").write_text(json.dumps(export))
    (run / "prune.json").write_text(json.dumps(record))
    return run


# --------------------------------------------------------------------------- the store

def test_prune_record_lands_as_one_row_per_step(tmp_path):
    record = prune_record()
    with open_store(tmp_path / "s.sqlite") as st:
        summary = st.ingest(record)
        steps = st.prune_steps()
        counts = st.counts()
    assert (summary.kind, summary.prune_steps, summary.duplicates) == ("prune", 5, 0)
    assert counts == {"artifacts": 0, "bench_results": 0, "evals": 0, "prune_runs": 1, "prune_steps": 5}
    assert [(s.iteration, s.final) for s in steps] == [(0, False), (1, False), (2, False), (3, False), (3, True)]
    first, third, last = steps[0], steps[2], steps[-1]
    assert (first.model_name, first.device, first.delegate, first.target_ms) == ("mdepth-tiny", "host", "cpu", 2.0)
    assert (first.estimated_ms, first.measured_ms, first.whdr, first.chosen_group) == (3.4, 3.6, 0.06, None)
    assert (third.step_target_ms, third.measured_ms, third.chosen_group, third.chosen_width) == (
        pytest.approx(2.7), None, "enc.stage1", 8)
    assert third.widths == {"enc.stage1": 8, "dec.stage3.hidden": 112}
    assert (last.estimated_ms, last.measured_ms, last.whdr, last.status, last.choose) == (1.9, 1.95, 0.10, "done", "accuracy")
    assert {s.run_id for s in steps} == {prune_run_id(record)}


def test_ingest_file_reads_hashes_and_final_artifact_from_the_run_dir(tmp_path):
    record = prune_record()
    run = run_dir_with_files(tmp_path, record)
    with open_store(tmp_path / "s.sqlite") as st:
        st.ingest_file(run / "prune.json")
        steps = st.prune_steps()
    for step, entry in zip(steps, record["iterations"] + [record["final"]]):
        assert step.checkpoint_sha256 == sha256_file(run / entry["checkpoint"])
        assert step.run_dir == str(run.resolve())
    final = steps[-1]
    assert final.final and final.artifact_sha256 == sha("mdepth-tiny-fp32") and final.params == 407_441
    assert all(s.artifact_sha256 is None for s in steps[:-1])


def test_ingesting_twice_adds_nothing_and_a_resumed_run_adds_its_new_steps(tmp_path):
    full = prune_record()
    early = copy.deepcopy(full)
    early["iterations"] = early["iterations"][:2]
    del early["final"]
    early["status"] = "running"
    with open_store(tmp_path / "s.sqlite") as st:
        assert st.ingest(early).prune_steps == 2
        again = st.ingest(early)
        assert (again.prune_steps, again.duplicates) == (0, 2)
        later = st.ingest(full)  # the same run, resumed and finished: only the new steps are added
        assert (later.prune_steps, later.duplicates) == (3, 2)
        assert st.ingest(early).prune_steps == 0  # an older prune.json does not roll the run back
        assert st.counts()["prune_runs"] == 1 and st.counts()["prune_steps"] == 5
        assert {s.status for s in st.prune_steps()} == {"done"}
        assert st.export_records()["records"][0]["status"] == "done"


def test_ingest_file_twice_is_idempotent_and_the_cli_accepts_prune_json(tmp_path):
    run = run_dir_with_files(tmp_path, prune_record())
    store = tmp_path / "s.sqlite"
    assert main(["store", "import", "--store", str(store), str(run / "prune.json")]) == 0
    assert main(["store", "import", "--store", str(store), str(run)]) == 0  # a directory finds prune.json too
    with open_store(store) as st:
        assert st.counts() == {"artifacts": 1, "bench_results": 0, "evals": 0, "prune_runs": 1, "prune_steps": 5}


def test_store_export_import_round_trip_keeps_the_steps(tmp_path, realistic_records):
    run = run_dir_with_files(tmp_path, prune_record())
    with open_store(tmp_path / "a.sqlite") as a:
        fill(a, realistic_records)
        a.ingest_file(run / "prune.json")
        steps_a = a.prune_steps()
    dump = tmp_path / "dump.json"
    assert main(["store", "export", "--store", str(tmp_path / "a.sqlite"), "--out", str(dump)]) == 0
    assert main(["store", "import", "--store", str(tmp_path / "b.sqlite"), str(dump)]) == 0
    with open_store(tmp_path / "b.sqlite") as b:
        assert b.prune_steps() == steps_a  # hashes and the final artifact survive without the run directory
        assert b.ingest_file(dump).prune_steps == 0
        assert b.counts()["prune_steps"] == 5
        records_b = b.export_records()["records"]
    records_a = json.loads(dump.read_text())["records"]
    assert [r for r in records_b if r["kind"] == "prune"] == [r for r in records_a if r["kind"] == "prune"]


def test_v2_store_migrates_to_v3_and_keeps_its_rows(tmp_path, realistic_records):
    path = tmp_path / "v2.sqlite"
    old = old_store(path, 2, lambda st: fill(st, realistic_records))  # as written before prune runs existed
    assert old.schema_version == 2
    old.close()
    with open_store(tmp_path / "current-v2.sqlite") as st:
        before = (st.artifacts(), st.bench_results(), st.evals())
    with open_store(path) as st:
        assert st.schema_version == SCHEMA_VERSION
        assert (st.artifacts(), st.bench_results(), st.evals()) == before
        assert st.counts()["prune_steps"] == 0
        assert st.ingest(prune_record()).prune_steps == 5
        assert st.ingest(realistic_records["bench"]).duplicates == 6  # the v2 record keys still work
        assert st.integrity_ok()
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"prune_runs", "prune_steps"} <= tables


def _without(record: dict, *path) -> dict:
    record = copy.deepcopy(record)
    target = record
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return record


def _with(record: dict, value, *path) -> dict:
    record = copy.deepcopy(record)
    target = record
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return record


GOOD = prune_record()


@pytest.mark.parametrize("record, message", [
    (_without(GOOD, "target_ms"), "prune record lacks target_ms"),
    (_without(GOOD, "device"), "prune record lacks device"),
    (_without(GOOD, "model", "name"), "prune record's model lacks name"),
    (_without(GOOD, "iterations", 2, "estimated_ms"), r"prune record's iterations\[2\] lacks estimated_ms"),
    (_without(GOOD, "final", "whdr"), "prune record's final lacks whdr"),
    (_with(GOOD, "fast", "iterations", 1, "estimated_ms"), r"iterations\[1\] has estimated_ms = 'fast', not a number"),
    (_with(GOOD, "2 ms", "target_ms"), "target_ms = '2 ms', not a number"),
    (_with(GOOD, [], "iterations"), "prune record has no iterations"),
    (_with(GOOD, "mdepth-tiny", "model"), "prune record's model is str, not a JSON object"),
])
def test_bad_prune_record_is_a_one_line_error_and_writes_nothing(tmp_path, realistic_records, record, message):
    with open_store(tmp_path / "s.sqlite") as st:
        fill(st, realistic_records)
        before = st.counts()
        with pytest.raises(UserError, match=message) as info:
            st.ingest(record)
        assert "\n" not in str(info.value)
        assert st.counts() == before


def test_cli_import_of_a_bad_prune_json_names_the_field(tmp_path, capsys):
    bad = tmp_path / "prune.json"
    bad.write_text(json.dumps(_without(GOOD, "iterations", 0, "whdr")))
    assert main(["store", "import", "--store", str(tmp_path / "s.sqlite"), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "iterations[0] lacks whdr" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- the report

@pytest.fixture
def store_with_prune(tmp_path, realistic_records):
    path = tmp_path / "store.sqlite"
    with open_store(path) as st:
        fill(st, realistic_records)
        st.ingest(prune_record())
        st.ingest(prune_record(device="galaxy_s21", delegate="gpu", target_ms=25.0, created_at="2026-11-25T09:00:00Z",
                               steps=((40.0, 41.0, 0.12, None), (33.0, None, 0.125, ("enc.stage1", 8)),
                                      (24.0, 24.5, 0.13, ("dec.stage1.hidden", 168))), final=None))
    return path


def report_of(path: Path, **filters):
    with open_store(path) as st:
        return build_report(st, card_paths=[], spec_status=fake_spec_status, **filters)


def test_report_has_a_table_per_run_and_json_csv_carry_the_steps(store_with_prune):
    rep = report_of(store_with_prune)
    assert [r.label for r in rep.prune_runs] == ["mdepth-tiny on host/cpu, target 2 ms",
                                                 "mdepth-tiny on galaxy_s21/gpu, target 25 ms"]
    md = render(rep, "md")
    section = md[md.index("## Pruning runs"):]
    assert section.count("### ") == 2
    table = [line for line in section.splitlines() if line.startswith("| ")]
    assert table[0] == "| iteration | target ms | estimated ms | measured ms | WHDR | chosen group |"
    assert "| 2 | 2.700 | 2.500 | - | 0.0900 | enc.stage1 -> 8 |" in table
    assert "| final | - | 1.900 | 1.950 | 0.1000 | final model (long-term fine-tune) |" in table
    html = render(rep, "html")
    assert "<h2>Pruning runs</h2>" in html and html.count("<h3>") == 2 and "enc.stage1 -&gt; 8" in html
    data = json.loads(render(rep, "json"))
    host = data["prune_runs"][0]
    assert (host["model"], host["device"], host["target_ms"], len(host["steps"])) == ("mdepth-tiny", "host", 2.0, 5)
    assert [(s["latency_ms"], s["latency_from"]) for s in host["steps"]][:2] == [(3.6, "measured"), (3.0, "estimate")]
    assert host["steps"][-1]["final"] is True
    rows = list(csv.DictReader(io.StringIO(render(rep, "csv"))))
    prune_rows = [r for r in rows if r["source"] == "prune"]
    assert len(prune_rows) == 8 and len(rows) == len(rep.rows) + 8
    assert prune_rows[1]["chosen_group"] == "dec.stage3.hidden" and prune_rows[1]["measured_ms"] == ""
    assert float(prune_rows[1]["estimated_ms"]) == 3.0 and prune_rows[4]["final"] == "True"


def test_filters_apply_to_prune_runs(store_with_prune):
    assert [r.device for r in report_of(store_with_prune, devices=["galaxy s21"]).prune_runs] == ["galaxy_s21"]
    assert report_of(store_with_prune, models=["fast*"]).prune_runs == []
    only = report_of(store_with_prune, models=["mdepth-tiny"])  # known only from the prune runs: no error
    assert only.rows == [] and len(only.prune_runs) == 2
    with pytest.raises(UserError, match="known models: .*mdepth-tiny"):
        report_of(store_with_prune, models=["midas"])


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)


def test_plot_draws_the_trajectory(store_with_prune):
    with_runs = report_of(store_with_prune)
    without = report_of(store_with_prune, models=["fast*", "mdepth-mnv2-fbnet"])
    assert without.prune_runs == [] and without.rows == with_runs.rows
    png, plain = render_plot_png(with_runs), render_plot_png(without)
    assert png != plain
    image = _pixels(png)
    assert (image.mean(axis=2) < 200).mean() > 0.01  # not a blank canvas
    # Dark2's first colour (the first run's line, markers and target line) is drawn
    teal = np.array([27, 158, 119], dtype=float)
    assert (np.abs(image - teal).sum(axis=2) < 40).sum() > 300


def test_report_without_prune_runs_is_exactly_as_before(tmp_path, realistic_records, card_dir):
    """Golden outputs rendered by mobiledepth before pruning runs existed (tests/report/golden_no_prune.json)."""
    golden = json.loads(GOLDEN.read_text())
    with open_store(tmp_path / "s.sqlite") as st:
        fill(st, realistic_records)
        rep = build_report(st, card_paths=sorted(card_dir.glob("*.yaml")), spec_status=fake_spec_status)
    assert rep.prune_runs == []
    rep.generated_at, rep.store_path = "GENERATED", "STORE"
    for fmt in ("md", "csv", "json"):
        assert render(rep, fmt) == golden[fmt], fmt
    png = render_plot_png(rep)
    assert re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,PNG", render(rep, "html")) == golden["html"]
    import matplotlib

    if matplotlib.__version__ == golden["matplotlib"]:  # another matplotlib draws other pixels
        assert hashlib.sha256(png).hexdigest() == golden["png_sha256"]


def test_cli_report_with_a_prune_run(store_with_prune, tmp_path):
    plot = tmp_path / "plot.png"
    out = tmp_path / "r.md"
    assert main(["report", "--store", str(store_with_prune), "--device", "host", "--out", str(out),
                 "--plot", str(plot)]) == 0
    text = out.read_text()
    assert "## Pruning runs" in text and "galaxy_s21/gpu" not in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_netadapt_store_rows_also_link_eval_and_bench(tmp_path):
    """The final export's bench and eval (as netadapt ingests them) meet the final step by artifact sha256."""
    record = prune_record()
    run = run_dir_with_files(tmp_path, record)
    art = sha("mdepth-tiny-fp32")
    with open_store(tmp_path / "s.sqlite") as st:
        st.ingest_file(run / "final" / "export" / "export.json")
        st.ingest(bench_record([bench_result(art, "mdepth-tiny", "host", "cpu", 2000, 1)]))
        st.ingest(eval_record(art, "mdepth-tiny-netadapt-2ms", 0.10))
        st.ingest_file(run / "prune.json")
        rep = build_report(st, card_paths=[], spec_status=fake_spec_status)
    final = rep.prune_runs[0].steps[-1]
    row = [r for r in rep.rows if r.artifact_sha256 == final.artifact_sha256]
    assert len(row) == 1 and row[0].whdr == pytest.approx(final.whdr)
