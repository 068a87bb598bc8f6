"""Converter routes: which are installed, what ``--converter`` means, artifact names, the recommended pick.

Two routes turn the deployed PyTorch module (exact rewrites applied) into TFLite:

- ``onnx2tf``: PyTorch → ONNX → onnx2tf (TensorFlow, in the converter environment) → TFLite;
- ``litert-torch``: PyTorch → TFLite directly (``mobiledepth.export.litert_route``).

With one route its artifacts are ``model_<precision>.tflite``. With several (``all``) each
precision's fastest artifact that meets its parity bar, timed on this machine with the models
interleaved, is ``model_<precision>.tflite`` and marked ``recommended``; the others are
``model_<precision>.<route>.tflite``. Every artifact records its ``route``.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from mobiledepth.errors import UserError

ROUTES = ("onnx2tf", "litert-torch")
CHOICES = (*ROUTES, "all")


def installed_routes() -> list[str]:
    """The routes whose converter is installed (nothing heavy is imported)."""
    from mobiledepth.export import litert_route

    found = []
    try:
        from mobiledepth.converter_env import converter_tool

        converter_tool("onnx2tf")
        found.append("onnx2tf")
    except (UserError, ImportError):
        pass
    if litert_route.installed():
        found.append("litert-torch")
    return found


def resolve_converters(choice: str | None) -> list[str]:
    """``onnx2tf`` / ``litert-torch`` / ``all`` (None: every installed route) → the routes to run."""
    installed = installed_routes()
    if choice is None:
        if not installed:
            raise UserError("no converter is installed (neither onnx2tf nor litert-torch); run scripts/bootstrap.sh "
                            "or pip install 'litert-torch==0.10.*'")
        return installed
    if choice not in CHOICES:
        raise UserError(f"unknown converter '{choice}'; choose from {', '.join(CHOICES)}")
    wanted = list(ROUTES) if choice == "all" else [choice]
    missing = [route for route in wanted if route not in installed]
    if missing:
        fix = ("run scripts/bootstrap.sh (it builds the onnx2tf environment)" if missing[0] == "onnx2tf"
               else "pip install 'litert-torch==0.10.*'")
        raise UserError(f"converter {missing[0]} is not installed; {fix}, or choose "
                        f"--converter {installed[0] if installed else 'litert-torch'}")
    return wanted


def artifact_name(precision: str, route: str | None = None) -> str:
    """``model_fp32.tflite`` (the recommended one, or the only route's) or ``model_fp32.<route>.tflite``."""
    return f"model_{precision}.tflite" if route is None else f"model_{precision}.{route}.tflite"


def time_interleaved(paths: list[Path], image, threads: int = 2, passes: int = 3, block: int = 10) -> list[float]:
    """Median ms of each file on this machine, timed with android_bench's interleaved harness: blocks
    of runs, the order rotating from pass to pass, so that a busy machine slows them all alike."""
    import time

    from android_bench.interleave import CallTimer, Interleaved
    from mobiledepth.export.runtimes import TfliteRuntime

    def loader(path: Path):
        runtime = TfliteRuntime(path, threads=threads)

        def run_once() -> float:
            start = time.perf_counter()
            runtime(image)
            return time.perf_counter() - start

        return CallTimer(run_once)

    harness = Interleaved([lambda path=path: loader(path) for path in paths], block=block, untimed=1,
                          order="rotate", drop_failures=False)
    harness.run(passes)
    return [round(statistics.median(samples) / 1e3, 3) for samples in harness.samples]  # µs -> ms


def choose_recommended(artifacts: list[dict], build: Path, image, threads: int | None = None) -> dict:
    """Mark per precision the fastest TFLite artifact that meets its bar (or has none) as recommended,
    rename the files (see the module doc); returns the timings per precision."""
    threads = threads or min(2, os.cpu_count() or 1)
    choice: dict[str, dict] = {}
    for precision in dict.fromkeys(a["precision"] for a in artifacts if a["format"] == "tflite"):
        group = [a for a in artifacts if a["format"] == "tflite" and a["precision"] == precision]
        usable = [a for a in group if a["parity"]["passed"] is not False] or group
        times = time_interleaved([build / a["path"] for a in usable], image, threads) if len(usable) > 1 else [None]
        best = usable[min(range(len(usable)), key=lambda i: times[i] or 0.0)]
        for art in group:
            art["recommended"] = art is best
        choice[precision] = {"threads": threads, "recommended": best["route"],
                             "median_ms": {a["route"]: t for a, t in zip(usable, times) if t is not None}}
    for art in (a for a in artifacts if a.get("recommended")):  # the route-named file becomes the plain one
        plain = artifact_name(art["precision"])
        os.replace(build / art["path"], build / plain)
        art["path"] = plain
    return choice
