"""android_bench stays standalone: no torch, tensorflow or mobiledepth in the process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import android_bench, android_bench.cli, android_bench.runner, android_bench.adb, android_bench.parser
import android_bench.profiles, android_bench.flags, android_bench.host, android_bench.result
from android_bench.profiles import load_profiles
load_profiles(env={})
from android_bench.parser import parse_output
parse_output("count=3 curr=1")
if len(sys.argv) > 1:
    from android_bench.host import run_host
    run_host(sys.argv[1], runs=2, warmup=1)
banned = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorflow", "mobiledepth", "keras", "tf_keras"))
print(json.dumps(banned))
"""


def _banned_modules(*args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_android_bench_pulls_no_heavy_or_parent_package():
    assert _banned_modules() == []


def test_host_run_uses_litert_without_tensorflow(tiny_tflite):
    assert _banned_modules(str(tiny_tflite)) == []
