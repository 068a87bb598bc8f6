"""torchrun + DDP on the CPU (gloo): two processes train what one process trains, resume after a kill,
and a sharded evaluation counts exactly what one process counts."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mobiledepth.errors import UserError
from mobiledepth.compute.distributed import World, check_sharding, part_sizes, rank_slice
from mobiledepth.train.loader import EpochBatches
from mobiledepth.train.trainer import train

VENV_BIN = Path(sys.executable).parent
# 8 images x 6 pairs, batch 3 -> steps of 3, 3, 2 images: two processes get parts of 2+1, 2+1, 1+1.
CONFIG = {
    "model": "mdepth-tiny", "teacher": "mdepth-tiny", "input_size": [64, 64], "batch_size": 3,
    "epochs": 2, "seed": 4, "log_every": 1, "threads": 1, "optimizer": {"lr": 1e-3},
    "rebalance": {"enabled": True, "per_epoch": 3}, "checkpoint": {"every_steps": 1},
    "data": {"val_limit": 3},
}


def _torchrun(tmp_path, *args, nproc=2, wait=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MOBILEDEPTH_STORE": str(tmp_path / "store.sqlite")}
    argv = [str(VENV_BIN / "torchrun"), "--standalone", f"--nproc-per-node={nproc}",
            str(VENV_BIN / "mobiledepth"), *args]
    if not wait:
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _parameters(path):
    """The learned parameters (BatchNorm running statistics are per process on the CPU: docs/train.md)."""
    state = torch.load(path, weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}


def _assert_close(a, b, atol=2e-5):
    pa, pb = _parameters(a), _parameters(b)
    assert pa.keys() == pb.keys()
    worst = max(float((pa[k] - pb[k]).abs().max()) for k in pa)
    assert worst <= atol, worst
    return worst


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture(scope="module")
def two_process_run(synth_root, config_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp-run") / "run"
    _torchrun(out.parent, "train", "--config", str(config_file), "--data", str(synth_root), "--out", str(out))
    return out


def test_two_processes_train_what_one_process_trains(two_process_run, synth_root, tmp_path):
    one = train({**CONFIG, "accumulate": 2}, data=str(synth_root), out=str(tmp_path / "one"))
    assert one.steps == 6
    _assert_close(two_process_run / "model.pt", one.model_path)
    record = yaml.safe_load((two_process_run / "train.json").read_text())
    assert record["world_size"] == 2 and record["steps"] == 6 and record["device"] == "cpu"
    # the loss terms every rank logged are the global batch's (all-reduced), so the rebalancer agreed
    ours = [yaml.safe_load(x) for x in (two_process_run / "metrics.jsonl").read_text().splitlines()]
    theirs = [yaml.safe_load(x) for x in (one.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = lambda records: [r for r in records if r["event"] == "step"]  # noqa: E731
    for a, b in zip(steps(ours), steps(theirs), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4) and a["weights"] == pytest.approx(b["weights"], rel=1e-4)


def test_a_killed_two_process_run_resumes_to_the_same_weights(two_process_run, synth_root, config_file, tmp_path):
    run = tmp_path / "killed"
    job = _torchrun(tmp_path, "train", "--config", str(config_file), "--data", str(synth_root), "--out", str(run),
                    wait=False)
    last = run / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and job.poll() is None:
        if last.is_file() and torch.load(last, weights_only=True)["meta"]["step"] >= 2:
            break
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)  # torchrun and both ranks, mid-run
    job.wait()
    assert not (run / "model.pt").exists(), "the run finished before it could be killed"
    _torchrun(tmp_path, "train", "--resume", str(run))
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["meta"]["step"] == 6
    _assert_close(run / "model.pt", two_process_run / "model.pt", atol=1e-6)


def test_sharded_eval_equals_one_process(two_process_run, synth_root, tmp_path):
    import json

    from mobiledepth.evaluate.evaluate import evaluate

    model = two_process_run / "model.pt"
    single = evaluate(str(model), str(synth_root), split="test", batch_size=2)
    _torchrun(tmp_path, "eval", "--model", str(model), "--data", str(synth_root), "--batch-size", "2",
              "--out", str(tmp_path / "eval.json"), "--no-store")
    sharded = json.loads((tmp_path / "eval.json").read_text())
    assert (sharded["correct"], sharded["pairs"]) == (single.whdr.correct, single.whdr.pairs)
    assert sharded["world_size"] == 2


def test_a_one_process_run_resumes_under_two_processes(synth_root, tmp_path):
    """A resume may change the world size (docs/train.md): the global batch stays, the parts change."""
    run = tmp_path / "grown"
    first = train(CONFIG, data=str(synth_root), out=str(run), max_steps=3)
    assert first.steps == 3
    _torchrun(tmp_path, "train", "--resume", str(run), "--steps", "6")
    record = yaml.safe_load((run / "train.json").read_text())
    assert record["world_size"] == 2 and record["steps"] == 6
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["meta"]["step"] == 6


def test_sharded_eval_with_more_processes_than_images(two_process_run, synth_root, tmp_path):
    """A rank with no image adds nothing: three processes over two images count what one counts."""
    import json

    from mobiledepth.evaluate.evaluate import evaluate

    model = two_process_run / "model.pt"
    single = evaluate(str(model), str(synth_root), split="test", limit=2)
    _torchrun(tmp_path, "eval", "--model", str(model), "--data", str(synth_root), "--limit", "2",
              "--out", str(tmp_path / "eval.json"), "--no-store", nproc=3)
    sharded = json.loads((tmp_path / "eval.json").read_text())
    assert (sharded["correct"], sharded["pairs"], sharded["world_size"]) == (single.whdr.correct, single.whdr.pairs, 3)


def test_parts_cover_every_global_batch_once():
    for count in range(1, 9):
        for size in (1, 2, 3):
            for accumulate in (1, 2):
                slices = [rank_slice(count, World(r, size), accumulate) for r in range(size)]
                covered = [i for start, stop in slices for i in range(start, stop)]
                assert covered == list(range(count)), (count, size, accumulate)
    assert part_sizes(3, 4) == [1, 1, 1, 0]
    ranks = [list(EpochBatches(8, 3, 4, World(r, 2))) for r in range(2)]
    single = list(EpochBatches(8, 3, 4, World()))
    assert [a + b for a, b in zip(*ranks)] == single  # the seeded order, shared


def test_worlds_that_cannot_share_the_data_are_one_line():
    with pytest.raises(UserError, match="only 3 training image"):
        check_sharding(World(0, 4), batch_size=4, accumulate=1, samples=3)
    with pytest.raises(UserError, match="--batch-size 4 or more"):
        check_sharding(World(0, 2), batch_size=3, accumulate=2, samples=100)
