"""In-app timing: drive TensorFlow Lite's benchmark APK (SPEC §7b) and read its logcat.

LiteRT's docs call in-app numbers the faithful ones (the scheduler treats apps unlike adb-shell
binaries). The APK is installed, started with ``am start -S -n PACKAGE/.BenchmarkModelActivity
--es args "…"``, and its results read from ``adb logcat -s tflite`` until the summary line, a
failure, or the time limit.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any

from android_bench.errors import BenchUserError, DeviceError, DeviceTimeout
from android_bench.parser import parse_output
from android_bench.tools import CLASSIC, delegate_flags

PACKAGE = "org.tensorflow.lite.benchmark"
ACTIVITY = f"{PACKAGE}/.BenchmarkModelActivity"
POLL_S = 0.2


def check_apk(apk: str | None, delegate: str) -> Path:
    """The file is TensorFlow Lite's benchmark APK (its manifest names the package); else one clear error."""
    if not apk:
        raise BenchUserError("--method apk needs the benchmark APK: pass --benchmark-apk PATH "
                             "(android_aarch64_benchmark_model.apk from the TensorFlow Lite nightly builds)")
    path = Path(apk)
    if not path.is_file():
        raise BenchUserError(f"benchmark APK {path} does not exist; pass the downloaded android_aarch64_benchmark_model.apk")
    if not zipfile.is_zipfile(path) or not _names_benchmark_package(path):
        raise BenchUserError(f"{path.name} is not TensorFlow Lite's benchmark APK (no {PACKAGE} in its manifest); "
                             "pass android_aarch64_benchmark_model.apk")
    delegate_flags(CLASSIC, delegate)  # the APK is the classic tool: no NPU
    return path


def _names_benchmark_package(path: Path) -> bool:
    """Binary AndroidManifest.xml stores its strings as UTF-16LE (or UTF-8 in newer aapt2 builds)."""
    with zipfile.ZipFile(path) as archive:
        if "AndroidManifest.xml" not in archive.namelist():
            return False
        manifest = archive.read("AndroidManifest.xml")
    return PACKAGE.encode("utf-16-le") in manifest or PACKAGE.encode() in manifest


def apk_args(remote_model: str, options) -> str:
    """The one ``--es args`` string of the activity: the classic tool's flags."""
    from android_bench.flags import benchmark_flags

    flags = benchmark_flags(remote_model, options.delegate, options.threads, options.runs, options.warmup,
                            options.profile_ops, peak_memory=False)
    return " ".join(flags)


def run_apk(adb, serial: str, remote_model: str, options) -> dict[str, Any]:
    """Install (if needed), start the activity, and wait for its summary in logcat; the parsed output."""
    adb.install(serial, options.apk)
    adb.logcat(serial, "-c")
    adb.shell(serial, ["am", "start", "-S", "-n", ACTIVITY, "--es", "args", apk_args(remote_model, options)],
              timeout_s=60)
    deadline = time.monotonic() + options.command_timeout_s()
    while True:
        text = adb.logcat(serial, "-d", "-s", "tflite")
        parsed = parse_output(text)
        if parsed["inference_avg_us"] is not None or _finished_badly(parsed, text):
            break
        if time.monotonic() > deadline:
            adb.shell(serial, ["am", "force-stop", PACKAGE], timeout_s=30)
            raise DeviceTimeout(f"the benchmark APK on {serial} printed no summary to logcat within "
                                f"{options.command_timeout_s():.0f} s and was stopped; raise --timeout", serial, "timeout")
        time.sleep(POLL_S)
    if parsed["failed"]:
        raise DeviceError(f"the benchmark APK failed on {serial}: {parsed['error']}", serial, "tool_failed")
    return parsed


def _finished_badly(parsed: dict[str, Any], text: str) -> bool:
    return parsed["failed"] and "no timing results" not in (parsed["error"] or "") or "Benchmarking failed" in text
