"""benchmarks/gpu_smoke.sh in its CPU dry run: the script's whole code path (throughput loop, parity,
the project's trainer and eval on the chosen device) runs and reports, so the GPU run is not its first run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_gpu_smoke_dry_run_goes_through_every_part():
    env = {**os.environ, "GPU_SMOKE_DRY_RUN": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_smoke.sh")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "DRY RUN" in done.stderr and "the numbers say nothing about a GPU" in done.stderr
    result = json.loads(done.stdout)
    assert result["settings"]["dry_run"] and result["device"] == "cpu" and result["peak_gpu_memory_gib"] is None
    assert result["loss_fell"] and result["loss_last_pass"] < result["loss_first_pass"]
    assert result["parity_ok"] and result["parity_max_param_diff"] == 0.0 and result["parity_max_param_moved"] > 0
    assert result["trainer_ok"] and result["trainer_device"] == "cpu" and result["trainer_precision"] == "fp32"
    assert result["eval_whdr_device"] == result["eval_whdr_cpu"] and result["images_s"] > 0


def test_gpu_smoke_without_a_gpu_says_so_in_one_line():
    if __import__("torch").cuda.is_available():
        pytest.skip("a GPU is visible here: the no-GPU line cannot be shown")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_smoke.py")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "GPU_SMOKE_DRY_RUN": "0"})
    assert done.returncode == 2 and "no CUDA GPU visible" in done.stderr and "Traceback" not in done.stderr
