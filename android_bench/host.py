"""The host runner: time a TFLite model on this machine with the TFLite interpreter (XNNPACK).

``ai_edge_litert.interpreter`` is imported lazily, inside ``HostModel``. Its default op
resolver applies the XNNPACK delegate to float models, as benchmark_model does on a phone
with ``--use_xnnpack=true``. Every timed run is kept (``samples_kind: "per_run"``); the
statistics are derived from those samples.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

from android_bench.adb import sha256_of
from android_bench.errors import BenchUserError
from android_bench.flags import check_counts
from android_bench.result import apply_delegation_policy, mark_failed, new_result, stats_from_samples

HOST_DELEGATES = ("cpu",)
HOST_RUNTIMES = {"interpreter": "ai-edge-litert", "compiled_model": "ai-edge-litert:CompiledModel"}  # -> tool


def check_host_delegate(delegate: str) -> None:
    """``host`` runs the CPU (XNNPACK) path only."""
    if delegate not in HOST_DELEGATES:
        raise BenchUserError(
            f"device 'host' does not support delegate '{delegate}'; it supports: {', '.join(HOST_DELEGATES)}"
        )


def check_host_runtime(delegate: str, runtime: str = "interpreter") -> None:
    """Before any work: host runs this delegate, and the runtime exists in the installed ai-edge-litert."""
    check_host_delegate(delegate)
    if runtime not in HOST_RUNTIMES:
        raise BenchUserError(f"unknown host runtime '{runtime}'; choose one of: {', '.join(HOST_RUNTIMES)}")
    if runtime == "compiled_model":
        compiled_model_api()


def compiled_model_api():
    """LiteRT 2.x's ``ai_edge_litert.compiled_model`` with the options API of 2.3+ (feature-detected)."""
    try:
        from ai_edge_litert import compiled_model as api
    except ImportError:
        raise BenchUserError("the CompiledModel host runtime needs ai-edge-litert 2.3 or newer: "
                             "pip install 'ai-edge-litert>=2.3'") from None
    if not hasattr(api, "Options") or not hasattr(api.CompiledModel, "is_fully_accelerated"):
        raise BenchUserError(
            f"the installed ai-edge-litert {litert_version() or '(unknown version)'} has no CompiledModel options "
            "API (threads, accelerators); pip install 'ai-edge-litert>=2.3', or use --host-runtime interpreter"
        )
    return api


def _rss_mb() -> float | None:
    """Current resident set size of this process in MB (Linux /proc), else None."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (ru_maxrss is KB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if platform.system() == "Darwin" else peak / 1024


def _fixed_input(detail: dict[str, Any]):
    """A deterministic non-zero input for one tensor (a ramp over the dtype's useful range)."""
    import numpy as np

    shape = [int(s) for s in detail["shape"]]
    size = int(np.prod(shape)) if shape else 1
    dtype = np.dtype(detail["dtype"])
    ramp = (np.arange(size, dtype=np.float64) % 251 + 1) / 252.0  # in (0, 1), never zero
    if np.issubdtype(dtype, np.floating):
        values = ramp
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low, high = max(info.min, -127), min(info.max, 255)
        values = np.round(low + ramp * (high - low))
        values[values == 0] = 1
    elif dtype == np.bool_:
        values = ramp > 0.5
    else:
        raise BenchUserError(f"input tensor '{detail['name']}' has type {dtype}, which the host runner cannot fill")
    return values.astype(dtype).reshape(shape)


def cpu_name() -> str | None:
    """The host CPU's model name, for the result's ``soc`` field."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def litert_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - the version is informative only
        return None


class HostModel:
    """A TFLite model loaded in the interpreter with a fixed non-zero input, ready to time."""

    def __init__(self, model_path: str | os.PathLike, threads: int = 1):
        path = Path(model_path)
        if not path.is_file():
            raise BenchUserError(f"model {path} does not exist; pass a .tflite file")
        if threads < 1:
            raise BenchUserError(f"threads must be at least 1 (got {threads})")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise BenchUserError("the host runner needs ai-edge-litert: pip install ai-edge-litert") from exc
        self.path = path
        self.threads = threads
        rss_before = _rss_mb()
        start = time.perf_counter_ns()
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BenchUserError(f"{path.name} is not a loadable TFLite model ({str(exc).splitlines()[0]}); re-export it") from exc
        for detail in self.interpreter.get_input_details():
            self.interpreter.set_tensor(detail["index"], _fixed_input(detail))
        self.init_us = (time.perf_counter_ns() - start) / 1000.0
        rss_after = _rss_mb()
        self.rss_before_mb = rss_before
        self.init_mb = rss_after - rss_before if rss_before is not None and rss_after is not None else None

    def delegation(self) -> dict[str, Any]:
        """Whether XNNPACK took the graph, from the interpreter's node list.

        Delegate kernels appear as extra ``DELEGATE`` nodes after the model's own nodes. One
        kernel that produces every graph output from the graph inputs is full delegation;
        several kernels are partial (how many nodes each covers is not exposed, so
        ``delegated_nodes`` is only filled when the delegation is full).
        """
        try:
            ops = self.interpreter._get_ops_details()
        except Exception:  # noqa: BLE001 - a private API; without it the answer is unknown
            return {"status": None, "delegated_nodes": None, "total_nodes": None, "kernels": None}
        kernels = [op for op in ops if op["op_name"] == "DELEGATE"]
        total = len(ops) - len(kernels)
        if not kernels:
            return {"status": "none", "delegated_nodes": 0, "total_nodes": total, "kernels": 0}
        outputs = {int(d["index"]) for d in self.interpreter.get_output_details()}
        inputs = {int(d["index"]) for d in self.interpreter.get_input_details()}
        only = kernels[0]
        full = len(kernels) == 1 and set(int(i) for i in only["outputs"]) >= outputs and inputs <= set(
            int(i) for i in only["inputs"]
        )
        return {
            "status": "full" if full else "partial",
            "delegated_nodes": total if full else None,
            "total_nodes": total,
            "kernels": len(kernels),
        }

    def time_once(self) -> float:
        """Microseconds of one ``invoke()`` on the fixed input."""
        start = time.perf_counter_ns()
        self.interpreter.invoke()
        return (time.perf_counter_ns() - start) / 1000.0


class CompiledHostModel:
    """The same model through LiteRT 2.x's CompiledModel on the CPU accelerator (what current phones run)."""

    def __init__(self, model_path: str | os.PathLike, threads: int = 1):
        api = compiled_model_api()
        self.path = Path(model_path)
        self.rss_before_mb = _rss_mb()
        start = time.perf_counter_ns()
        try:
            options = api.Options(hardware_accelerators=api.HardwareAccelerator.CPU,
                                  cpu_options=api.CpuOptions(num_threads=threads))
            self.model = api.CompiledModel.from_file(str(self.path), options=options)
        except (ValueError, RuntimeError) as exc:
            raise BenchUserError(f"{self.path.name} is not a loadable LiteRT model ({str(exc).splitlines()[0]}); re-export it") from exc
        self.signature = next(iter(self.model.get_signature_list()), "serving_default")
        self.inputs = self._buffers(self.model.get_input_tensor_details(self.signature), True)
        self.outputs = self._buffers(self.model.get_output_tensor_details(self.signature), False)
        self.init_us = (time.perf_counter_ns() - start) / 1000.0
        rss_after = _rss_mb()
        self.init_mb = rss_after - self.rss_before_mb if self.rss_before_mb is not None and rss_after is not None else None

    def _buffers(self, details: dict[str, dict[str, Any]], fill: bool) -> dict[str, Any]:
        make = self.model.create_input_buffer_by_name if fill else self.model.create_output_buffer_by_name
        buffers = {}
        for name, detail in details.items():
            buffers[name] = make(self.signature, name)
            if fill:
                buffers[name].write(_fixed_input({**detail, "name": name}))
        return buffers

    def delegation(self) -> dict[str, Any]:
        """Full or partial, from the CompiledModel's own ``is_fully_accelerated()``."""
        full = bool(self.model.is_fully_accelerated())
        return {"status": "full" if full else "partial", "delegated_nodes": None, "total_nodes": None,
                "kernels": None, "fully_accelerated": full}

    def time_once(self) -> float:
        """Microseconds of one ``run_by_name`` on the fixed input."""
        start = time.perf_counter_ns()
        self.model.run_by_name(self.signature, self.inputs, self.outputs)
        return (time.perf_counter_ns() - start) / 1000.0


def run_host(
    model_path: str | os.PathLike,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    require_full_delegation: bool = False,
    runtime: str = "interpreter",
) -> dict[str, Any]:
    """Benchmark a TFLite model on this machine (Interpreter or CompiledModel); a BenchResult, every run kept."""
    check_host_runtime("cpu", runtime)
    check_counts(threads, runs, warmup)
    started = time.monotonic()
    path = Path(model_path)
    if not path.is_file():
        raise BenchUserError(f"model {path} does not exist; pass a .tflite file")
    result = new_result(
        artifact_sha256=sha256_of(path),
        model_path=str(path),
        device={"profile": "host", "serial": None, "model_code": platform.machine() or None, "soc": cpu_name(), "android": None},
        delegate="cpu",
        threads=threads,
        tool=HOST_RUNTIMES[runtime],
        tool_version=litert_version(),
        runs=runs,
        warmup=warmup,
        samples_kind="per_run",
    )
    model = CompiledHostModel(path, threads) if runtime == "compiled_model" else HostModel(path, threads)
    result["delegation"].update(model.delegation())
    try:
        warm = [model.time_once() for _ in range(warmup)]
        samples = [model.time_once() for _ in range(runs)]
    except RuntimeError as exc:
        mark_failed(result, f"invoke() failed on {path.name}: {str(exc).splitlines()[0]}")
        result["duration_s"] = round(time.monotonic() - started, 3)
        return result
    rss_end = _rss_mb()
    result.update(
        samples_us=samples,
        stats=stats_from_samples(samples),
        init_us=model.init_us,
        first_inference_us=warm[0] if warm else samples[0],
        warmup_avg_us=sum(warm) / len(warm) if warm else None,
        memory={
            "init_mb": model.init_mb,
            "overall_mb": rss_end - model.rss_before_mb if rss_end is not None and model.rss_before_mb is not None else None,
            "peak_mb": _peak_rss_mb(),
        },
    )
    apply_delegation_policy(result, require_full_delegation)
    result["duration_s"] = round(time.monotonic() - started, 3)
    return result
