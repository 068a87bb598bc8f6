"""Faults of `data`, `train` and `eval` through the real CLI: bad outputs fail first and in one line,
bad images are found before any work (or dropped with --skip-bad, counted), random weights are seeded."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess

import pytest
from cli_faults import assert_user_error, run_cli, tree

TINY = ["--model", "mdepth-tiny", "--input-size", "64x64"]
TRAIN = ["train", *TINY, "--steps", "1", "--batch-size", "8", "--threads", "1"]


@pytest.fixture(scope="module")
def good(synth_data):
    """A valid dataset: train 8 images x 4 pairs, test 8 images x 8 pairs, 64x64."""
    return synth_data("good", 8, 8, seed=21, train_pairs=4, test_pairs=8)


@pytest.fixture(scope="module")
def corrupt(good, tmp_path_factory):
    """The good dataset with image 000001 of both splits truncated to 300 bytes (a corrupt JPEG)."""
    root = tmp_path_factory.mktemp("corrupt") / "data"
    shutil.copytree(good, root)
    for split in ("train", "test"):
        image = root / f"DIW_{split}" / "000001.thumb"
        image.write_bytes(image.read_bytes()[:300])
    return root


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder on a read-only tmpfs (root only; skipped where mounting is not permitted)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m,ro", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def _evals_in(store) -> int:
    if not store.exists():
        return 0
    with sqlite3.connect(store) as db:
        return db.execute("select count(*) from evals").fetchone()[0]


# --------------------------------------------------------------------------- unwritable outputs
@pytest.mark.parametrize("where", ["under_file", "proc"])
def test_synth_out_impossible(tmp_path, where):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "data" if where == "under_file" else "/proc/nope/x"
    result = run_cli("data", "synth", "--out", out, "--n", "2", "--size", "32x32", store=tmp_path / "s.sqlite")
    assert_user_error(result, "--out", "choose")
    assert result.out == "" and tree(tmp_path) == {"afile": 1}


def test_synth_out_read_only(read_only_dir, tmp_path):
    result = run_cli("data", "synth", "--out", read_only_dir / "d", "--n", "2", "--size", "32x32",
                     store=tmp_path / "s.sqlite")
    assert_user_error(result, "--out", "read-only")
    assert tree(read_only_dir) == {}


def test_train_out_checked_before_any_work(corrupt, tmp_path):
    (tmp_path / "afile").write_text("x")
    # the data is bad too: the --out error proves the output is checked before the data is read
    result = run_cli(*TRAIN, "--data", corrupt, "--out", tmp_path / "afile" / "run", store=tmp_path / "s.sqlite")
    assert_user_error(result, "--out", "is a file")
    assert result.out == "" and tree(tmp_path) == {"afile": 1}


def test_train_out_read_only(good, read_only_dir, tmp_path):
    result = run_cli(*TRAIN, "--data", good, "--out", read_only_dir / "run", store=tmp_path / "s.sqlite")
    assert_user_error(result, "--out", "read-only")
    assert result.out == "" and tree(read_only_dir) == {}


def test_eval_out_checked_before_any_work(corrupt, tmp_path):
    store = tmp_path / "s.sqlite"
    result = run_cli("eval", *TINY, "--data", corrupt, "--out", "/proc/nope/eval.json", store=store)
    assert_user_error(result, "--out", "/proc/nope/eval.json")
    assert result.out == "" and _evals_in(store) == 0


def test_eval_out_read_only(good, read_only_dir, tmp_path):
    store = tmp_path / "s.sqlite"
    result = run_cli("eval", *TINY, "--data", good, "--out", read_only_dir / "eval.json", store=store)
    assert_user_error(result, "--out", "read-only")
    assert tree(read_only_dir) == {} and _evals_in(store) == 0


def test_eval_checks_the_store_before_evaluating(corrupt, tmp_path):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "eval.json"
    result = run_cli("eval", *TINY, "--data", corrupt, "--out", out, store=tmp_path / "afile" / "s.sqlite")
    assert_user_error(result, "store", "afile")  # the store, not the corrupt image: nothing was evaluated
    assert not out.exists() and tree(tmp_path) == {"afile": 1}


# --------------------------------------------------------------------------- validation before the bar
@pytest.mark.parametrize("bad", [["--batch-size", "0"], ["--model", "mdepth-nope"], ["--teacher", "nope.pt"]])
def test_train_rejects_arguments_before_drawing_a_bar(good, tmp_path, bad):
    run = tmp_path / "run"
    result = run_cli(*TRAIN, *bad, "--data", good, "--out", run, store=tmp_path / "s.sqlite")
    assert_user_error(result)
    assert result.out == "", f"something was drawn before the error: {result.out!r}"
    assert not run.exists()


# --------------------------------------------------------------------------- --skip-bad
def test_eval_corrupt_image_fails_or_is_skipped_and_counted(corrupt, tmp_path):
    store = tmp_path / "s.sqlite"
    failed = run_cli("eval", *TINY, "--data", corrupt, store=store)
    assert_user_error(failed, "DIW_test/000001.thumb", "cannot be decoded", "--skip-bad")
    assert _evals_in(store) == 0
    out = tmp_path / "eval.json"
    skipped = run_cli("eval", *TINY, "--data", corrupt, "--skip-bad", "--out", out, store=store)
    assert skipped.code == 0, skipped.err
    assert "dropped 1 image(s) and 8 pair(s)" in skipped.out
    record = json.loads(out.read_text())
    assert record["dataset"]["skipped_images"] == 1 and record["dataset"]["skipped_pairs"] == 8
    assert record["dataset"]["images"] == 7 and record["pairs"] == 56


def test_train_corrupt_image_fails_or_is_skipped_and_counted(corrupt, tmp_path):
    failed = run_cli(*TRAIN, "--data", corrupt, "--out", tmp_path / "run1", store=tmp_path / "s.sqlite")
    assert_user_error(failed, "DIW_train/000001.thumb", "cannot be decoded", "--skip-bad")
    assert failed.out == "" and not (tmp_path / "run1").exists()
    run = tmp_path / "run2"
    skipped = run_cli(*TRAIN, "--skip-bad", "--data", corrupt, "--out", run, store=tmp_path / "s.sqlite")
    assert skipped.code == 0, skipped.err
    # train 1 image x 4 pairs, validation (test split) 1 image x 8 pairs
    assert "dropped 2 image(s) and 12 pair(s)" in skipped.out
    assert (run / "model.pt").is_file() and "skip_bad: true" in (run / "config.yaml").read_text()


# --------------------------------------------------------------------------- data check
def _copy(good, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(good, root)
    return root


def test_check_decodes_every_image(corrupt, tmp_path):
    result = run_cli("data", "check", corrupt, "--split", "test", store=tmp_path / "s.sqlite")
    assert_user_error(result, "1 problem(s)", "--skip-bad")
    assert "1 problem(s)" in result.out and "corrupt: 1" in result.out and "000001.thumb" in result.out


def test_check_symlink_out_of_the_root_is_an_escape(good, tmp_path):
    root = _copy(good, tmp_path)
    outside = tmp_path / "outside.thumb"
    shutil.copy(good / "DIW_test" / "000002.thumb", outside)  # a valid image, but not under the root
    link = root / "DIW_test" / "000002.thumb"
    link.unlink()
    link.symlink_to(outside)
    result = run_cli("data", "check", root, "--split", "test", store=tmp_path / "s.sqlite")
    assert_user_error(result, "problem(s)")
    assert "escape: 1" in result.out and "link" in result.out
    eval_ = run_cli("eval", *TINY, "--data", root, store=tmp_path / "s.sqlite")
    assert_user_error(eval_, "escapes the dataset root", "--skip-bad")


def test_check_empty_csv_is_a_problem(tmp_path):
    (tmp_path / "DIW_test.csv").write_text("\n\n")
    result = run_cli("data", "check", tmp_path / "DIW_test.csv", store=tmp_path / "s.sqlite")
    assert_user_error(result, "1 problem(s)")
    assert "empty: 1" in result.out and "holds no samples" in result.out


def test_check_tolerates_a_utf8_bom(good, tmp_path):
    root = _copy(good, tmp_path)
    csv = root / "DIW_Annotations" / "DIW_test.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
    result = run_cli("data", "check", root, "--split", "test", store=tmp_path / "s.sqlite")
    assert result.code == 0, result.out
    assert "8 images, 64 pairs, no problems" in result.out


# --------------------------------------------------------------------------- seeded random weights
def test_zoo_model_eval_is_seeded_and_marked(good, tmp_path):
    store = tmp_path / "s.sqlite"
    records = []
    for _ in range(2):
        result = run_cli("eval", *TINY, "--data", good, "--json", store=store)
        assert result.code == 0, result.err
        records.append(json.loads(result.out))
    assert records[0]["random_weights"] is True and records[0]["seed"] == 0
    assert records[0]["value"] == records[1]["value"] and records[0]["correct"] == records[1]["correct"]
    other = json.loads(run_cli("eval", *TINY, "--data", good, "--json", "--seed", "5", store=store).out)
    assert other["seed"] == 5 and other["random_weights"] is True


def test_checkpoint_eval_is_not_random_and_refuses_a_seed(good, tmp_path):
    import torch

    from mobiledepth.arch import build_model, save_checkpoint

    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "m.pt", build_model("mdepth-tiny"), input_size=[64, 64])
    store = tmp_path / "s.sqlite"
    result = run_cli("eval", "--model", checkpoint, "--data", good, "--json", store=store)
    assert result.code == 0, result.err
    record = json.loads(result.out)
    assert record["random_weights"] is False and record["seed"] is None
    assert_user_error(run_cli("eval", "--model", checkpoint, "--data", good, "--seed", "1", store=store),
                      "--seed", "drop --seed")
