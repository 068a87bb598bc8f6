"""The trainer: determinism, Ctrl-C saves, resume is bit-for-bit, config and CLI errors."""

import json
import os
import shutil
import signal

import pytest
import torch

from mobiledepth.errors import UserError
from mobiledepth.train.config import DEFAULTS, resolve_config
from mobiledepth.train.trainer import train

# 8 images / batch 3 -> 3 steps per epoch (the last one short), 2 epochs = 6 steps;
# with a teacher and rebalancing 3x per epoch every piece of state is exercised.
CONFIG = {
    "model": "mdepth-tiny", "teacher": "mdepth-tiny", "input_size": [64, 64], "batch_size": 3,
    "epochs": 2, "seed": 4, "log_every": 1, "threads": 1,
    "optimizer": {"lr": 1e-3}, "rebalance": {"enabled": True, "per_epoch": 3},
    "checkpoint": {"every_steps": 2}, "data": {"val_limit": 3},
}


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _assert_same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.fixture(scope="module")
def uninterrupted(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    return train(CONFIG, data=str(synth_root), out=str(out))


def test_run_directory_contents(uninterrupted):
    run = uninterrupted.run_dir
    assert uninterrupted.stopped == "done" and uninterrupted.steps == 6
    for name in ("config.yaml", "metrics.jsonl", "model.pt", "train.json", "checkpoints/last.pt",
                 "checkpoints/epoch_1.pt", "checkpoints/epoch_2.pt"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["event"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert set(steps[0]["loss"]) == {"pairwise", "rmse", "ranking"}
    assert steps[0]["weights"] == pytest.approx({"pairwise": 1 / 3, "rmse": 1 / 3, "ranking": 1 / 3})
    assert [r["lr"] for r in steps] == pytest.approx([1e-3] * 3 + [5e-4] * 3)  # halved every epoch
    assert len([r for r in records if r["event"] == "rebalance"]) == 6
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2] and all(0 <= r["val_whdr"] <= 1 for r in epochs)
    assert steps[-1]["weights"] != steps[0]["weights"]  # the rebalancer moved them
    saved = resolve_config({k: v for k, v in __import__("yaml").safe_load((run / "config.yaml").read_text()).items()
                            if k != "data_path"})
    assert saved["rebalance"]["per_epoch"] == 3 and saved["batch_size"] == 3


def test_same_seed_same_weights(uninterrupted, synth_root, tmp_path):
    again = train(CONFIG, data=str(synth_root), out=str(tmp_path / "again"))
    _assert_same_weights(again.model_path, uninterrupted.model_path)


def test_ctrl_c_saves_and_resume_is_bit_for_bit(uninterrupted, synth_root, tmp_path):
    run = tmp_path / "interrupted"

    def press_ctrl_c(event):
        if event.event == "step" and event.done == 4:  # mid-epoch 2, between rebalances
            os.kill(os.getpid(), signal.SIGINT)

    first = train(CONFIG, data=str(synth_root), out=str(run), progress=press_ctrl_c)
    assert first.interrupted and first.steps == 4 and first.model_path is None
    assert torch.load(first.last_checkpoint, weights_only=True)["meta"]["step"] == 4
    with pytest.raises(UserError, match="--resume"):
        train(CONFIG, data=str(synth_root), out=str(run))  # refuses to overwrite a run
    resumed = train(resume=str(run))
    assert resumed.stopped == "done" and resumed.steps == 6
    _assert_same_weights(resumed.model_path, uninterrupted.model_path)
    full = (uninterrupted.run_dir / "metrics.jsonl").read_text().splitlines()
    again = (run / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in lines]
    assert strip(again) == strip(full)


def test_max_steps_then_resume_with_more_steps(uninterrupted, synth_root, tmp_path):
    run = tmp_path / "short"
    first = train({**CONFIG, "max_steps": 3}, data=str(synth_root), out=str(run))  # stops at an epoch end
    assert first.stopped == "max_steps" and first.steps == 3
    resumed = train(resume=str(run), max_steps=6)
    _assert_same_weights(resumed.model_path, uninterrupted.model_path)
    with pytest.raises(UserError, match="cannot change"):
        train(resume=str(run), batch_size=2)


def test_config_errors():
    with pytest.raises(UserError, match="did you mean 'batch_size'"):
        resolve_config({"batchsize": 4})
    with pytest.raises(UserError, match="loss.rankng"):
        resolve_config({"loss": {"rankng": True}})
    with pytest.raises(UserError, match="multiples of 32"):
        resolve_config({"input_size": [100, 100]})
    with pytest.raises(UserError, match="no loss term"):
        resolve_config({"loss": {"ranking": False}})
    paper = resolve_config()
    assert (paper["batch_size"], paper["epochs"], paper["input_size"]) == (4, 5, [224, 448])
    assert paper["optimizer"]["lr"] == 1e-4 and paper["scheduler"] == DEFAULTS["scheduler"]


def test_train_cli_bad_inputs_are_one_line(tmp_path, synth_root, capsys):
    from mobiledepth.cli import main

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("epochz: 3\n")
    cases = [
        ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r1"), "--model", "mdepth-tiny"],
        ["train", "--config", str(bad_yaml), "--data", str(synth_root), "--out", str(tmp_path / "r2")],
        ["train", "--config", str(tmp_path / "missing.yaml"), "--data", str(synth_root), "--out", str(tmp_path / "r3")],
        ["train", "--resume", str(tmp_path / "norun")],
        ["train", "--data", str(synth_root), "--out", str(tmp_path / "r4"), "--input-size", "100x100"],
        ["train", "--data", str(synth_root), "--out", str(tmp_path / "r5"), "--model", "nosuchmodel"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "r5" / "checkpoints").exists()


def test_train_cli_runs_and_resumes(synth_root, tmp_path, capsys):
    from mobiledepth.cli import main

    run = tmp_path / "cli-run"
    argv = ["train", "--data", str(synth_root), "--out", str(run), "--model", "mdepth-tiny",
            "--input-size", "64x64", "--batch-size", "4", "--steps", "2", "--threads", "1"]
    assert main(argv) == 0
    assert "max_steps: 2/" in capsys.readouterr().out
    assert main(["train", "--resume", str(run), "--steps", "3"]) == 0
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["meta"]["step"] == 3


def test_a_damaged_resume_point_is_one_line_before_any_step(uninterrupted, tmp_path):
    from mobiledepth.train.trainer import prepare

    run = tmp_path / "damaged"
    shutil.copytree(uninterrupted.run_dir, run)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    with pytest.raises(UserError, match="truncated or damaged") as info:
        prepare(resume=str(run))
    assert "\n" not in str(info.value)
    shutil.copyfile(run / "model.pt", last)  # weights, but no training state
    with pytest.raises(UserError, match="not a resume point .*lacks .*optimizer"):
        prepare(resume=str(run))
    assert (run / "metrics.jsonl").read_bytes() == (uninterrupted.run_dir / "metrics.jsonl").read_bytes()


def test_validation_whdr_is_what_eval_measures(synth_root):
    from mobiledepth.arch import build_model
    from mobiledepth.data.diw import load_dataset
    from mobiledepth.evaluate.evaluate import evaluate_module
    from mobiledepth.train.trainer import validation_whdr

    model = build_model("mdepth-tiny", with_heads=True, seed=3).train()
    data = load_dataset(synth_root, split="test")
    ours = validation_whdr(model, data, (64, 64), batch_size=4)
    assert model.training and ours.pairs == 6
    assert ours == evaluate_module(model, data, (64, 64), batch_size=16)


def test_a_stop_mid_epoch_validates_the_saved_weights(synth_root, tmp_path):
    """--max-steps (or --minutes) between epochs: train.json's and model.pt's val_whdr describe model.pt, not
    the last epoch's weights (seen: train.json 0.054 at step 1750, model.pt 0.064 at step 1876)."""
    from mobiledepth.arch import load_checkpoint
    from mobiledepth.train.trainer import _load_split, validation_whdr

    result = train({**CONFIG, "max_steps": 4}, data=str(synth_root), out=str(tmp_path / "mid"))  # 3 steps an epoch
    assert result.stopped == "max_steps" and result.steps == 4
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r["event"] == "final"]
    assert [r["step"] for r in final] == [4]
    model, _, meta = load_checkpoint(result.model_path, with_heads=False)
    val = _load_split(str(synth_root), "test", False, required=False, limit=3)
    expected = validation_whdr(model, val, (64, 64), batch_size=16).value
    assert final[0]["val_whdr"] == pytest.approx(expected)
    assert json.loads((result.run_dir / "train.json").read_text())["val_whdr"] == pytest.approx(expected)
    assert meta["val_whdr"] == pytest.approx(expected)


def test_a_run_ending_on_an_epoch_validates_once(uninterrupted):
    records = [json.loads(line) for line in (uninterrupted.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in records if r["event"] == "final"]  # the last epoch's validation saw model.pt's weights
