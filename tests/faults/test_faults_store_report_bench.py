"""Faults of the store, `report`, `store` and `bench` through the real CLI (issue 9).

An unusable store is one line naming the path and `--store PATH` / `MOBILEDEPTH_STORE`, before any
work; a valid store on a read-only file system is still reported; outputs are checked before work;
`bench` checks bench.json's folder and the store before timing, so the two never disagree.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cli_faults import assert_user_error, run_cli, tree

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from report_records import bench_record, bench_result, export_record, old_store  # noqa: E402

from mobiledepth.store import open_store  # noqa: E402

STORE_FIX = "--store PATH or MOBILEDEPTH_STORE"


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory) -> Path:
    """A 32x32 two-conv TFLite model (the bench stage's test model)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "android_bench"))
    from ab_tflite_models import build_conv_tflite, skip_without_converter

    skip_without_converter()

    return build_conv_tflite(tmp_path_factory.mktemp("tflite") / "tiny.tflite")


@pytest.fixture
def model_dir(tmp_path, tiny_tflite) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(tiny_tflite, folder / "tiny.tflite")
    return folder


def filled_store(path: Path) -> Path:
    """A valid store holding one export (fp32 + int8) and its bench results."""
    record = export_record("mdepth-tiny", "spec", 1000, 2000, precisions=("fp32", "int8"), size=(64, 64))
    results = [bench_result(a["sha256"], "mdepth-tiny", "host", "cpu", 2000, n, precision=a["precision"])
               for n, a in enumerate(record["artifacts"])]
    with open_store(path) as st:
        st.ingest(record)
        st.ingest(bench_record(results))
    return path


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run(list(map(str, args)), capture_output=True, text=True)


@pytest.fixture
def readonly_mount(tmp_path):
    """(src, ro): a folder and a read-only bind mount of it (what is put in src shows in ro)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only bind mount needs root and mount(8)")
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    bound = _run("mount", "--bind", src, ro)
    if bound.returncode:
        pytest.skip(f"mount is not permitted here: {bound.stderr.strip()}")
    remounted = _run("mount", "-o", "remount,bind,ro", ro)
    if remounted.returncode:
        _run("umount", ro)
        pytest.skip(f"read-only remount is not permitted here: {remounted.stderr.strip()}")
    yield src, ro
    _run("umount", ro)


@pytest.fixture
def readonly_file(tmp_path):
    """A valid store made read-only by a bind mount of the file alone (its folder stays writable)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only bind mount needs root and mount(8)")
    source = filled_store(tmp_path / "source.sqlite")
    target = tmp_path / "store" / "ro.sqlite"
    target.parent.mkdir()
    shutil.copy(source, target)
    bound = _run("mount", "--bind", source, target)
    if bound.returncode:
        pytest.skip(f"mount is not permitted here: {bound.stderr.strip()}")
    if _run("mount", "-o", "remount,bind,ro", target).returncode:
        _run("umount", target)
        pytest.skip("read-only remount is not permitted here")
    yield target
    _run("umount", target)


def bad_store(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """A store path that cannot be used, and a word the error line must hold."""
    if kind == "proc":
        return Path("/proc/nope/x.db"), "/proc"
    if kind == "under_a_file":
        (tmp_path / "plain").write_text("a file\n")
        return tmp_path / "plain" / "x.db", "is a file"
    if kind == "folder":
        (tmp_path / "adir").mkdir()
        return tmp_path / "adir", "is a directory"
    (tmp_path / "notes.txt").write_text("hello\n" * 200)
    return tmp_path / "notes.txt", "not a mobiledepth store"


BAD_STORES = ["proc", "under_a_file", "folder", "not_a_store"]


def record_file(tmp_path: Path) -> Path:
    path = tmp_path / "rec" / "export.json"
    path.parent.mkdir()
    path.write_text(json.dumps(export_record("mdepth-tiny", "spec", 1, 1, size=(64, 64))))
    return path


# --------------------------------------------------------------------------- 1. a store that cannot be opened

@pytest.mark.parametrize("kind", BAD_STORES)
def test_store_import_into_an_unusable_store(tmp_path, kind):
    store, word = bad_store(kind, tmp_path)
    record = record_file(tmp_path)
    before = tree(tmp_path)
    result = run_cli("store", "import", record, store=store)
    line = assert_user_error(result, str(store), word)
    assert "--store" in line and "MOBILEDEPTH_STORE" in line
    assert tree(tmp_path) == before


@pytest.mark.parametrize("kind", BAD_STORES)
def test_bench_with_an_unusable_store_fails_before_timing(model_dir, tmp_path, kind):
    store, word = bad_store(kind, tmp_path)
    before = tree(model_dir)
    result = run_cli("bench", model_dir / "tiny.tflite", "--runs", "2", "--warmup", "0", store=store)
    line = assert_user_error(result, str(store), word)
    assert "--store" in line and "MOBILEDEPTH_STORE" in line
    assert tree(model_dir) == before  # no bench.json: nothing timed, nothing to disagree with the store


@pytest.mark.parametrize("command", [
    ["export", "--model", "mdepth-tiny", "--input-size", "64x64", "--precision", "fp32", "--out", "{out}/run"],
    ["eval", "--model", "mdepth-tiny", "--input-size", "64x64", "--data", "{data}", "--out", "{out}/eval.json"],
])
def test_other_store_writers_check_the_store_before_work(tmp_path, command):
    data = tmp_path / "data"
    assert run_cli("data", "synth", "--out", data, "--n", "2", "--size", "64x64", "--split", "test").code == 0
    (tmp_path / "out").mkdir()
    store, word = bad_store("under_a_file", tmp_path)
    result = run_cli(*[a.format(out=tmp_path / "out", data=data) for a in command], store=store)
    assert_user_error(result, str(store), word, STORE_FIX)
    assert tree(tmp_path / "out") == {}


def test_store_on_a_read_only_mount_is_refused_for_writing(readonly_mount, model_dir, tmp_path):
    src, ro = readonly_mount
    filled_store(src / "s.sqlite")
    before = (src / "s.sqlite").read_bytes()
    result = run_cli("bench", model_dir / "tiny.tflite", "--runs", "2", "--warmup", "0", store=ro / "s.sqlite")
    line = assert_user_error(result, str(ro / "s.sqlite"), "read-only file system", STORE_FIX)
    assert "not a mobiledepth store" not in line
    assert not (model_dir / "bench.json").exists()
    new = run_cli("store", "import", record_file(tmp_path), store=ro / "new.sqlite")
    assert_user_error(new, str(ro / "new.sqlite"), "read-only file system", STORE_FIX)
    assert (src / "s.sqlite").read_bytes() == before and sorted(p.name for p in src.iterdir()) == ["s.sqlite"]


def test_read_only_store_file_in_a_writable_folder_is_refused_for_writing(readonly_file, model_dir):
    """SQLite opens such a file read-only without a word; the write probe finds out before timing."""
    result = run_cli("bench", model_dir / "tiny.tflite", "--runs", "2", "--warmup", "0", store=readonly_file)
    assert_user_error(result, str(readonly_file), "read-only", STORE_FIX)
    assert not (model_dir / "bench.json").exists()


def test_chmod_read_only_store_is_refused_for_writing_and_still_reported(tmp_path, model_dir):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions, so chmod cannot make a store read-only (the mount cases cover it)")
    store = filled_store(tmp_path / "db" / "s.sqlite")
    store.chmod(0o444)
    store.parent.chmod(0o555)
    try:
        result = run_cli("bench", model_dir / "tiny.tflite", "--runs", "2", "--warmup", "0", store=store)
        assert_user_error(result, str(store), STORE_FIX)
        assert not (model_dir / "bench.json").exists()
        report = run_cli("report", "--format", "csv", "--model", "mdepth-tiny", store=store)
        assert report.code == 0 and len(report.out.splitlines()) == 3, report.err
    finally:
        store.parent.chmod(0o755)


# --------------------------------------------------------------------------- 2. a valid store on a read-only file system

def test_report_reads_a_valid_store_on_a_read_only_mount(readonly_mount, tmp_path):
    src, ro = readonly_mount
    filled_store(src / "s.sqlite")
    before = (src / "s.sqlite").read_bytes()
    result = run_cli("report", "--format", "csv", "--model", "mdepth-tiny", store=ro / "s.sqlite")
    assert result.code == 0, result.err
    assert "Traceback" not in result.err and "not a mobiledepth store" not in result.err
    assert [line.split(",")[1] for line in result.out.splitlines()[1:]] == ["mdepth-tiny", "mdepth-tiny"]
    dump = run_cli("store", "export", "--out", "-", store=ro / "s.sqlite")
    assert dump.code == 0 and len(json.loads(dump.out)["records"]) == 3, dump.err
    assert (src / "s.sqlite").read_bytes() == before and sorted(p.name for p in src.iterdir()) == ["s.sqlite"]


def test_report_reads_an_older_store_on_a_read_only_mount_without_upgrading_it(readonly_mount):
    src, ro = readonly_mount
    path = src / "s.sqlite"
    old_store(path, 3, lambda st: st.ingest(json.loads(record_file(src).read_text()))).close()  # before v4
    shutil.rmtree(src / "rec")
    (src / "current-s.sqlite").unlink()
    before = path.read_bytes()
    result = run_cli("store", "export", "--out", "-", store=ro / "s.sqlite")
    assert result.code == 0, result.err
    assert [r["kind"] for r in json.loads(result.out)["records"]] == ["export", "export"]  # fp32 and fp16
    assert path.read_bytes() == before
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT MAX(version) FROM mobiledepth_schema").fetchone()[0] == 3


# --------------------------------------------------------------------------- 3. outputs checked before work

@pytest.mark.parametrize("args, option", [
    (["report", "--out", "/proc/nope/r.md"], "--out"),
    (["report", "--format", "html", "--out", "{file}/r.html"], "--out"),
    (["report", "--out", "{dir}"], "--out"),
    (["report", "--plot", "{file}/p.png"], "--plot"),
    (["report", "--format", "json", "--out", "-", "--plot", "/proc/nope/p.png"], "--plot"),
    (["store", "export", "--out", "/proc/nope/s.json"], "--out"),
    (["store", "export", "--out", "{dir}"], "--out"),
])
def test_unwritable_outputs_fail_before_work(tmp_path, args, option):
    store = filled_store(tmp_path / "s.sqlite")
    (tmp_path / "plain").write_text("x\n")
    (tmp_path / "adir").mkdir()
    args = [a.format(file=tmp_path / "plain", dir=tmp_path / "adir") for a in args]
    before, store_bytes = tree(tmp_path), store.read_bytes()
    result = run_cli(*args, store=store)
    assert_user_error(result, option)
    assert result.out == ""  # no report printed before the error
    assert tree(tmp_path) == before and store.read_bytes() == store_bytes


def test_outputs_on_a_read_only_mount_fail_before_work(readonly_mount, tmp_path):
    _, ro = readonly_mount
    store = filled_store(tmp_path / "s.sqlite")
    for args in (["report", "--out", ro / "r.md"], ["report", "--plot", ro / "p.png"],
                 ["store", "export", "--out", ro / "s.json"]):
        assert_user_error(run_cli(*args, store=store), "read-only file system")


# --------------------------------------------------------------------------- 4. bench: bench.json's folder first

def test_bench_into_a_read_only_folder_fails_before_timing(readonly_mount, tiny_tflite, tmp_path):
    src, ro = readonly_mount
    shutil.copy(tiny_tflite, src / "tiny.tflite")
    store = tmp_path / "s.sqlite"
    result = run_cli("bench", ro / "tiny.tflite", "--runs", "2", "--warmup", "0", store=store)
    assert_user_error(result, "bench.json", "read-only file system", "copy the model")
    assert sorted(p.name for p in src.iterdir()) == ["tiny.tflite"]
    assert not store.exists()  # the store was only probed, not created


def test_bench_with_a_foreign_bench_json_fails_before_timing(model_dir, tmp_path):
    (model_dir / "bench.json").write_text('{"kind": "export"}\n')
    before = tree(model_dir)
    result = run_cli("bench", model_dir / "tiny.tflite", "--runs", "2", "--warmup", "0", store=tmp_path / "s.sqlite")
    assert_user_error(result, "bench.json", "not a bench record")
    assert tree(model_dir) == before and not (tmp_path / "s.sqlite").exists()


def test_bench_json_and_the_store_agree_after_a_good_run(model_dir, tmp_path):
    store = tmp_path / "s.sqlite"
    result = run_cli("bench", model_dir / "tiny.tflite", "--runs", "2", "--warmup", "0", store=store)
    assert result.code == 0, result.err
    written = json.loads((model_dir / "bench.json").read_text())["results"]
    with open_store(store, readonly=True) as st:
        assert [r.raw["artifact_sha256"] for r in st.bench_results()] == [r["artifact_sha256"] for r in written]
