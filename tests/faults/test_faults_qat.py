"""`mobiledepth train --qat` with bad input, through the real CLI: one `error:` line, exit 2, no traceback,
nothing written to --out (docs/errors.md). The QAT run itself is tested in tests/train/test_qat.py (slow)."""

from __future__ import annotations

import pytest
import torch

from cli_faults import assert_user_error, run_cli, tree

pytest.importorskip("torchao")

FAST = ["--input-size", "64x64", "--batch-size", "4", "--threads", "1", "--steps", "2"]


@pytest.fixture(scope="module")
def tiny_parent(tmp_path_factory):
    """A mobiledepth checkpoint (spec + weights) of mdepth-tiny: what `train` writes, without the training."""
    from mobiledepth.arch import build_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("parent") / "model.pt", build_model("mdepth-tiny"),
                           steps=1)


def _qat(model, data, out, *extra):
    return run_cli("train", "--qat", "--model", model, "--data", data, "--out", out, *FAST, *extra)


def _other_model(parent, tmp_path):
    """mdepth-tiny's weights under the paper model's spec: a checkpoint of another model."""
    from mobiledepth.arch.checkpoint import read_checkpoint

    data = read_checkpoint(parent)
    data["spec"] = "mdepth-mnv2-fbnet"
    torch.save(data, tmp_path / "other.pt")
    return tmp_path / "other.pt"


def _bare_state_dict(parent, tmp_path):
    from mobiledepth.arch.checkpoint import read_checkpoint

    torch.save(read_checkpoint(parent)["state_dict"], tmp_path / "bare.pt")
    return tmp_path / "bare.pt"


def _junk(parent, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    return tmp_path / "junk.pt"


CASES = {
    "zoo-name": (lambda parent, tmp_path: "mdepth-tiny", ["not one", "--model RUN/model.pt"]),
    "missing-file": (lambda parent, tmp_path: tmp_path / "nope.pt", ["not one"]),
    "not-a-checkpoint": (_junk, ["cannot be loaded safely"]),
    "bare-state-dict": (_bare_state_dict, ["stores no spec"]),
    "other-model": (_other_model, ["does not fit"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_qat_refuses_what_is_not_a_trained_checkpoint_of_this_model(case, tiny_parent, synth_root, tmp_path):
    make, fragments = CASES[case]
    result = _qat(make(tiny_parent, tmp_path), synth_root, tmp_path / "run")
    assert_user_error(result, *fragments)
    assert tree(tmp_path / "run") == {}


def test_qat_too_few_calibration_images(tiny_parent, synth_root, tmp_path):
    # synth_root's train split has 8 images; QAT calibrates its ranges on at least qat.min_images (16)
    result = _qat(tiny_parent, synth_root, tmp_path / "run")
    assert_user_error(result, "at least 16 training images", "has 8")
    assert tree(tmp_path / "run") == {}


def test_qat_needs_model_data_and_out(tiny_parent, synth_root, tmp_path):
    result = run_cli("train", "--qat", "--model", tiny_parent, "--out", tmp_path / "run", *FAST)
    assert_user_error(result, "--qat needs --model CHECKPOINT")
    result = run_cli("train", "--qat", "--resume", tmp_path)
    assert_user_error(result, "do not resume")


OWN_MODEL = '''
import torch

def make():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1))
    model.input_size = (64, 64)
    return model
'''


@pytest.mark.parametrize("case", ["checkpoint-without-its-factory", "factory-without-checkpoint",
                                  "factory-with-another-models-checkpoint"])
def test_qat_of_your_own_model_needs_the_factory_and_its_checkpoint(case, user_module, tiny_parent, synth_root,
                                                                   tmp_path):
    from mobiledepth.arch import save_checkpoint

    root = user_module("qat_fault_net", OWN_MODEL)
    namespace = {}
    exec(compile(OWN_MODEL, "own", "exec"), namespace)  # this test's own source
    own = save_checkpoint(root / "own.pt", namespace["make"](), factory="qat_fault_net:make")
    args, fragments = {
        "checkpoint-without-its-factory": ((own,), ["trained from the factory qat_fault_net:make",
                                                    "--model qat_fault_net:make --checkpoint"]),
        "factory-without-checkpoint": (("qat_fault_net:make",), ["not one", "--model module:factory --checkpoint"]),
        "factory-with-another-models-checkpoint": (("qat_fault_net:make", "--checkpoint", tiny_parent),
                                                   ["does not fit"]),
    }[case]
    result = run_cli("train", "--qat", "--model", *args, "--data", synth_root, "--out", tmp_path / "run", *FAST)
    assert_user_error(result, *fragments)
    assert tree(tmp_path / "run") == {}
