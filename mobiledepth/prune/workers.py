"""Run proposal jobs in parallel processes where a dying worker fails its job, not the run.

Each job runs in its own spawned process (``multiprocessing`` spawn context: no forked torch
thread pools) that writes its result JSON atomically; the parent keeps at most ``workers``
alive and polls them. A process that exits without a result (crash, ``os._exit``, OOM kill)
or runs past ``timeout_s`` becomes ``{"ok": False, "error": ...}`` for that job only. A job
whose result file already exists is not run again (resume).
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mobiledepth.errors import UserError
from mobiledepth.io import write_json_atomic


@dataclass(frozen=True)
class WorkerSlot:
    """One worker process: the device it computes on and the environment it starts with."""

    device: str | None = None  # the device inside that process (None: the run's own --train-device)
    env: tuple[tuple[str, str], ...] = ()  # set in the process before its jobs run (CUDA_VISIBLE_DEVICES)


def plan_workers(device: str | None, workers: int | None, gpus: Sequence[str]) -> list[WorkerSlot]:
    """The worker slots for a run on ``device`` (``auto|cpu|cuda|cuda:N|mps``) given the visible GPUs' ids.

    ``workers`` None: one per GPU on CUDA, else 1. On CUDA every slot gets its GPU in
    ``CUDA_VISIBLE_DEVICES`` and computes on ``cuda:0``; slots beyond the GPU count share them
    round-robin; ``cuda:N`` pins every slot to GPU N. Pure: the GPUs are given, not looked up."""
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1 (got {workers})")
    name = (device or "auto").strip().lower()
    match = re.fullmatch(r"cuda(?::(\d+))?", "cuda" if name == "auto" and gpus else name)
    if match is None:  # cpu, mps, or auto without a GPU: processes on the run's own device
        return [WorkerSlot() for _ in range(workers or 1)]
    if not gpus:
        raise UserError(f"--train-device {name}: no CUDA GPU is visible; use --train-device cpu or auto")
    if match.group(1) is not None:
        index = int(match.group(1))
        if index >= len(gpus):
            raise UserError(f"--train-device {name}: only {len(gpus)} CUDA GPU(s) visible "
                            f"(cuda:0..cuda:{len(gpus) - 1}); pick one of those or use --train-device cuda")
        gpus = [gpus[index]]
    return [WorkerSlot("cuda:0", (("CUDA_VISIBLE_DEVICES", gpus[slot % len(gpus)]),))
            for slot in range(workers or len(gpus))]


def check_compute(device: str | None, precision: str | None, workers: int | None) -> list[WorkerSlot]:
    """Check ``--train-device`` / ``--precision-mode`` / ``--workers`` before any work; the worker slots."""
    from mobiledepth.compute.device import device_settings, visible_gpus

    device_settings(device, precision, flag="--train-device")  # one line: a device not there, a precision it lacks
    return plan_workers(device, workers, visible_gpus())


def _child(fn: Callable[[dict], dict], job: dict, slot: WorkerSlot | None = None) -> None:
    if slot is not None:  # a worker process of its own: its GPU, its device
        os.environ.update(dict(slot.env))
        job = {**job, "device": slot.device} if slot.device else job
    try:
        result = {"ok": True, **fn(job)}
    except BaseException as exc:  # noqa: BLE001 - a failed proposal is data, not a crash
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        result = {"ok": False, "error": f"{type(exc).__name__}: {line}"[:300],
                  "traceback": traceback.format_exc()[-2000:]}
    write_json_atomic(job["result_path"], result)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _finished(job: dict, result: dict, on_done: Callable[[dict, dict], None] | None) -> dict:
    if on_done:
        on_done(job, result)
    return result


def run_jobs(fn: Callable[[dict], dict], jobs: list[dict], workers: int | Sequence[WorkerSlot] = 1,
             timeout_s: float | None = None, on_done: Callable[[dict, dict], None] | None = None) -> list[dict]:
    """Results of ``fn(job)`` for every job (each job needs a ``result_path``), in job order.

    ``workers``: a count, or the slots of :func:`plan_workers`. One worker runs in this process
    (exceptions still fail only their job; no slot environment applies); more run each job in a
    spawned process started in a free slot (a slot's ``device`` is passed as ``job["device"]``).
    ``fn`` must be importable (module level)."""
    slots = [WorkerSlot()] * workers if isinstance(workers, int) else list(workers)
    results: list[dict | None] = [None] * len(jobs)
    pending = []
    for index, job in enumerate(jobs):
        previous = _read(Path(job["result_path"]))
        if previous is not None:
            results[index] = _finished(job, {**previous, "reused": True}, on_done)
        else:
            pending.append(index)
    if len(slots) <= 1:
        for index in pending:
            _child(fn, jobs[index])
            result = _read(Path(jobs[index]["result_path"])) or {"ok": False, "error": "no result written"}
            results[index] = _finished(jobs[index], result, on_done)
    else:
        for index, result in _run_in_processes(fn, jobs, pending, slots, timeout_s):
            results[index] = _finished(jobs[index], result, on_done)
    return results  # type: ignore[return-value]


def _run_in_processes(fn: Callable[[dict], dict], jobs: list[dict], pending: list[int], slots: list[WorkerSlot],
                      timeout_s: float | None):
    """Yield (job index, result) as spawned workers finish, one alive per slot at most."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    running: dict[int, tuple[Any, float, int]] = {}  # job index -> (process, start, slot number)
    free = list(range(len(slots)))
    queue = list(pending)
    while queue or running:
        while queue and free:
            index, slot = queue.pop(0), free.pop(0)
            proc = ctx.Process(target=_child, args=(fn, jobs[index], slots[slot]), daemon=True)
            proc.start()
            running[index] = (proc, time.monotonic(), slot)
        time.sleep(0.2)
        for index, (proc, started, slot) in list(running.items()):
            timed_out = timeout_s is not None and time.monotonic() - started > timeout_s
            if proc.is_alive() and not timed_out:
                continue
            del running[index]
            free.append(slot)
            yield index, _outcome(proc, timed_out, timeout_s, Path(jobs[index]["result_path"]))


def _outcome(proc, timed_out: bool, timeout_s: float | None, result_path: Path) -> dict:
    """A finished (or overdue, then killed) worker's result; a failure is kept so a resume does not retry it."""
    if timed_out and proc.is_alive():
        proc.kill()
        proc.join(5)
        result = {"ok": False, "error": f"worker timed out after {timeout_s:.0f} s and was killed"}
    else:
        proc.join()
        result = _read(result_path) or {"ok": False, "error": f"worker died without a result (exit code {proc.exitcode})"}
    if not result.get("ok", False) and not result_path.exists():
        # keep the failure so a resume does not retry a proposal that kills its worker
        write_json_atomic(result_path, result)
    return result
