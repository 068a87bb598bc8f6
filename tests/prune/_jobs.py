"""Job functions for the worker-pool tests (module level, light imports, so spawned children load fast)."""

import os
import time


def square_or_die(job: dict) -> dict:
    if job.get("sleep"):
        time.sleep(job["sleep"])  # a hung proposal: the pool's timeout must kill it
    if job.get("die"):
        os._exit(3)  # a crash without a result: the pool must fail this job only
    if job.get("raise"):
        raise ValueError("bad proposal")
    return {"value": job["x"] ** 2}
