"""`mobiledepth export` under faults: bad --out, broken store, full disk, Ctrl-C, umask, seeded weights.

Each runs the real CLI in a child process: one "error: " line, no traceback, nothing
half-written beside --out (no hidden build folder, no truncated artifact)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_faults import CliResult, assert_user_error, run_cli, tree

TINY = ("--model", "mdepth-tiny", "--input-size", "64x64", "--converter", "onnx2tf")  # the route under test


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A tmpfs mounted at ``path`` (skips the test where mounting is not permitted)."""
    path.mkdir()
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({mounted.stderr.strip()[:120]})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(disk: Path, leave_kib: int) -> int:
    """Fill ``disk`` until ``leave_kib`` KiB are free; returns the free bytes."""
    stats = os.statvfs(disk)
    with open(disk / "filler", "wb") as handle:
        handle.write(b"\0" * (stats.f_bavail * stats.f_frsize - leave_kib * 1024))
    return free_bytes(disk)


def free_bytes(disk: Path) -> int:
    stats = os.statvfs(disk)
    return stats.f_bavail * stats.f_frsize


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_out_under_a_file_is_one_line_before_any_work(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = run_cli("export", *TINY, "--out", "afile/run", cwd=tmp_path, store=tmp_path / "s.sqlite")
    assert_user_error(result, "afile/run", "is a file, not a folder", "choose another path")
    assert tree(tmp_path) == {"afile": 1} and not hidden(tmp_path)


def test_missing_eval_data_is_one_line_before_any_work(tmp_path):
    result = run_cli("export", *TINY, "--out", "run", "--eval-data", "nowhere", cwd=tmp_path,
                     store=tmp_path / "s.sqlite")
    assert_user_error(result, "--eval-data nowhere does not exist", "DIW-format dataset")
    assert tree(tmp_path) == {} and not hidden(tmp_path)


def test_unwritable_out_is_caught_before_conversion(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as readonly:
        result = run_cli("export", *TINY, "--out", readonly / "run", store=tmp_path / "s.sqlite")
        assert_user_error(result, str(readonly / "run"), "cannot be written", "read-only")
        assert "load" not in result.err  # not a stage ran: the model was not even built
        assert not (tmp_path / "s.sqlite").exists()


def test_a_broken_store_is_caught_before_conversion(tmp_path):
    (tmp_path / "afile").write_text("x")
    result = run_cli("export", *TINY, "--out", tmp_path / "run", store=tmp_path / "afile" / "s.sqlite")
    assert_user_error(result, "store", "afile", "--store")
    assert tree(tmp_path) == {"afile": 1} and not hidden(tmp_path)


@pytest.mark.parametrize("leave_kib, stage", [(60, "onnx"), (4600, "tflite")], ids=["torch-writer", "converter-child"])
def test_full_disk_is_one_line_and_the_partial_build_is_removed(tmp_path, leave_kib, stage):
    with tmpfs(tmp_path / "disk", "size=20m") as disk:
        free_before = fill(disk, leave_kib)
        result = run_cli("export", *TINY, "--precision", "fp32", "--out", disk / "run", store=tmp_path / "s.sqlite")
        assert_user_error(result, "no space left on device", "free space or choose another --out", "partial build was removed")
        failed = disk / "run.failed"
        record = json.loads((failed / "export.json").read_text())
        assert record["failed"] is True and record["error"] == "no space left on device"
        assert record["failed_stage"] == stage and record["random_weights"] is True
        assert not [n for n in tree(failed) if n != "export.json" and not n.endswith(".log")]  # no partial artifact
        assert not (disk / "run").exists() and not hidden(disk)
        assert free_before - free_bytes(disk) < 256 * 1024  # the rerun finds the space it had
        assert not (tmp_path / "s.sqlite").exists()  # nothing recorded


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (converter guards run in their own session: walk ppids)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    return False


def wait_until(predicate, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end and not predicate():
        time.sleep(0.1)
    return predicate()


def test_ctrl_c_during_conversion_records_interrupted_and_kills_the_converter(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".run.build-{dead.pid}-abcd1234.tmp"  # left by a run that was killed
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"\0" * 1000)
    env = {**os.environ, "MOBILEDEPTH_STORE": str(tmp_path / "s.sqlite")}
    proc = subprocess.Popen([sys.executable, "-m", "mobiledepth", "export", *TINY, "--out", str(tmp_path / "run")],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        started = lambda: any(p.stat().st_size > 0 for p in tmp_path.glob(".run.build-*/convert/onnx2tf.log"))
        assert wait_until(started, 300), "onnx2tf never started"
        converters = descendants(proc.pid)
        assert converters and not stale.exists()  # the dead run's build was swept when this one began
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_user_error(CliResult(proc.returncode, out, err), "interrupted", code=130)
    assert wait_until(lambda: not any(running(pid) for pid in converters), 10), "a converter outlived the interrupt"
    record = json.loads((tmp_path / "run.failed" / "export.json").read_text())
    assert record["failed"] is True and record["error"] == "interrupted" and record["failed_stage"] == "tflite"
    assert set(tree(tmp_path / "run.failed")) <= {"export.json", "onnx2tf.log"}
    assert not (tmp_path / "run").exists() and not hidden(tmp_path)


def _export_with_umask(tmp_path: Path, name: str, umask: int, precision: str):
    previous = os.umask(umask)  # inherited by the child
    try:
        return run_cli("export", *TINY, "--precision", precision, "--out", tmp_path / name, store=tmp_path / "s.sqlite")
    finally:
        os.umask(previous)


def test_runs_follow_the_umask_and_random_weights_are_seeded(tmp_path):
    first = _export_with_umask(tmp_path, "a", 0o022, "fp32,int8")
    second = _export_with_umask(tmp_path, "b", 0o027, "fp32")
    assert first.code == 0 and second.code == 0, first.err[-2000:] + second.err[-2000:]
    for name, umask in (("a", 0o022), ("b", 0o027)):
        run = tmp_path / name
        assert run.stat().st_mode & 0o777 == 0o777 & ~umask
        assert {p.stat().st_mode & 0o777 for p in run.iterdir()} == {0o666 & ~umask}
    records = [json.loads((tmp_path / n / "export.json").read_text()) for n in ("a", "b")]
    assert all(r["random_weights"] is True and r["seed"] == 0 for r in records)
    shas = [{a["path"]: a["sha256"] for a in r["artifacts"] if a["precision"] == "fp32"} for r in records]
    assert shas[0] == shas[1] and len(shas[0]) == 2  # model.onnx and model_fp32.tflite, byte for byte
    # int8 orders pixels visibly worse than PyTorch: a warning line, not an error
    warning = [line for line in first.err.splitlines()
               if line.startswith("warning: model_int8.tflite") and "orders" in line]
    assert len(warning) == 1 and "ordinal agreement" in warning[0] and "mobiledepth eval" in warning[0]
    assert first.code == 0 and all(line.startswith("warning: ") for line in first.error_lines)
