"""NetAdapt's proposal workers and --train-device: which process computes where (issue 13).

The assignment is a pure function of the device, --workers and the visible GPUs, so it is tested
here with fake GPU lists; the pool is tested with slots whose environment a job reports back."""

from __future__ import annotations

import os

import pytest

from mobiledepth.errors import UserError
from mobiledepth.prune.workers import WorkerSlot, plan_workers, run_jobs


def gpu_of(slot: WorkerSlot) -> str | None:
    return dict(slot.env).get("CUDA_VISIBLE_DEVICES")


@pytest.mark.parametrize("device", ["cpu", "mps", "auto"])
def test_without_gpus_workers_are_processes_on_the_runs_device(device):
    assert plan_workers(device, None, []) == [WorkerSlot()]
    assert plan_workers(device, 3, []) == [WorkerSlot()] * 3


def test_cpu_stays_on_the_cpu_even_with_gpus():
    assert plan_workers("cpu", 2, ["0", "1"]) == [WorkerSlot(), WorkerSlot()]


@pytest.mark.parametrize("device", ["auto", "cuda", "CUDA"])
def test_one_worker_per_gpu_by_default_each_on_its_own_cuda0(device):
    slots = plan_workers(device, None, ["0", "1", "2", "3"])
    assert [gpu_of(s) for s in slots] == ["0", "1", "2", "3"]
    assert {s.device for s in slots} == {"cuda:0"}


def test_more_workers_than_gpus_share_them_round_robin():
    assert [gpu_of(s) for s in plan_workers("cuda", 5, ["0", "1"])] == ["0", "1", "0", "1", "0"]
    assert [gpu_of(s) for s in plan_workers("cuda", 1, ["0", "1"])] == ["0"]


def test_the_gpu_ids_are_the_ones_cuda_visible_devices_names():
    assert [gpu_of(s) for s in plan_workers("cuda", None, ["4", "GPU-ab12"])] == ["4", "GPU-ab12"]


def test_cuda_n_pins_every_worker_to_gpu_n():
    slots = plan_workers("cuda:1", 3, ["4", "6"])
    assert [gpu_of(s) for s in slots] == ["6", "6", "6"] and {s.device for s in slots} == {"cuda:0"}
    assert len(plan_workers("cuda:0", None, ["4", "6"])) == 1


@pytest.mark.parametrize("device, gpus, words", [
    ("cuda", [], "no CUDA GPU"), ("cuda:3", [], "no CUDA GPU"), ("cuda:2", ["0", "1"], "only 2 CUDA GPU"),
])
def test_a_gpu_that_is_not_there_is_one_line(device, gpus, words):
    with pytest.raises(UserError, match=words) as info:
        plan_workers(device, None, gpus)
    assert "--train-device" in str(info.value) and "\n" not in str(info.value)


def test_zero_workers_is_refused():
    with pytest.raises(UserError, match="--workers must be at least 1"):
        plan_workers("cuda", 0, ["0"])


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    from mobiledepth.compute import device

    monkeypatch.setattr(device, "_cuda_count", lambda: 2)
    assert device.visible_gpus({"CUDA_VISIBLE_DEVICES": "5, 7"}) == ["5", "7"]
    assert device.visible_gpus({}) == ["0", "1"]
    assert device.visible_gpus({"CUDA_VISIBLE_DEVICES": "3,4,9"}) == ["3", "4"]  # torch saw only two of them


def report_slot(job: dict) -> dict:
    """A job that says where it ran (module level: spawned workers import it)."""
    return {"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": job.get("device"), "pid": os.getpid()}


def test_each_worker_process_starts_with_its_slots_gpu_and_device(tmp_path):
    slots = plan_workers("cuda", None, ["11", "12"])  # two fake GPUs: only their names reach the children
    jobs = [{"x": x, "result_path": str(tmp_path / f"{x}.json")} for x in range(4)]
    results = run_jobs(report_slot, jobs, slots, timeout_s=120)
    assert all(r["ok"] for r in results)
    assert {r["gpu"] for r in results} <= {"11", "12"} and {r["device"] for r in results} == {"cuda:0"}
    assert len({r["pid"] for r in results}) == 4  # a process per job
    assert os.environ.get("CUDA_VISIBLE_DEVICES") not in ("11", "12")  # the parent's environment is untouched


def test_one_slot_runs_in_this_process_on_the_runs_own_device(tmp_path):
    results = run_jobs(report_slot, [{"result_path": str(tmp_path / "a.json")}], plan_workers("cuda", 1, ["3"]))
    assert results[0]["pid"] == os.getpid() and results[0]["device"] is None


def test_prune_passes_its_device_to_fine_tunes_and_checks_it_first(tmp_path):
    from mobiledepth.prune.netadapt import PruneSettings, _train_config, check_settings

    settings = PruneSettings(model=None, checkpoint="c.pt", target_ms=1, data="d", train_device="cpu", precision="fp32",
                             input_size=[64, 96])
    config = _train_config(settings, "c.pt", 5, 0)
    assert (config["device"], config["precision"]) == ("cpu", "fp32")
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"")
    bad = PruneSettings(model=None, checkpoint=str(ckpt), target_ms=1, data=str(tmp_path), train_device="cuda:3")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(UserError, match="--train-device cuda:3: no CUDA GPU"):
            check_settings(bad)


def test_resume_keeps_the_device_unless_given():
    from mobiledepth.prune.netadapt import PruneSettings, apply_resume_overrides

    saved = PruneSettings(model=None, checkpoint="c.pt", target_ms=1, data="d", train_device="cpu", precision="fp32")
    kept = apply_resume_overrides(saved, "run")
    assert (kept.train_device, kept.precision) == ("cpu", "fp32")
    assert apply_resume_overrides(saved, "run", train_device="auto").train_device == "auto"
    assert PruneSettings.from_record({k: v for k, v in saved.to_record().items()
                                      if k not in ("train_device", "precision")}).train_device == "auto"  # older runs
    if not __import__("torch").cuda.is_available():
        with pytest.raises(UserError, match="--train-device cuda: no CUDA GPU"):
            apply_resume_overrides(saved, "run", train_device="cuda")
