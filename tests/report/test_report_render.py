"""The report: rows, flags, reported reference rows, every format, the plot, headless-Chromium rendering."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess

import numpy as np
import pytest
from report_records import sha

from mobiledepth.cli import main
from mobiledepth.errors import UserError
from mobiledepth.report.report import (
    FLAG_TEXT, REPORTED, build_report, pareto_front, render, render_plot_png, spec_hash_checker,
)
from mobiledepth.store import open_store


def fake_spec_status(name, recorded):
    """The paper model's spec is unchanged; fastdepth's spec changed since its export."""
    return {"spec-current": "current", "spec-old": "stale"}.get(recorded, "unknown")


@pytest.fixture
def filled_store(tmp_path, realistic_records):
    path = tmp_path / "store.sqlite"
    with open_store(path) as st:
        for rec in realistic_records["exports"]:
            st.ingest(rec)
        st.ingest(realistic_records["bench"])
        for rec in realistic_records["evals"]:
            st.ingest(rec)
    return path


@pytest.fixture
def report(filled_store, card_dir):
    with open_store(filled_store) as st:
        return build_report(st, card_paths=sorted(card_dir.glob("*.yaml")), spec_status=fake_spec_status)


def find(rep, model, device, delegate, source="measured"):
    hits = [r for r in rep.rows if (r.model, r.device, r.delegate, r.source) == (model, device, delegate, source)]
    assert len(hits) == 1, hits
    return hits[0]


def test_rows_numbers_flags_and_accuracy(report, realistic_records):
    results = realistic_records["bench"]["results"]
    host = find(report, "mdepth-mnv2-fbnet", "host", "cpu")
    samples = np.asarray(results[0]["samples_us"])
    assert host.p50_ms == pytest.approx(np.median(samples) / 1000)
    assert host.p90_ms == pytest.approx(np.percentile(samples, 90) / 1000)
    assert host.spread_ms == pytest.approx((np.percentile(samples, 95) - np.percentile(samples, 5)) / 1000)
    assert (host.params, host.macs, host.n) == (2_600_000, 1_100_000_000, 50)
    assert (host.whdr, host.whdr_from) == (pytest.approx(0.121), "artifact")
    assert host.flags == [] and host.spec_status == "current"
    # the fp16 artifact has no eval of its own: the checkpoint's (torch) WHDR is shown, marked
    gpu = find(report, "mdepth-mnv2-fbnet", "galaxy_s21", "gpu")
    assert (gpu.whdr, gpu.whdr_from, gpu.precision) == (pytest.approx(0.119), "checkpoint", "fp16")
    failed = find(report, "mdepth-mnv2-fbnet", "galaxy_s21", "nnapi")
    assert failed.flags == ["failed"] and failed.p50_ms is None and failed.error == "Failed to apply NNAPI delegate."
    fallback = find(report, "fastdepth", "galaxy_s21", "gpu")
    assert fallback.flags == ["fallback", "stale"]
    assert find(report, "fastdepth", "host", "cpu").flags == ["stale"]
    reported = [r for r in report.rows if r.source == "reported"]
    assert {(r.device, r.delegate, r.p50_ms) for r in reported} == {
        ("Galaxy S21", "cpu", 54.0), ("Galaxy S21", "gpu", 27.0), ("Galaxy S21", "nnapi", 43.0)}
    assert all(r.flags == ["reported"] and r.params == 2_600_000 and r.whdr == 0.1156 for r in reported)
    assert report.rows[-1].source == "reported"  # reference rows come after the measured ones


def test_latest_result_per_combination_wins(filled_store, card_dir, realistic_records):
    from report_records import bench_record, bench_result

    pa = realistic_records["sha"]["paper_fp32"]
    with open_store(filled_store) as st:
        st.ingest(bench_record([bench_result(pa, "mdepth-mnv2-fbnet", "host", "cpu", 18000, 99)]))
        rep = build_report(st, card_paths=[], spec_status=fake_spec_status)
    assert find(rep, "mdepth-mnv2-fbnet", "host", "cpu").p50_ms == pytest.approx(18.0, rel=0.05)


@pytest.mark.parametrize("fmt", ["md", "html", "json", "csv"])
def test_every_format_shows_every_flag(report, fmt):
    text = render(report, fmt)
    for flag in ("fallback", "failed", "stale", "reported"):
        assert FLAG_TEXT[flag].split(":")[0] in text, (fmt, flag)
    assert "Failed to apply NNAPI delegate." in text
    assert REPORTED in text


def test_json_and_csv_carry_the_numbers(report):
    data = json.loads(render(report, "json"))
    assert data["kind"] == "report" and len(data["rows"]) == len(report.rows)
    host = [r for r in data["rows"] if r["model"] == "mdepth-mnv2-fbnet" and r["device"] == "host"][0]
    assert host["p50_ms"] == round(find(report, "mdepth-mnv2-fbnet", "host", "cpu").p50_ms, 3)  # to the µs
    assert {p["source"] for p in data["plot_points"]} == {"measured", "reported"}
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert len(rows) == len(report.rows)
    stale = [r for r in rows if r["model"] == "fastdepth" and r["device"] == "host"][0]
    assert "stale" in stale["flags"] and float(stale["p50_ms"]) == round(find(report, "fastdepth", "host", "cpu").p50_ms, 3)


def test_markdown_table_shape(report):
    lines = [l for l in render(report, "md").splitlines() if l.startswith("|")]
    assert len(lines) == 2 + len(report.rows)
    assert all(l.count("|") == lines[0].count("|") for l in lines)


def test_filters_and_unknown_filter(filled_store, card_dir):
    with open_store(filled_store) as st:
        rep = build_report(st, devices=["Galaxy S21"], models=["mdepth-*"], card_paths=[card_dir / "mdepth-mnv2-fbnet.yaml"],
                           spec_status=fake_spec_status)
        assert {r.device for r in rep.rows} == {"galaxy_s21", "Galaxy S21"}
        assert {r.model for r in rep.rows} == {"mdepth-mnv2-fbnet"}
        with pytest.raises(UserError, match="no device matches 'pixel9'; known devices: .*galaxy_s21.*host"):
            build_report(st, devices=["pixel9"], card_paths=[], spec_status=fake_spec_status)
        with pytest.raises(UserError, match="no model matches 'midas'"):
            build_report(st, models=["midas"], card_paths=[], spec_status=fake_spec_status)


def test_spec_status_from_the_real_registry(tmp_path, monkeypatch):
    pytest.importorskip("mobiledepth.arch.spec")
    from mobiledepth.arch import resolve_spec, spec_hash

    models = tmp_path / "models"
    models.mkdir()
    (models / "zz-test-model.yaml").write_text(
        "name: zz-test-model\narchitecture: {encoder: {type: mobilenetv2}, decoder: {type: fbnet, stages: [1]}}\n")
    monkeypatch.setenv("MOBILEDEPTH_MODELS", str(models))
    current = spec_hash(resolve_spec("zz-test-model"))
    status = spec_hash_checker()
    assert status("zz-test-model", current) == "current"
    assert status("zz-test-model", "0" * 64) == "stale"
    assert status("no-such-model-anywhere", current) == "unknown"
    assert status("zz-test-model", None) == "unknown"


def test_pareto_front_hand_computed():
    points = [(10, 0.20), (20, 0.15), (15, 0.25), (30, 0.16), (40, 0.12), (5, 0.30)]
    assert pareto_front(points) == [(5, 0.30), (10, 0.20), (20, 0.15), (40, 0.12)]
    assert pareto_front([]) == []


def test_plot_is_a_png_with_content(report):
    from PIL import Image

    png = render_plot_png(report)
    image = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (image < 200).mean() > 0.01  # axes, points, labels: not a blank canvas


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian 'chromium' is not installed (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(render(report, "html"))
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1400,1400", page.as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert rgb.shape[:2] == (1400, 1400)
    gray = rgb.mean(axis=2)
    assert (gray < 200).mean() > 0.01, "the page rendered blank"
    # the embedded plot is drawn: the Pareto-front / point colours (tab10) appear, not just black text on white
    colourful = (rgb.max(axis=2) - rgb.min(axis=2)) > 60
    assert colourful.sum() > 500, "no coloured pixels: the plot image did not render"


# --------------------------------------------------------------------------- CLI

def test_cli_report_every_format(filled_store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MOBILEDEPTH_MODELS", str(tmp_path / "nothing-here"))
    for fmt in ("md", "html", "json", "csv"):
        out = tmp_path / f"r.{fmt}"
        assert main(["report", "--format", fmt, "--out", str(out), "--store", str(filled_store)]) == 0
        assert out.stat().st_size > 200
    assert "base64," in (tmp_path / "r.html").read_text()
    assert main(["report", "--store", str(filled_store), "--model", "fast*"]) == 0
    out = capsys.readouterr().out
    assert "fastdepth" in out and "mdepth-mnv2-fbnet |" not in out


def test_cli_bad_inputs_one_line_errors(filled_store, tmp_path, capsys):
    not_store = tmp_path / "notes.txt"
    not_store.write_text("just some text\n" * 10)
    before = filled_store.read_bytes()
    cases = [
        (["report", "--store", str(not_store)], "not a mobiledepth store"),
        (["report", "--store", str(filled_store), "--device", "pixel9"], "no device matches 'pixel9'"),
        (["report", "--store", str(filled_store), "--model", "midas"], "no model matches 'midas'"),
        (["store", "import", "--store", str(filled_store), str(not_store)], "is not JSON"),
        (["store", "import", "--store", str(not_store), str(not_store)], "not a mobiledepth store"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, (argv, err)
    assert not_store.read_text() == "just some text\n" * 10
    assert filled_store.read_bytes() == before


def test_cli_store_import_export(tmp_path, realistic_records, capsys):
    run = tmp_path / "runs" / "paper"
    run.mkdir(parents=True)
    (run / "export.json").write_text(json.dumps(realistic_records["exports"][0]))
    (run / "bench.json").write_text(json.dumps(realistic_records["bench"]))
    (run / "eval.json").write_text(json.dumps(realistic_records["evals"][0]))
    store = tmp_path / "s.sqlite"
    assert main(["store", "import", "--store", str(store), str(run / "export.json"), str(run / "bench.json")]) == 0
    assert main(["store", "import", "--store", str(store), str(run)]) == 0  # a directory: finds all three
    with open_store(store) as st:
        assert st.counts() == {"artifacts": 2, "bench_results": 6, "evals": 1, "prune_runs": 0, "prune_steps": 0}
    dump = tmp_path / "dump.json"
    assert main(["store", "export", "--store", str(store), "--out", str(dump)]) == 0
    assert main(["store", "import", "--store", str(tmp_path / "copy.sqlite"), str(dump)]) == 0
    with open_store(tmp_path / "copy.sqlite") as st:
        assert st.counts() == {"artifacts": 2, "bench_results": 6, "evals": 1, "prune_runs": 0, "prune_steps": 0}
        assert st.model_name_of(sha("mdepth-mnv2-fbnet-fp32")) == "mdepth-mnv2-fbnet"


def test_reported_rows_from_the_repository_model_cards():
    """The real card of the paper model (models/mdepth-mnv2-fbnet.yaml) gives the paper's Table 8 rows."""
    from pathlib import Path

    from mobiledepth.report.report import reported_rows

    card = Path(__file__).resolve().parents[2] / "models" / "mdepth-mnv2-fbnet.yaml"
    if not card.is_file():
        pytest.skip("models/mdepth-mnv2-fbnet.yaml is not in this checkout")
    rows = {(r.model, r.device, r.delegate): r for r in reported_rows([card])}
    paper = rows[("mdepth-mnv2-fbnet", "Galaxy S21", "cpu")]
    assert (paper.p50_ms, paper.params, paper.whdr, paper.flags) == (54.0, 2_600_000, 0.1156, ["reported"])
    assert rows[("mdepth-mnv2-fbnet", "Galaxy S10+", "gpu")].p50_ms == 74.0
    pruned = rows[("mdepth-mnv2-fbnet / ours pruned v3 (NetAdapt)", "Galaxy S21", "nnapi")]
    assert (pruned.p50_ms, pruned.params, pruned.whdr) == (33.0, 1_000_000, 0.1208)
    assert rows[("mdepth-mnv2-fbnet / MiDaS small", "Galaxy S10+", "nnapi")].p50_ms == 332.0


def test_model_without_card_is_skipped(card_dir):
    from mobiledepth.report.report import reported_rows

    assert reported_rows([card_dir / "no-card.yaml"]) == []


# --------------------------------------------------------------------------- truthful rows (issue 9)

def _report_of(tmp_path, exports, evals=(), card_dir=None):
    """The report of a store holding ``exports``, one host bench result per artifact and ``evals``."""
    from report_records import bench_record, bench_result

    results = [bench_result(a["sha256"], e["model"]["name"], "host", "cpu", 2000 + 500 * n, n, precision=a["precision"])
               for e in exports for n, a in enumerate(e["artifacts"])]
    with open_store(tmp_path / "truth.sqlite") as st:
        for record in [*exports, bench_record(results), *evals]:
            st.ingest(record)
        return build_report(st, card_paths=[], spec_status=fake_spec_status)


def _measured(rep, **where):
    return [r for r in rep.rows if r.source == "measured" and all(getattr(r, k) == v for k, v in where.items())]


def test_two_input_sizes_of_one_model_are_told_apart_in_every_format(tmp_path):
    from report_records import eval_record, export_record

    big = export_record("mdepth-tiny", "spec-current", 1000, 4000, precisions=("fp32",), size=(256, 256))
    small = export_record("mdepth-tiny", "spec-current", 1000, 1000, precisions=("fp32",), size=(128, 128))
    small["artifacts"][0]["sha256"] = sha("tiny-128")
    evals = [eval_record(big["artifacts"][0]["sha256"], "mdepth-tiny", 0.2), eval_record(sha("tiny-128"), "mdepth-tiny", 0.3)]
    rep = _report_of(tmp_path, [big, small], evals)
    assert [r.input_size for r in _measured(rep)] == ["128x128", "256x256"]
    assert sorted(p["input_size"] for p in plot_points_of(rep)) == ["128x128", "256x256"]  # two points, not one
    md = render(rep, "md")
    assert "| input |" in md and "| 128x128 |" in md and "| 256x256 |" in md
    assert "<td class=\"l\">128x128</td>" in render(rep, "html")
    assert [r["input_size"] for r in csv.DictReader(io.StringIO(render(rep, "csv")))] == ["128x128", "256x256"]
    assert [r["input_size"] for r in json.loads(render(rep, "json"))["rows"]] == ["128x128", "256x256"]


def plot_points_of(rep):
    from mobiledepth.report.report import plot_points

    return plot_points(rep)


def test_random_weights_are_marked_and_old_records_are_not(tmp_path):
    from report_records import eval_record, export_record

    random = export_record("rand", "spec-current", 1, 1, precisions=("fp32",), random_weights=True, seed=3)
    old = export_record("old", "spec-current", 1, 1, precisions=("fp32",), random_weights=None)  # fields unknown
    trained = export_record("trained", "spec-current", 1, 1, precisions=("fp32",))
    # a trained artifact evaluated as random weights (e.g. eval --model <zoo name>) is marked too
    evals = [eval_record(trained["artifacts"][0]["sha256"], "trained", 0.4, random_weights=True, seed=11),
             eval_record(old["artifacts"][0]["sha256"], "old", 0.2, random_weights=None)]
    rep = _report_of(tmp_path, [random, old, trained], evals)
    [r], [o], [t] = (_measured(rep, model=m) for m in ("rand", "old", "trained"))
    assert (r.random_weights, r.seed, r.flags) == (True, 3, ["random"])
    assert (o.random_weights, o.flags) == (None, [])
    assert (t.random_weights, t.seed, t.flags) == (True, 11, ["random"])
    for fmt in ("md", "html", "csv", "json"):
        text = render(rep, fmt)
        assert "random weights: untrained" in text and "(seed 3)" in text and "(seed 11)" in text, fmt
    rows = {row["model"]: row for row in json.loads(render(rep, "json"))["rows"]}
    assert (rows["rand"]["random_weights"], rows["rand"]["seed"], rows["old"]["random_weights"]) == (True, 3, None)


def test_poor_parity_is_flagged(tmp_path):
    from report_records import export_record

    record = export_record("q", "spec-current", 1, 1, precisions=("fp32", "fp16", "int8"), ordinal={"int8": 0.9312})
    fine = export_record("q-fine", "spec-current", 1, 1, precisions=("int8",), ordinal={"int8": 0.995})
    fp16 = record["artifacts"][1]["parity"]
    fp16.update(passed=False, enforced=False, ordinal_agreement=0.9985)  # published below its bar (random fp16)
    rep = _report_of(tmp_path, [record, fine])
    flags = {(r.model, r.precision): r.flags for r in _measured(rep)}
    assert flags == {("q", "fp32"): [], ("q", "fp16"): ["parity"], ("q", "int8"): ["parity"], ("q-fine", "int8"): []}
    for fmt in ("md", "html", "csv", "json"):
        assert "poor parity with PyTorch: ordinal agreement 0.931" in render(rep, fmt), fmt


def test_json_and_csv_numbers_are_rounded(tmp_path):
    from report_records import eval_record, export_record

    record = export_record("r", "spec-current", 1, 1, precisions=("fp32",))
    ev = eval_record(record["artifacts"][0]["sha256"], "r", 0.3)
    ev["value"] = 0.1 + 0.2  # 0.30000000000000004
    rep = _report_of(tmp_path, [record], [ev])
    [row] = _measured(rep)
    assert row.whdr == 0.1 + 0.2 and len(repr(row.std_ms)) > 8  # the Python rows keep every digit
    text_json, text_csv = render(rep, "json"), render(rep, "csv")
    assert "0.30000000000000004" not in text_json + text_csv
    data = json.loads(text_json)
    [jrow] = data["rows"]
    for key in ("p50_ms", "p90_ms", "spread_ms", "mean_ms", "std_ms"):
        assert jrow[key] == round(getattr(row, key), 3), key
    assert jrow["whdr"] == 0.3 and data["plot_points"][0]["latency_ms"] == round(row.p50_ms, 3)
    [crow] = csv.DictReader(io.StringIO(text_csv))
    assert crow["whdr"] == "0.3" and crow["p50_ms"] == str(round(row.p50_ms, 3))


def test_report_on_a_missing_store_creates_nothing_and_says_so(tmp_path, capsys):
    missing = tmp_path / "no" / "store.sqlite"
    assert main(["report", "--store", str(missing)]) == 0
    assert "there is no store at" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
