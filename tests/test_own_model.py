"""Your own model in every command (issue 12): the one resolver, training any model that meets the contract,
checkpoints that remember a factory without running it, and — slow — a public library's model end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from mobiledepth.errors import UserError

# A user's module: tuple output with one head (+ a 2-channel map that is not a head), dict output with heads.
OWN = '''
import torch


class Net(torch.nn.Module):
    def __init__(self, form):
        super().__init__()
        self.form = form
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.depth = torch.nn.Conv2d(8, 1, 1)
        self.head = torch.nn.Conv2d(8, 1, 1)
        self.aux = torch.nn.Conv2d(8, 2, 1)

    def forward(self, x):
        f = self.body(x)
        depth, head = self.depth(f), self.head(torch.nn.functional.avg_pool2d(f, 2))
        if self.form == "tuple":
            return depth, self.aux(f), head
        if self.form == "three":
            return depth, head, head, head
        return {"depth": depth, "heads": [head]}


def make():
    model = Net("tuple")
    model.input_size = (64, 64)
    return model


def make_dict():
    return Net("dict")


def make_three():
    return Net("three")


class Fixed(Net):
    def forward(self, x):
        if tuple(x.shape[-2:]) != (32, 32):
            raise ValueError("this net takes 32x32 images only")
        return super().forward(x)


def make_fixed():
    return Fixed("tuple")
'''


@pytest.fixture()
def own(user_module):
    """own_net.py importable from the current directory (a fresh import per test)."""
    return user_module("own_net", OWN)


def test_resolver_kinds_and_the_output_contract(own):
    from mobiledepth.arch.resolve import check_depth_output, resolve_model, split_output

    zoo = resolve_model("mdepth-tiny")
    assert (zoo.kind, zoo.name, zoo.factory, zoo.seed) == ("zoo", "mdepth-tiny", None, 0)
    mine = resolve_model("own_net:make", seed=3)
    assert (mine.kind, mine.name, mine.factory, mine.declared_size, mine.spec) == (
        "factory", "own_net:make", "own_net:make", (64, 64), None)
    assert check_depth_output(mine.model, (64, 64), "m") == 1  # the 2-channel map is not a head
    assert check_depth_output(resolve_model("own_net:make_dict").model, (32, 32), "m") == 1
    depth, heads = split_output({"depth": torch.zeros(1, 1, 4, 4)})
    assert depth.shape == (1, 1, 4, 4) and heads == []
    same = resolve_model("own_net:make", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(mine.model.state_dict().values(), same.model.state_dict().values()))


def test_export_probes_a_factory_at_the_size_asked_for(own):
    from mobiledepth.export.source import load_model_source

    assert load_model_source("own_net:make_fixed", input_size=(32, 32)).kind == "factory"
    with pytest.raises(UserError, match=r"fails on a \(1, 3, 256, 256\) image.*--input-size"):
        load_model_source("own_net:make_fixed")  # no declared size: the 256x256 fallback


def test_a_checkpoint_remembers_the_factory_and_never_runs_it(own):
    from mobiledepth.arch import save_checkpoint
    from mobiledepth.arch.resolve import resolve_model

    mine = resolve_model("own_net:make", seed=0)
    path = save_checkpoint(own / "ck.pt", mine.model, None, input_size=[64, 64], **mine.checkpoint_meta())
    sys.modules.pop("own_net", None)
    with pytest.raises(UserError, match=r"trained from the factory own_net:make.*pass --model own_net:make"):
        resolve_model(None, path)
    assert "own_net" not in sys.modules  # named in the message, never imported from the file
    loaded = resolve_model("own_net:make", path)
    assert (loaded.checkpoint, loaded.seed, loaded.trained_size) == (str(path), None, (64, 64))
    with pytest.raises(UserError, match="does not fit the model.*trained as own_net:make: pass --model own_net:make"):
        resolve_model("mdepth-tiny", path)


def _train(own, synth_root, model, **overrides):
    from mobiledepth.train.trainer import prepare, run

    setup = prepare(data=str(synth_root), out=str(own / "run"), model=model, input_size=[64, 64], batch_size=4,
                    max_steps=2, threads=1, **overrides)
    return setup, run(setup)


@pytest.mark.parametrize("ref", ["own_net:make", "own_net:make_dict"])
def test_train_any_model_with_its_heads(own, synth_root, ref):
    from mobiledepth.arch.checkpoint import read_checkpoint
    from mobiledepth.train.distill import training_pass

    setup, result = _train(own, synth_root, ref)
    assert len(training_pass(setup.model, torch.rand(2, 3, 64, 64)).intermediates) == 1  # the head is trained
    saved = read_checkpoint(result.model_path)
    assert saved["spec"] is None and saved["meta"]["factory"] == ref
    assert read_checkpoint(own / "run" / "checkpoints" / "last.pt")["meta"]["factory"] == ref
    assert json.loads((own / "run" / "train.json").read_text())["model"] == ref


def test_a_factory_trains_at_its_declared_size_unless_told(own, synth_root):
    from mobiledepth.train.trainer import prepare

    declared = prepare(data=str(synth_root), out=str(own / "a"), model="own_net:make", batch_size=4, max_steps=1)
    assert declared.cfg["input_size"] == [64, 64] and any("declares" in n for n in declared.notes)
    chosen = prepare(data=str(synth_root), out=str(own / "b"), model="own_net:make", input_size=[32, 32],
                     batch_size=4, max_steps=1)
    assert chosen.cfg["input_size"] == [32, 32]
    undeclared = prepare(data=str(synth_root), out=str(own / "c"), model="own_net:make_dict", batch_size=4, max_steps=1)
    assert undeclared.cfg["input_size"] == [224, 448]  # nothing declared: the recipe's default


def test_heads_need_their_weights(own, synth_root):
    with pytest.raises(UserError, match="returns 3 intermediate heads, so loss.head_weights needs 4"):
        _train(own, synth_root, "own_net:make_three")


def test_pairwise_only_with_a_named_tap(own, synth_root):
    setup, _ = _train(own, synth_root, "own_net:make", teacher="mdepth-tiny")
    assert setup.cfg["loss"]["pairwise"] is False and "pair-wise distillation is off" in setup.notes[0]
    (own / "run").rename(own / "run-untapped")
    tapped, result = _train(own, synth_root, "own_net:make", teacher="mdepth-tiny", **{"loss.student_tap": "body"})
    assert tapped.notes == [] and set(result.weights) == {"pairwise", "rmse", "ranking"}


def test_a_trained_factory_model_teaches_through_teacher_checkpoint(own, synth_root):
    from mobiledepth.train.trainer import prepare

    _, trained = _train(own, synth_root, "own_net:make")
    kwargs = dict(data=str(synth_root), model="mdepth-tiny", input_size=[64, 64], batch_size=4, max_steps=1)
    with pytest.raises(UserError, match="pass --teacher own_net:make --teacher-checkpoint"):
        prepare(out=str(own / "a"), teacher=str(trained.model_path), **kwargs)
    setup = prepare(out=str(own / "b"), teacher="own_net:make", teacher_checkpoint=str(trained.model_path), **kwargs)
    saved = torch.load(trained.model_path, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(setup.teacher.model.state_dict()["depth.weight"], saved["depth.weight"])
    with pytest.raises(UserError, match="--teacher-checkpoint needs --teacher"):
        prepare(out=str(own / "c"), teacher_checkpoint=str(trained.model_path), **kwargs)


def test_a_config_file_may_not_name_a_factory_alone(own, synth_root):
    from mobiledepth.train.trainer import prepare

    (own / "cfg.yaml").write_text("model: own_net:make\n")
    with pytest.raises(UserError, match="a file may not name code to run; pass --model own_net:make"):
        prepare(str(own / "cfg.yaml"), data=str(synth_root), out=str(own / "run"))
    assert "own_net" not in sys.modules
    setup = prepare(str(own / "cfg.yaml"), data=str(synth_root), out=str(own / "run"), model="own_net:make",
                    input_size=[64, 64])
    assert setup.model_name == "own_net:make"


def test_eval_a_factory_seeded_and_with_its_checkpoint(own, synth_root):
    from mobiledepth.evaluate.evaluate import evaluate

    first = evaluate("own_net:make", synth_root)
    assert (first.random_weights, first.seed, first.model_name, first.input_size) == (True, 0, "own_net:make", (64, 64))
    assert evaluate("own_net:make", synth_root).whdr == first.whdr  # seeded: repeats
    _, trained = _train(own, synth_root, "own_net:make")
    scored = evaluate("own_net:make", synth_root, checkpoint=trained.model_path)
    assert (scored.random_weights, scored.seed, scored.model_path) == (False, None, str(trained.model_path))


# ----------------------------------------------------------------------------- a public library's model (slow)
MONAI = '''
def make():
    from monai.networks.nets import BasicUNet

    model = BasicUNet(spatial_dims=2, in_channels=3, out_channels=1, norm="batch")
    model.input_size = (64, 64)
    return model
'''


@pytest.mark.slow
def test_monai_basic_unet_end_to_end(tmp_path):
    """MONAI's BasicUNet (nobody here wrote it): export with parity → eval → a short train → eval → export."""
    pytest.importorskip("monai.networks.nets")
    sys.path.insert(0, str(Path(__file__).parent / "faults"))
    from cli_faults import run_cli

    (tmp_path / "monai_depth.py").write_text(MONAI)

    def ok(*args):
        result = run_cli(*args, cwd=tmp_path, timeout=1200)
        assert result.code == 0, result.err[-2000:]
        return result

    for split, n in (("train", 32), ("test", 16)):
        ok("data", "synth", "--out", "data", "--n", str(n), "--size", "64x64", "--split", split)
    ok("export", "--model", "monai_depth:make", "--precision", "fp32", "--out", "random", "--no-store", "--quiet")
    parity = json.loads((tmp_path / "random" / "export.json").read_text())["artifacts"]
    assert all(a["parity"]["passed"] for a in parity)
    random = json.loads(ok("eval", "--model", "monai_depth:make", "--data", "data", "--json", "--no-store").out)
    assert random["random_weights"] and random["model_name"] == "monai_depth:make"
    ok("train", "--model", "monai_depth:make", "--data", "data", "--out", "run", "--input-size", "64x64",
       "--steps", "6", "--batch-size", "4", "--threads", "1")
    refused = run_cli("eval", "--checkpoint", "run/model.pt", "--data", "data", "--no-store", cwd=tmp_path)
    assert refused.code == 2 and "pass --model monai_depth:make" in refused.err
    trained = json.loads(ok("eval", "--model", "monai_depth:make", "--checkpoint", "run/model.pt", "--data", "data",
                            "--json", "--no-store").out)
    assert not trained["random_weights"] and trained["input_size"] == [64, 64]
    ok("export", "--model", "monai_depth:make", "--checkpoint", "run/model.pt", "--precision", "fp32,fp16",
       "--out", "trained", "--no-store", "--quiet")
    record = json.loads((tmp_path / "trained" / "export.json").read_text())
    assert record["model"]["name"] == "monai_depth:make" and all(a["parity"]["passed"] for a in record["artifacts"])
