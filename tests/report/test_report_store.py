"""The store: round trip, idempotent import, migrations, concurrency, crash safety, bad input."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from report_records import bench_record, bench_result, sha

from mobiledepth.errors import UserError
from mobiledepth import store as store_mod
from mobiledepth.store import SCHEMA_VERSION, TABLE_COLUMNS, default_store_path, open_store


def fill(st, records) -> None:
    for rec in records["exports"]:
        st.ingest(rec)
    st.ingest(records["bench"])
    for rec in records["evals"]:
        st.ingest(rec)


def test_round_trip_keeps_raw_samples_and_derives_stats(tmp_path, realistic_records):
    with open_store(tmp_path / "s.sqlite") as st:
        fill(st, realistic_records)
        assert st.counts() == {"artifacts": 3, "bench_results": 6, "evals": 3, "prune_runs": 0, "prune_steps": 0}
        arts = st.artifacts()
        pa = realistic_records["sha"]["paper_fp32"]
        assert arts[pa].model_name == "mdepth-mnv2-fbnet" and arts[pa].params == 2_600_000
        assert arts[pa].input_size == (256, 256) and arts[pa].parity["passed"] is True
        first = st.bench_results()[0]
        given = realistic_records["bench"]["results"][0]
        assert first.samples_us == given["samples_us"]  # every raw sample, verbatim
        assert first.stats_source == "samples"
        assert first.stats["median"] == pytest.approx(np.median(given["samples_us"]))
        assert first.stats["p90"] == pytest.approx(np.percentile(given["samples_us"], 90))
        assert first.stats["std"] == pytest.approx(np.std(given["samples_us"]))
        failed = [r for r in st.bench_results() if r.failed]
        assert len(failed) == 1 and failed[0].error == "Failed to apply NNAPI delegate." and failed[0].stats is None
        assert [e.value for e in st.evals()] == [r["value"] for r in realistic_records["evals"]]


def test_tool_stats_used_when_tool_gives_no_raw_samples(tmp_path):
    result = bench_result(sha("a"), "m", "galaxy_s21", "cpu", 5000, 7)
    result.update(samples_us=[], samples_kind="per_invocation_avg")
    with open_store(tmp_path / "s.sqlite") as st:
        st.ingest(bench_record([result]))
        row = st.bench_results()[0]
    assert row.stats_source == "tool" and row.stats["median"] == result["stats"]["median"]


def test_stats_are_android_benchs_and_hand_computed(tmp_path):
    result = bench_result(sha("hand"), "m", "host", "cpu", 5000, 8)
    result["samples_us"] = [4.0, 1.0, 3.0, 2.0]
    with open_store(tmp_path / "s.sqlite") as st:
        st.ingest(bench_record([result]))
        s = st.bench_results()[0].stats
    assert (s["count"], s["min"], s["max"], s["mean"], s["median"]) == (4, 1, 4, 2.5, 2.5)
    assert s["p90"] == pytest.approx(3.7)  # 1 + 0.9 * 3 = 3.7 on the sorted list
    assert set(s) == {"count", "min", "max", "mean", "std", "median", "p90", "p5", "p95"}  # android_bench's keys


def test_column_lists_match_the_tables_the_migrations_made(tmp_path):
    with open_store(tmp_path / "s.sqlite") as st:
        for table, columns in TABLE_COLUMNS.items():
            made = [r[1] for r in st._conn.execute(f"PRAGMA table_info({table})") if r[1] != "id"]
            assert sorted(c.name for c in columns) == sorted(made), table


def test_every_bench_result_field_is_stored():
    """Each field android_bench's new_result defines is a column (a nested one: itself, or each of its keys)."""
    from android_bench.result import new_result

    sources = {c.source or c.name for c in TABLE_COLUMNS["bench_results"] if c.source is not None}
    for key, value in new_result().items():
        nested = {f"{key}.{sub}" for sub in value} if isinstance(value, dict) else set()
        assert key in sources or (nested and nested <= sources), f"BenchResult field {key} has no column"


def test_a_new_bench_result_field_without_a_column_is_caught(monkeypatch):
    import android_bench.result as ab_result

    real = ab_result.new_result
    monkeypatch.setattr(ab_result, "new_result", lambda **f: {**real(**f), "energy_mj": None})
    with pytest.raises(AssertionError, match="energy_mj"):
        test_every_bench_result_field_is_stored()


def test_export_import_round_trip_and_idempotence(tmp_path, realistic_records):
    with open_store(tmp_path / "a.sqlite") as a:
        fill(a, realistic_records)
        dump = a.export_records()
        again = a.ingest(realistic_records["bench"])
        assert again.bench_results == 0 and again.duplicates == 6
        assert a.counts()["bench_results"] == 6
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(dump))
    with open_store(tmp_path / "b.sqlite") as b:
        summary = b.ingest_file(path)
        assert (summary.artifacts, summary.bench_results, summary.evals) == (3, 6, 3)
        dump_b = b.export_records()

    def strip(d):
        return [{k: v for k, v in r.items() if not (r["kind"] == "bench" and k == "created_at")} for r in d["records"]]

    assert strip(dump_b) == strip(dump)


def test_ingest_file_resolves_artifact_paths_against_run_dir(tmp_path, realistic_records):
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "export.json").write_text(json.dumps(realistic_records["exports"][0]))
    with open_store(tmp_path / "s.sqlite") as st:
        st.ingest_file(run / "export.json")
        paths = sorted(a.path for a in st.artifacts().values())
    assert paths == [str(run.resolve() / "model_fp16.tflite"), str(run.resolve() / "model_fp32.tflite")]


def test_default_path_honours_env(monkeypatch, tmp_path):
    monkeypatch.delenv("MOBILEDEPTH_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_path() == tmp_path / "xdg" / "mobiledepth" / "store.sqlite"
    monkeypatch.setenv("MOBILEDEPTH_STORE", str(tmp_path / "mine.sqlite"))
    assert default_store_path() == tmp_path / "mine.sqlite"
    with open_store() as st:
        assert st.path == tmp_path / "mine.sqlite" and st.schema_version == SCHEMA_VERSION
    assert (tmp_path / "mine.sqlite").is_file()


# --------------------------------------------------------------------------- migrations

V1_DDL = """
CREATE TABLE mobiledepth_schema (version INTEGER NOT NULL, applied_at TEXT NOT NULL, mobiledepth_version TEXT);
INSERT INTO mobiledepth_schema VALUES (1, '2026-01-01T00:00:00+00:00', '0.0.1');
CREATE TABLE artifacts (sha256 TEXT PRIMARY KEY, model_name TEXT, spec_hash TEXT, params INTEGER, macs INTEGER,
  format TEXT, precision TEXT, layout TEXT, input_h INTEGER, input_w INTEGER, size_bytes INTEGER, parity TEXT,
  checkpoint_sha256 TEXT, path TEXT, created_at TEXT, ingested_at TEXT NOT NULL, raw TEXT NOT NULL);
CREATE TABLE bench_results (id INTEGER PRIMARY KEY AUTOINCREMENT, artifact_sha256 TEXT, model_name TEXT,
  model_path TEXT, precision TEXT, device_profile TEXT, device_serial TEXT, device_model_code TEXT, soc TEXT,
  android TEXT, delegate TEXT, threads INTEGER, tool TEXT, tool_version TEXT, runs INTEGER, warmup INTEGER,
  samples_us TEXT, samples_kind TEXT, tool_stats TEXT, init_us REAL, first_inference_us REAL, warmup_avg_us REAL,
  memory TEXT, delegation_status TEXT, delegation TEXT, fallback INTEGER NOT NULL DEFAULT 0,
  failed INTEGER NOT NULL DEFAULT 0, error TEXT, started_at TEXT, duration_s REAL, ingested_at TEXT NOT NULL,
  raw TEXT NOT NULL);
CREATE TABLE evals (id INTEGER PRIMARY KEY AUTOINCREMENT, artifact_sha256 TEXT, model_name TEXT, model_path TEXT,
  backend TEXT, precision TEXT, dataset_name TEXT, dataset_hash TEXT, metric TEXT, value REAL, correct INTEGER,
  pairs INTEGER, created_at TEXT, ingested_at TEXT NOT NULL, raw TEXT NOT NULL);
"""


def _v1_store(path: Path, result: dict, copies: int) -> None:
    """A store as mobiledepth 0.0.1 wrote it (schema v1: no record keys; re-imports made duplicates)."""
    conn = sqlite3.connect(path)
    conn.executescript(V1_DDL)
    for _ in range(copies):
        conn.execute(
            "INSERT INTO bench_results (artifact_sha256, model_name, device_profile, delegate, threads, samples_us,"
            " samples_kind, fallback, failed, ingested_at, raw) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (result["artifact_sha256"], result["model_name"], "host", "cpu", 4, json.dumps(result["samples_us"]),
             "per_run", 0, 0, "2026-01-01", json.dumps(result, sort_keys=True)),
        )
    conn.commit()
    conn.close()


def test_migration_from_v1_keeps_data_and_dedups(tmp_path):
    path = tmp_path / "old.sqlite"
    result = bench_result(sha("old"), "mdepth-mnv2-fbnet", "host", "cpu", 20000, 11)
    _v1_store(path, result, copies=2)
    with open_store(path) as st:
        assert st.schema_version == SCHEMA_VERSION == 4
        rows = st.bench_results()
        assert len(rows) == 1 and rows[0].samples_us == result["samples_us"]
        # the v2 record key now makes a re-import of the same result a no-op
        assert st.ingest(bench_record([result])).duplicates == 1
        assert st.counts()["bench_results"] == 1
        assert st.integrity_ok()


def test_newer_store_is_refused_untouched(tmp_path):
    path = tmp_path / "future.sqlite"
    with open_store(path) as st:
        st._conn.execute("INSERT INTO mobiledepth_schema VALUES (99, 'x', '9.9')")
    before = path.read_bytes()
    with pytest.raises(UserError, match="newer than this mobiledepth"):
        open_store(path)
    assert path.read_bytes() == before


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("content", [b"hello, I am a text file\n" * 20, bytes(range(256)) * 8])
def test_not_a_store_is_refused_untouched(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="not a mobiledepth store") as info:
        open_store(path)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no -wal / -shm left behind


def test_foreign_sqlite_file_is_refused_untouched(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(UserError, match="SQLite file but not a mobiledepth store"):
        open_store(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("record, message", [
    ({"hello": 1}, "no 'kind'"),
    ({"kind": "lut", "schema": 1}, "unknown record kind"),
    ({"kind": "prune", "schema": 1}, "prune record lacks model"),
    ({"kind": "bench", "schema": 7, "results": []}, "schema 7"),
    ({"kind": "bench", "schema": 1, "results": [{"device": {}}]}, "lacks artifact_sha256"),
    ({"kind": "export", "schema": 1, "model": {}, "artifacts": [{"path": "x"}]}, "lacks sha256"),
])
def test_bad_records_are_refused_and_store_untouched(tmp_path, realistic_records, record, message):
    with open_store(tmp_path / "s.sqlite") as st:
        fill(st, realistic_records)
        before = st.counts()
        with pytest.raises(UserError, match=message):
            st.ingest(record)
        assert st.counts() == before


# --------------------------------------------------------------------------- concurrency

WRITERS, RECORDS_PER_WRITER, RESULTS_PER_RECORD = 8, 40, 10  # 8 processes x 400 results


def _writer(path: str, writer: int, barrier) -> None:
    barrier.wait()  # everybody starts at once (and opens the not-yet-existing store at once)
    with open_store(path) as st:
        for r in range(RECORDS_PER_WRITER):
            results = [bench_result(sha(f"w{writer}"), f"model-{writer}", "host", "cpu", 1000 + i,
                                    seed=writer * 100_000 + r * 100 + i, runs=20)
                       for i in range(RESULTS_PER_RECORD)]
            st.ingest(bench_record(results))


def test_many_processes_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=_writer, args=(path, w, barrier)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    with open_store(path) as st:
        rows = st.bench_results()
        assert len(rows) == WRITERS * RECORDS_PER_WRITER * RESULTS_PER_RECORD
        per_writer = {}
        for row in rows:
            per_writer[row.model_name] = per_writer.get(row.model_name, 0) + 1
        assert per_writer == {f"model-{w}": RECORDS_PER_WRITER * RESULTS_PER_RECORD for w in range(WRITERS)}
        assert all(len(row.samples_us) == 20 for row in rows)
        assert st.integrity_ok()


# --------------------------------------------------------------------------- crash safety

def test_exception_mid_record_leaves_no_half_record(tmp_path, realistic_records, monkeypatch):
    with open_store(tmp_path / "s.sqlite") as st:
        fill(st, realistic_records)
        before = st.counts()
        real_row, calls = store_mod._bench_row, []

        def exploding_row(result):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("disk on fire")
            return real_row(result)

        monkeypatch.setattr(store_mod, "_bench_row", exploding_row)
        fresh = [bench_result(sha("new"), "m", "host", "cpu", 1000, s) for s in range(200, 205)]
        with pytest.raises(RuntimeError, match="disk on fire"):
            st.ingest(bench_record(fresh))
        assert len(calls) == 3  # two results were already inserted inside the transaction
        assert st.counts() == before
        monkeypatch.setattr(store_mod, "_bench_row", real_row)
        assert st.ingest(bench_record(fresh)).bench_results == 5  # the store still takes writes


def _doomed_writer(path: str, ready) -> None:
    real_row, calls = store_mod._bench_row, []

    def stalling_row(result):
        calls.append(1)
        if len(calls) == 3:  # two rows written, transaction open: wait to be killed
            ready.set()
            import time
            time.sleep(600)
        return real_row(result)

    store_mod._bench_row = stalling_row
    with open_store(path) as st:
        st.ingest(bench_record([bench_result(sha("doomed"), "doomed", "host", "cpu", 1000, s) for s in range(5)]))


def test_killed_writer_leaves_store_readable_without_half_record(tmp_path, realistic_records):
    path = str(tmp_path / "s.sqlite")
    with open_store(path) as st:
        fill(st, realistic_records)
        before = st.counts()
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_doomed_writer, args=(path, ready))
    proc.start()
    assert ready.wait(timeout=120), "the writer never reached the middle of its transaction"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    with open_store(path) as st:
        assert st.integrity_ok()
        assert st.counts() == before
        assert all(r.model_name != "doomed" for r in st.bench_results())
        assert st.ingest(bench_record([bench_result(sha("after"), "after", "host", "cpu", 900, 1)])).bench_results == 1


def test_numpy_values_are_stored_as_plain_json(tmp_path):
    from report_records import eval_record

    record = eval_record(sha("np"), "m", 0.25)
    record["pairs"] = np.int32(1000)
    record["value"] = np.float32(0.25)
    record["input_size"] = np.array([256, 256], dtype=np.int32)
    with open_store(tmp_path / "s.sqlite") as st:
        assert st.ingest(record).evals == 1
        row = st.evals()[0]
        assert (row.pairs, row.value) == (1000, 0.25)
        assert st.export_records()["records"][0]["input_size"] == [256, 256]


# --------------------------------------------------------------------------- random weights (migration 4), read-only use

def _weights_records():
    from report_records import eval_record, export_record

    random = export_record("rand", "s", 1, 1, precisions=("fp32",), random_weights=True, seed=9)
    old = export_record("old", "s", 1, 1, precisions=("fp32",), random_weights=None)
    evals = [eval_record(random["artifacts"][0]["sha256"], "rand", 0.5, random_weights=True, seed=9),
             eval_record(old["artifacts"][0]["sha256"], "old", 0.2, random_weights=None)]
    return [random, old, *evals]


def _ingest_all(st, records):
    for record in records:
        st.ingest(record)


def test_v3_store_migrates_to_v4_and_backfills_random_weights(tmp_path):
    from report_records import old_store

    path = tmp_path / "v3.sqlite"
    old_store(path, 3, lambda st: _ingest_all(st, _weights_records())).close()
    before = path.read_bytes()
    for readonly in (True, False):  # read-only: upgraded in memory, the file untouched; then in place
        with open_store(path, readonly=readonly) as st:
            assert st.schema_version == SCHEMA_VERSION == 4
            weights = {a.model_name: (a.random_weights, a.seed) for a in st.artifacts().values()}
            assert weights == {"rand": (True, 9), "old": (None, None)}
            assert {(e.model_name, e.random_weights, e.seed) for e in st.evals()} == {("rand", True, 9), ("old", None, None)}
        if readonly:
            assert path.read_bytes() == before
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT MAX(version) FROM mobiledepth_schema").fetchone()[0] == 4


def test_readonly_open_of_a_missing_store_creates_nothing_and_refuses_writes(tmp_path):
    missing = tmp_path / "sub" / "s.sqlite"
    with open_store(missing, readonly=True) as st:
        assert st.counts()["artifacts"] == 0
    assert not (tmp_path / "sub").exists()
    path = tmp_path / "s.sqlite"
    open_store(path).close()
    with open_store(path, readonly=True) as st:
        with pytest.raises(UserError, match="read-only") as info:
            st.ingest(bench_record([bench_result(sha("x"), "x", "host", "cpu", 900, 1)]))
        assert str(path) in str(info.value) and "--store" in str(info.value)
