"""A file the user gives is data, never code: a checkpoint (or table) naming ``module:factory``
as its spec must not import or run anything; only the user's own --model may name code."""

from __future__ import annotations

import json

import pytest
import torch

from cli_faults import assert_user_error, run_cli

HOSTILE = """
import pathlib
pathlib.Path(__file__).with_name("PWNED").write_text("ran")
def make():
    pathlib.Path(__file__).with_name("PWNED").write_text("called")
"""


@pytest.fixture()
def hostile_dir(tmp_path):
    """A folder with helper.py (which leaves PWNED when imported) and checkpoints naming code as spec."""
    from mobiledepth.arch import build_model

    (tmp_path / "helper.py").write_text(HOSTILE)
    state = build_model("mdepth-tiny").state_dict()
    for name, spec in (("factory.pt", "helper:make"), ("abort.pt", "os:abort"), ("path.pt", "/etc/passwd")):
        torch.save({"format": "mobiledepth-checkpoint/1", "spec": spec, "state_dict": state, "meta": {}},
                   tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("ckpt", ["factory.pt", "abort.pt", "path.pt"])
def test_export_refuses_code_named_by_a_checkpoint(hostile_dir, ckpt):
    result = run_cli("export", "--checkpoint", ckpt, "--out", "run", "--no-store", cwd=hostile_dir)
    assert_user_error(result, ckpt, "neither a spec nor a zoo model", "--model")
    assert not (hostile_dir / "PWNED").exists()
    assert not (hostile_dir / "run").exists()


@pytest.fixture()
def tiny_data(hostile_dir):
    """A few generated DIW-format images, so eval and train reach the checkpoint."""
    for split in ("train", "test"):
        result = run_cli("data", "synth", "--out", "data", "--n", "4", "--size", "64x64", "--split", split,
                         cwd=hostile_dir)
        assert result.code == 0, result.err
    return hostile_dir / "data"


def test_eval_and_train_refuse_code_named_by_a_checkpoint(hostile_dir, tiny_data):
    result = run_cli("eval", "--model", "factory.pt", "--data", str(tiny_data), "--no-store", cwd=hostile_dir)
    assert_user_error(result, "factory.pt", "neither a spec nor a zoo model")
    train = run_cli("train", "--model", "factory.pt", "--data", str(tiny_data), "--out", "t",
                    "--input-size", "64x64", "--steps", "1", cwd=hostile_dir)
    assert_user_error(train, "factory.pt", "neither a spec nor a zoo model")
    assert not (hostile_dir / "PWNED").exists()


def test_lut_show_refuses_code_named_by_a_table(hostile_dir):
    table = hostile_dir / "lut.json"
    table.write_text(json.dumps({"format": "mobiledepth-lut/1", "model": "helper:make", "entries": []}))
    result = run_cli("lut", "show", str(table), cwd=hostile_dir)
    assert_user_error(result, "lookup table", "neither a spec nor a zoo model")
    assert not (hostile_dir / "PWNED").exists()


def test_the_users_own_model_flag_still_runs_a_factory(hostile_dir):
    """The same reference given by the user on the command line is honoured (the factory is called)."""
    result = run_cli("export", "--model", "helper:make", "--out", "run", "--no-store", cwd=hostile_dir)
    assert (hostile_dir / "PWNED").read_text() == "called"
    assert result.code == 2  # make() returns None: refused as not a torch.nn.Module, one line
    assert_user_error(result, "not a torch.nn.Module")
