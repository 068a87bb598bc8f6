"""Faults of the scale options through the real CLI (issue 13): an accelerator that is not there, more
processes than images, a world size set by hand, a resume under a world that cannot share the data.
Each is exit 2 with one `error:` line, before any work, and leaves nothing behind."""

from __future__ import annotations

import pytest
import torch
from cli_faults import assert_user_error, run_cli, tree

TINY = ["--model", "mdepth-tiny", "--input-size", "64x64"]
TRAIN = ["train", *TINY, "--steps", "1", "--batch-size", "8", "--threads", "1"]
ONE_RANK_OF = lambda size: {"WORLD_SIZE": str(size), "RANK": "0", "LOCAL_RANK": "0"}  # noqa: E731


def _present(device: str) -> bool:
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        return torch.cuda.is_available() and index < torch.cuda.device_count()
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


ABSENT = [pytest.param(d, marks=pytest.mark.skipif(_present(d), reason=f"{d} is here")) for d in ("cuda", "cuda:3", "mps")]


@pytest.fixture(scope="module")
def data(synth_data):
    """Train 8 images x 4 pairs, test 2 images, 64x64."""
    return synth_data("scale", 8, 2, seed=5, train_pairs=4, test_pairs=8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from mobiledepth.arch import build_model, resolve_spec, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(path, build_model("mdepth-tiny", with_heads=False, seed=0), resolve_spec("mdepth-tiny"))


@pytest.mark.parametrize("device", ABSENT)
def test_train_on_an_absent_device(data, tmp_path, device):
    out = tmp_path / "run"
    result = run_cli(*TRAIN, "--data", data, "--out", out, "--device", device)
    assert_user_error(result, f"--device {device}", "use --device cpu or auto")
    assert not out.exists()


@pytest.mark.parametrize("device", ABSENT)
def test_eval_on_an_absent_device(data, tmp_path, device):
    out, store = tmp_path / "eval.json", tmp_path / "store.sqlite"
    result = run_cli("eval", *TINY, "--data", data, "--out", out, "--device", device, store=store)
    assert_user_error(result, f"--device {device}", "use --device cpu or auto")
    assert not out.exists() and not store.exists()


@pytest.mark.parametrize("device", ABSENT)
def test_prune_fine_tunes_on_an_absent_device(data, checkpoint, tmp_path, device):
    out = tmp_path / "prune"
    result = run_cli("prune", "--checkpoint", checkpoint, "--data", data, "--target-ratio", "0.8", "--no-store",
                     "--out", out, "--train-device", device)
    assert_user_error(result, f"--train-device {device}", "use --train-device cpu or auto")
    assert not out.exists()


def test_prune_mixed_precision_on_the_cpu_is_refused_first(data, checkpoint, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("auto picks the GPU here")
    out = tmp_path / "prune"
    result = run_cli("prune", "--checkpoint", checkpoint, "--data", data, "--target-ratio", "0.8", "--no-store",
                     "--out", out, "--precision-mode", "bf16")
    assert_user_error(result, "--precision-mode bf16 needs a GPU", "--train-device cuda")
    assert not out.exists()


def test_prune_zero_workers_is_one_line(data, checkpoint, tmp_path):
    result = run_cli("prune", "--checkpoint", checkpoint, "--data", data, "--target-ratio", "0.8", "--no-store",
                     "--out", tmp_path / "prune", "--workers", "0")
    assert_user_error(result, "--workers must be at least 1")
    assert not (tmp_path / "prune").exists()


def test_prune_zero_min_proposals_is_one_line(data, checkpoint, tmp_path):
    result = run_cli("prune", "--checkpoint", checkpoint, "--data", data, "--target-ratio", "0.8", "--no-store",
                     "--out", tmp_path / "prune", "--min-proposals", "0")
    assert_user_error(result, "--min-proposals must be at least 1", "leave it out for 3")
    assert not (tmp_path / "prune").exists()


def test_more_processes_than_training_images(data, tmp_path):
    """What every rank of `torchrun --nproc-per-node 9` sees; refused before joining the process group."""
    out = tmp_path / "run"
    result = run_cli(*TRAIN[:-4], "--batch-size", "9", "--data", data, "--out", out, env=ONE_RANK_OF(9))
    assert_user_error(result, "9 processes but only 8 training image(s)", "at most 8 processes")
    assert not out.exists()


def test_resume_under_a_world_that_cannot_share_the_data(data, tmp_path):
    run = tmp_path / "run"
    first = run_cli(*TRAIN, "--data", data, "--out", run, store=tmp_path / "store.sqlite")
    assert first.code == 0, first.err[-2000:]
    before = tree(run)
    result = run_cli("train", "--resume", run, "--steps", "2", env=ONE_RANK_OF(9), store=tmp_path / "store.sqlite")
    assert_user_error(result, "9 processes but only 8 training image(s)")
    assert tree(run) == before  # the run is as it was: resumable with fewer processes


@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_world_size_set_by_hand_without_torchrun(data, tmp_path, command):
    out = tmp_path / ("run" if command == "train" else "eval.json")
    args = [*TRAIN] if command == "train" else ["eval", *TINY, "--no-store"]
    env = {**ONE_RANK_OF(2), "MASTER_ADDR": "", "MASTER_PORT": ""}
    result = run_cli(*args, "--data", data, "--out", out, env=env, timeout=120)
    assert_user_error(result, "WORLD_SIZE=2 but MASTER_ADDR and MASTER_PORT not set", "torchrun")
    assert not out.exists()
