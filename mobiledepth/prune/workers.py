"""Run proposal jobs in parallel processes where a dying worker fails its job, not the run.

Each job runs in its own spawned process (``multiprocessing`` spawn context: no forked torch
thread pools) that writes its result JSON atomically; the parent keeps at most ``workers``
alive and polls them. A process that exits without a result (crash, ``os._exit``, OOM kill)
or runs past ``timeout_s`` becomes ``{"ok": False, "error": ...}`` for that job only. A job
whose result file already exists is not run again (resume).
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from mobiledepth.io import write_json_atomic


def _child(fn: Callable[[dict], dict], job: dict) -> None:
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


def run_jobs(fn: Callable[[dict], dict], jobs: list[dict], workers: int = 1, timeout_s: float | None = None,
             on_done: Callable[[dict, dict], None] | None = None) -> list[dict]:
    """Results of ``fn(job)`` for every job (each job needs a ``result_path``), in job order.

    ``workers <= 1`` runs in this process (exceptions still fail only their job); more
    workers run each job in a spawned process. ``fn`` must be importable (module level)."""
    results: list[dict | None] = [None] * len(jobs)
    pending = []
    for index, job in enumerate(jobs):
        previous = _read(Path(job["result_path"]))
        if previous is not None:
            results[index] = _finished(job, {**previous, "reused": True}, on_done)
        else:
            pending.append(index)
    if workers <= 1:
        for index in pending:
            _child(fn, jobs[index])
            result = _read(Path(jobs[index]["result_path"])) or {"ok": False, "error": "no result written"}
            results[index] = _finished(jobs[index], result, on_done)
    else:
        for index, result in _run_in_processes(fn, jobs, pending, workers, timeout_s):
            results[index] = _finished(jobs[index], result, on_done)
    return results  # type: ignore[return-value]


def _run_in_processes(fn: Callable[[dict], dict], jobs: list[dict], pending: list[int], workers: int,
                      timeout_s: float | None):
    """Yield (job index, result) as spawned workers finish, at most ``workers`` alive at once."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    running: dict[int, tuple[Any, float]] = {}
    queue = list(pending)
    while queue or running:
        while queue and len(running) < workers:
            index = queue.pop(0)
            proc = ctx.Process(target=_child, args=(fn, jobs[index]), daemon=True)
            proc.start()
            running[index] = (proc, time.monotonic())
        time.sleep(0.2)
        for index, (proc, started) in list(running.items()):
            timed_out = timeout_s is not None and time.monotonic() - started > timeout_s
            if proc.is_alive() and not timed_out:
                continue
            del running[index]
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
