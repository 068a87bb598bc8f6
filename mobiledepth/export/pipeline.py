"""`mobiledepth export`: strip heads → ONNX → TFLite (fp32/fp16/int8/int16x8), parity at every stage.

Everything is built in a hidden directory beside the run directory (its name holds the pid of
the run, so the next run sweeps the leftovers of a dead one) and renamed into place only when
every artifact meets its parity bar; a failed export is moved to ``<out>.failed/`` with a record
naming the error and the converter logs (only the logs after a full disk or Ctrl-C), never left
where a good one would be.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from mobiledepth.errors import StageFailed, UserError
from mobiledepth.io import (apply_umask, atomic_path, check_writable, sha256_file, write_json_atomic,
                            write_text_atomic)
from mobiledepth.progress import Progress, ProgressFn, silent
from mobiledepth.records import new_record

PRECISIONS = ("fp32", "fp16", "int8", "int16x8")
DEFAULT_PRECISIONS = ("fp32", "fp16")
ARTIFACT_NAMES = {"onnx": "model.onnx", "fp32": "model_fp32.tflite", "fp16": "model_fp16.tflite",
                  "int8": "model_int8.tflite", "int16x8": "model_int16x8.tflite"}


@dataclass
class ExportResult:
    run_dir: Path
    record: dict
    warnings: list[str] = field(default_factory=list)
    stored: Path | None = None  # the store the record went into (None: not recorded)

    @property
    def artifacts(self) -> list[dict]:
        return self.record["artifacts"]


def parse_precisions(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """'fp32,fp16' -> ['fp32', 'fp16']; an unknown precision names the closest valid one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    chosen = []
    for item in (i.strip().lower() for i in items if i.strip()):
        if item not in PRECISIONS:
            close = difflib.get_close_matches(item, PRECISIONS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UserError(f"unknown precision '{item}': {hint}choose from {', '.join(PRECISIONS)}")
        if item not in chosen:
            chosen.append(item)
    if not chosen:
        raise UserError(f"no precision given; choose from {', '.join(PRECISIONS)}")
    return chosen


def default_run_dir(model_name: str, input_size: tuple[int, int]) -> Path:
    """runs/<model>-<H>x<W> (a factory ref's ':' and '.' become '-')."""
    safe = re.sub(r"[^A-Za-z0-9_.+-]+", "-", model_name).strip("-")
    return Path("runs") / f"{safe}-{input_size[0]}x{input_size[1]}"


def converter_versions() -> dict[str, str | None]:
    """Versions of everything that touched the artifacts (read without importing them)."""
    versions = {}
    for dist in ("mobiledepth", "torch", "onnx", "onnxruntime", "onnxscript", "onnx2tf", "tensorflow", "ai-edge-litert",
                 "litert-torch", "ai-edge-quantizer"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    from mobiledepth.converter_env import converter_versions as in_converter_env

    return {**versions, **{k: v for k, v in in_converter_env().items() if v or k not in versions}}


def check_out_dir(out: Path) -> None:
    """Before any work: ``out`` (and its folder) can be written, else a one-line UserError."""
    check_writable(out, "--out", folder=True)
    if out.exists():  # it is replaced by a rename in its parent folder
        check_writable(out.parent, "--out's folder", folder=True)


def _owned_name(out: Path) -> re.Pattern:
    """Hidden folders a run of ``out`` makes beside it, with the pid of the run that owns them."""
    return re.compile(rf"^\.{re.escape(out.name)}\.(?:build-(?P<build>\d+)-.*\.tmp|old-(?P<old>\d+))$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale_builds(out: Path) -> list[Path]:
    """Remove the hidden build folders beside ``out`` whose run is dead (killed, power cut); a
    previous good export a dead run had moved aside (``.<name>.old-<pid>``) is put back instead
    when ``out`` is missing. Folders of live runs are left alone. Returns what was removed."""
    pattern, removed = _owned_name(out), []
    if not out.parent.is_dir():
        return removed
    for path in sorted(out.parent.iterdir()):
        match = pattern.match(path.name)
        if not match or _pid_alive(int(match["build"] or match["old"])):
            continue
        if match["old"] and not os.path.lexists(out):
            os.replace(path, out)
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _prepare_out(out: Path) -> Path:
    """Check the run directory can be written, sweep dead runs' leftovers; return a fresh build directory."""
    check_out_dir(out)
    sweep_stale_builds(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-{os.getpid()}-", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise UserError(f"cannot write to {out.parent} ({exc.strerror}); choose another --out") from None
    apply_umask(build)  # mkdtemp makes 0700; the run directory follows the user's umask
    return build.resolve()


def _replace_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        trash = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, trash)
        os.replace(src, dst)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(src, dst)


def _tflite_io(path: Path) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    ops: dict[str, int] = {}
    for op in interpreter._get_ops_details():
        ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
    return {"input_shape": [int(v) for v in inp["shape"]], "output_shape": [int(v) for v in outp["shape"]],
            "input_dtype": str(inp["dtype"].__name__), "output_dtype": str(outp["dtype"].__name__),
            "input_quantization": list(inp["quantization"]), "output_quantization": list(outp["quantization"]),
            "layout": "NHWC" if inp["shape"][-1] == 3 else "NCHW", "ops": ops}


class _Stages:
    """Times each stage, reports it through ``notify`` and remembers the stage that failed."""

    def __init__(self, notify: ProgressFn):
        self.notify = notify
        self.timings: dict[str, float] = {}
        self.failed: str | None = None

    @contextlib.contextmanager
    def __call__(self, name: str, detail: str = ""):
        t0 = time.perf_counter()
        self.notify(Progress(name, "start", detail=detail))
        try:
            yield
        except BaseException as exc:
            self.timings[name] = round(time.perf_counter() - t0, 3)
            self.failed = name
            if not isinstance(exc, UserError):  # a user's mistake gets its one line, not a stage trace
                self.notify(Progress(name, "failed", seconds=self.timings[name], detail=detail))
            raise
        self.timings[name] = round(time.perf_counter() - t0, 3)
        self.notify(Progress(name, "done", seconds=self.timings[name], detail=detail))


def export_model(model: str | None = None, checkpoint: str | os.PathLike | None = None,
                 input_size: tuple[int, int] | None = None,
                 precisions: str | list[str] | tuple[str, ...] = DEFAULT_PRECISIONS,
                 calibration_data: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                 parity_images: int = 4, calibration_images_count: int = 64,
                 progress: ProgressFn | None = None, rewrites: bool = True, seed: int = 0,
                 store=False, converter: str | None = None, eval_data: str | os.PathLike | None = None) -> ExportResult:
    """Export a model to ONNX and TFLite with parity proven against PyTorch; returns the record.

    ``rewrites``: apply the exact speed rewrites of ``mobiledepth.export.rewrites`` to the graph
    (parity is always measured against the unrewritten model). ``seed``: the random weights'
    seed when there is no checkpoint (the same seed, the same artifacts). ``store``: where the
    record goes (a path, None for the default store, False for nowhere; checked before any work).
    ``eval_data``: held-out DIW-format data (a root with a test split, or a CSV) for the int8 WHDR bar; without
    it a QAT checkpoint's own held-out split is used, and post-training int8 leaves that bar unmeasured."""
    from mobiledepth.sizes import check_input_size
    from mobiledepth.export.routes import resolve_converters
    from mobiledepth.export.source import load_model_source
    from mobiledepth.store import check_store_choice, record_in_store

    chosen = parse_precisions(precisions)
    routes = resolve_converters(converter)
    stages = _Stages(progress or silent)
    warnings: list[str] = []
    started = time.perf_counter()
    if out is not None:
        check_out_dir(Path(out))  # before the model is even built
    check_store_choice(store)
    with stages("load", "build the model, load weights, strip heads"):
        asked = check_input_size(*input_size) if input_size else None
        source = load_model_source(model, checkpoint, seed=seed, input_size=asked)
        size = asked or source.default_input_size
    run_dir = Path(out) if out else default_run_dir(source.name, size)
    if calibration_data is not None:
        from mobiledepth.export.calibration import find_images

        find_images(calibration_data)  # fail before any work when the folder has no images
    if eval_data is not None and not Path(eval_data).exists():
        raise UserError(f"--eval-data {eval_data} does not exist; pass a DIW-format dataset (a folder with a test "
                        "split, or its CSV) for the int8 WHDR bar")
    build = _prepare_out(run_dir)
    try:
        record = _build(source, size, chosen, calibration_data, build, parity_images,
                        calibration_images_count, stages, warnings, rewrites, routes, eval_data)
        record["timings_s"] = {**stages.timings, "total": round(time.perf_counter() - started, 3)}
        record["warnings"] = warnings
        write_json_atomic(build / "export.json", record)
    except BaseException as exc:
        summary = {**_record_head(source, size), "precisions": chosen, "converters": routes, "failed_stage": stages.failed,
                   "timings_s": stages.timings, "warnings": warnings}
        instead = _fail_build(build, run_dir, exc, summary)
        if instead is None:
            raise
        raise instead from None
    _replace_dir(build, run_dir)
    shutil.rmtree(_failed_dir(run_dir), ignore_errors=True)  # an earlier failure of this --out is history now
    stored = record_in_store(record, store, base_dir=run_dir)
    return ExportResult(run_dir=run_dir, record=record, warnings=warnings, stored=stored)


def _record_head(source, size: tuple[int, int]) -> dict:
    """The first fields of every export record, a failed one included."""
    return new_record("export", model={"name": source.name, "source": source.kind, "spec_hash": source.spec_hash,
                                       "checkpoint": source.checkpoint, "checkpoint_sha256": source.checkpoint_sha256},
                      random_weights=source.checkpoint is None, seed=source.seed, input_size=list(size))


def _failed_dir(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + ".failed")


def _disk_full(exc: BaseException | None, where: Path) -> bool:
    """The error, or one that caused it, is a full disk or an exhausted quota (a short write
    with no errno, as numpy raises, counts when ``where`` has less than 1 MiB free)."""
    from mobiledepth.export.tflite import LOW_SPACE_BYTES

    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, OSError) and exc.errno is None and shutil.disk_usage(where).free < LOW_SPACE_BYTES:
            return True
        if any(text in str(exc) for text in ("No space left on device", "Disk quota exceeded")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _fail_build(build: Path, run_dir: Path, exc: BaseException, summary: dict) -> BaseException | None:
    """Move a failed build to ``<out>.failed/`` with an export.json naming the error; after a full
    disk or Ctrl-C only the logs are kept (no half-written artifacts). Returns the error to raise
    instead of ``exc`` (None: re-raise ``exc``)."""
    full = _disk_full(exc, build)
    if isinstance(exc, UserError) and not full:  # the one line says it all; nothing to inspect
        shutil.rmtree(build, ignore_errors=True)
        return None
    interrupted = isinstance(exc, KeyboardInterrupt)
    if full or interrupted:
        _keep_only_logs(build)
    error = "interrupted" if interrupted else ("no space left on device" if full else str(exc) or type(exc).__name__)
    if not _write_failure_record(build, summary, error):  # no room even for the record: free some
        _keep_only_logs(build)
        _write_failure_record(build, summary, error)
    failed = _failed_dir(run_dir)
    shutil.rmtree(failed, ignore_errors=True)
    os.replace(build, failed)
    if full:
        return UserError(f"no space left on device for {run_dir} ({shutil.disk_usage(failed).free // 1024} KiB free); "
                         f"the partial build was removed (error recorded in {failed}/export.json) — free space "
                         "or choose another --out")
    if isinstance(exc, StageFailed):
        return StageFailed(f"{exc}; the artifacts and logs are in {failed}/")
    return None


def _write_failure_record(build: Path, summary: dict, error: str) -> bool:
    """export.json of a failed build: the full record where one was written (parity), else the
    summary; False when it could not be written (a disk still full)."""
    path = build / "export.json"
    try:
        record = json.loads(path.read_text()) if path.exists() else summary
        record.update(failed=True, error=error, failed_stage=summary["failed_stage"])
        write_json_atomic(path, record)
    except (OSError, ValueError):
        return False
    return True


def _collect_logs(build: Path) -> None:
    """Keep the converter logs at the top of the build directory, drop its intermediate files."""
    for log in (build / "convert").glob("*.log"):
        shutil.move(str(log), build / log.name)
    shutil.rmtree(build / "convert", ignore_errors=True)


def _keep_only_logs(build: Path) -> None:
    """Remove everything but the logs: what a full disk or an interrupt left may be truncated."""
    _collect_logs(build)
    for path in build.iterdir():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.suffix != ".log":
            path.unlink(missing_ok=True)


def _build(source, size, chosen, calibration_data, build: Path, parity_images: int,
           calibration_count: int, stage, warnings: list[str], rewrites: bool, routes: list[str],
           eval_data=None) -> dict:
    import yaml

    from mobiledepth.export.rewrites import phase_split_upsampling
    from mobiledepth.export.routes import choose_recommended

    qat = _qat_program(source, size, chosen, routes, rewrites)
    # post-training quantisation needs calibration images; a QAT checkpoint's int8 ranges come from its training
    ptq = [p for p in chosen if p == "int16x8" or (p == "int8" and qat is None)]
    with stage("inputs", "parity and calibration images"):
        images, image_source, parity_set, deployed, reference = _inputs(
            source, size, chosen, calibration_data, parity_images, calibration_count, warnings, bool(ptq))
    if qat is not None and not ptq:
        image_source = "none: the int8 quantisation ranges were trained ('train --qat')"
    graph, phase_split = phase_split_upsampling(deployed) if rewrites else (deployed, 0)
    made = _Artifacts(build, reference, parity_set)
    made.qat = qat
    route_status = _run_routes(routes, graph, size, chosen, images, image_source, made, stage, warnings)
    _fp16_rule(made.artifacts, source, deployed, size, parity_set, reference)
    config = {"model": source.name, "source": source.kind, "checkpoint": source.checkpoint, "seed": source.seed,
              "input_size": list(size), "precisions": chosen, "converters": routes, "calibration": image_source,
              "parity_images": len(parity_set), "spec": source.spec}
    write_text_atomic(build / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    from mobiledepth.arch.stats import count_parameters, count_macs

    record = _record_head(source, size)
    record["model"].update(params=count_parameters(source.model), macs=count_macs(deployed, size))
    record.update({
        "input_range": "RGB float32 in [0, 1] (ImageNet normalisation is inside the model)",
        "calibration": image_source, "artifacts": made.artifacts, "versions": converter_versions(),
        "graph_rewrites": {"phase_split_upsampling": phase_split},
        "converters": route_status,
    })
    if made.qat is not None:
        record["qat"] = made.qat[0]
    _check_parity(record, source, build, warnings)
    before = [a["path"] for a in record["artifacts"]]
    with stage("choose", "time the routes' artifacts on this machine, pick the fastest per precision"):
        record["recommended"] = choose_recommended(record["artifacts"], build, parity_set[:1])
    for old, art in zip(before, record["artifacts"]):  # warnings name the files as published
        warnings[:] = [w.replace(f"{old}:", f"{art['path']}:") for w in warnings]
    if "int8" in chosen:
        with stage("int8-bars", "int8 against its bars: order, host latency vs fp32, WHDR on held-out data"):
            record["int8_bars"] = _int8_bars(record, build, parity_set, made.qat, warnings, eval_data)
    _collect_logs(build)
    return record


def _qat_program(source, size, chosen, routes: list[str], rewrites: bool) -> tuple[dict, bytes] | None:
    """A QAT checkpoint's block and quantised program when int8 is asked for (None otherwise); the program
    is fixed at the size and graph it was fine-tuned on, and converts through litert-torch only."""
    from mobiledepth.arch.checkpoint import read_checkpoint, read_qat

    if source.checkpoint is None or "int8" not in chosen:
        return None
    found = read_qat(read_checkpoint(source.checkpoint), source.checkpoint)
    if found is None:
        return None
    qat = found[0]
    if list(size) != list(qat["input_size"]):
        raise UserError(f"checkpoint {source.checkpoint} was fine-tuned for int8 at {qat['input_size'][0]}x"
                        f"{qat['input_size'][1]}; export it at that size (--input-size) or run 'train --qat' again")
    if "litert-torch" not in routes:
        raise UserError(f"the int8 program of QAT checkpoint {source.checkpoint} converts with litert-torch; "
                        "pass --converter litert-torch (or all)")
    if not rewrites and qat.get("rewrites") != "none":
        raise UserError("--no-rewrites: the QAT program was fine-tuned on the rewritten graph; drop --no-rewrites")
    return found


def _int8_bars(record: dict, build: Path, parity_set, qat, warnings: list[str], eval_data=None) -> dict:
    """The recommended int8 artifact against its bars (mobiledepth.export.parity.INT8_BARS): ordinal agreement,
    int8/fp32 host latency (interleaved, same rounds) and WHDR on held-out data (``--eval-data``, else the data a
    QAT checkpoint was validated on)."""
    from mobiledepth.export.parity import INT8_LATENCY_THREADS, int8_bar_warnings, int8_bars, integer_warning
    from mobiledepth.export.routes import time_interleaved

    pick = {a["precision"]: a for a in record["artifacts"] if a["format"] == "tflite" and a.get("recommended", True)}
    int8, fp32 = pick["int8"], pick.get("fp32")
    ratio = whdr_fp32 = whdr_int8 = None
    if fp32 is not None:
        fp32_ms, int8_ms = time_interleaved([build / fp32["path"], build / int8["path"]], parity_set[:1],
                                            threads=INT8_LATENCY_THREADS, passes=7)
        ratio = int8_ms / fp32_ms
    held_out = (str(eval_data), "test") if eval_data is not None else (
        (qat[0]["data_path"], qat[0]["val_split"]) if qat is not None and Path(qat[0]["data_path"]).exists() else None)
    if held_out is not None and fp32 is not None:
        whdr_fp32, whdr_int8 = (_child_whdr(build / a["path"], *held_out, build) for a in (fp32, int8))
    bars = int8_bars(int8["parity"]["ordinal_agreement"], ratio, whdr_fp32, whdr_int8)
    warnings.extend(int8_bar_warnings(int8["path"], bars))
    for art in (a for a in record["artifacts"] if "integer_ops" in a):
        warnings.extend(filter(None, [integer_warning(art["path"], art["integer_ops"])]))
    return {"artifact": int8["path"], "latency_threads": INT8_LATENCY_THREADS, **bars}


def _child_whdr(path: Path, data: str, split: str, build: Path) -> float:
    """WHDR of a TFLite file on a DIW-format split, by ``mobiledepth eval`` in a guarded child (export does not
    import the evaluate stage)."""
    import sys

    from mobiledepth.child import run_child

    out = build / "convert" / f"eval-{path.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mobiledepth", "eval", "--model", str(path), "--data", data, "--split", split,
               "--limit", "500", "--no-store", "--json", "--out", str(out)]
    code = run_child(command, build / "convert" / f"eval-{path.stem}.log", 1800, "mobiledepth eval")
    if code != 0 or not out.exists():
        raise StageFailed(f"mobiledepth eval of {path.name} on {data} failed (exit {code}); see eval-{path.stem}.log")
    return float(json.loads(out.read_text())["value"])


class _Artifacts:
    """The artifacts of a build, each with its parity against PyTorch measured the same way."""

    def __init__(self, build: Path, reference, parity_set):
        self.build, self.reference, self.parity_set = build, reference, parity_set
        self.artifacts: list[dict] = []
        self.qat: tuple[dict, bytes] | None = None  # a QAT checkpoint's block and int8 program

    def add(self, path: Path, fmt: str, precision: str, parity: dict, io: dict, route: str) -> dict:
        self.artifacts.append({"path": path.name, "format": fmt, "precision": precision, "route": route,
                               "layout": io["layout"], "input_shape": io["input_shape"],
                               "output_shape": io["output_shape"], "size_bytes": path.stat().st_size,
                               "sha256": sha256_file(path), "parity": parity,
                               **{k: v for k, v in io.items() if k not in ("layout", "input_shape", "output_shape")}})
        return self.artifacts[-1]

    def add_tflite(self, produced: Path, precision: str, route: str) -> None:
        """Copy a converter's file in under its route's name, apply the graph passes, measure parity."""
        from mobiledepth.export.parity import measure_parity
        from mobiledepth.export.routes import artifact_name
        from mobiledepth.export.runtimes import TfliteRuntime

        path = self.build / artifact_name(precision, route)
        shutil.copyfile(produced, path)
        passes = _finish_tflite(path)
        parity = measure_parity(self.reference, TfliteRuntime(path)(self.parity_set), precision)
        art = self.add(path, "tflite", precision, parity, _tflite_io(path), route)
        art["graph_passes"] = passes
        if precision == "int8":  # which ops stay float between QUANTIZE / DEQUANTIZE (issue 16)
            from mobiledepth.export.tflite_passes import float_ops

            art["integer_ops"] = float_ops(path.read_bytes())


def _run_routes(routes, graph, size, chosen, images, image_source, made: _Artifacts, stage,
                warnings: list[str]) -> dict:
    """Run every chosen converter route; with several, one that fails is a warning as long as
    another delivers. Returns each route's status."""
    status: dict[str, dict] = {}
    for route in routes:
        try:
            status[route] = _ROUTE_RUNNERS[route](graph, size, chosen, images, image_source, made, stage)
        except (StageFailed, UserError) as exc:
            if len(routes) == 1:
                raise
            status[route] = {"status": "failed", "error": str(exc)}
            warnings.append(f"converter {route} failed ({exc}); its artifacts are not in this export")
    if not any(s["status"] == "ok" for s in status.values()):
        raise StageFailed("no converter route delivered: " + "; ".join(f"{r}: {s['error']}" for r, s in status.items()))
    return status


def _onnx2tf_route(graph, size, chosen, images, image_source, made: _Artifacts, stage) -> dict:
    """PyTorch → ONNX (parity checked) → onnx2tf fp32 + fp16 → TensorFlow's quantiser for int8 / int16x8."""
    from mobiledepth.export.onnx_export import export_onnx_any
    from mobiledepth.export.parity import measure_parity
    from mobiledepth.export.runtimes import OnnxRuntime
    from mobiledepth.export.tflite import convert_with_onnx2tf, quantize

    with stage("onnx", "torch.onnx.export (opset 17) + onnx.checker + ONNX Runtime parity"):
        onnx = export_onnx_any(graph, size, made.build / ARTIFACT_NAMES["onnx"])
        onnx_out = OnnxRuntime(onnx.path)(made.parity_set)
        art = made.add(onnx.path, "onnx", "fp32", measure_parity(made.reference, onnx_out, "fp32"),
                       {"layout": "NCHW", "input_shape": [1, 3, *size], "output_shape": [1, *onnx_out.shape[1:]]},
                       "torch.onnx")
        art["exporter"] = onnx.exporter
    with stage("tflite", "onnx2tf → fp32 + fp16"):  # the stage name scripts and the fault tests know
        produced = convert_with_onnx2tf(onnx.path, made.build / "convert", images)
        for precision in (p for p in ("fp32", "fp16") if p in chosen):
            made.add_tflite(produced[precision], precision, "onnx2tf")
    for precision in (p for p in chosen if p in ("int8", "int16x8") and not (p == "int8" and made.qat)):
        with stage(precision, f"post-training quantisation ({precision}), calibrated on {image_source}"):
            out = made.build / "convert" / f"onnx2tf_{precision}.tflite"
            made.add_tflite(quantize(produced["saved_model"], images, precision, out), precision, "onnx2tf")
    return {"status": "ok", "onnx_exporter": onnx.exporter, "refused_op": onnx.refused_op}


def _litert_torch_route(graph, size, chosen, images, image_source, made: _Artifacts, stage) -> dict:
    """PyTorch → TFLite directly (NHWC I/O), fp16 / int8 / int16x8 derived with ai-edge-quantizer."""
    from mobiledepth.export.litert_route import convert_with_litert_torch

    with stage("litert-torch", f"litert-torch → {', '.join(chosen)}"):
        produced = convert_with_litert_torch(graph, size, made.build / "convert", chosen, images,
                                             qat_program=made.qat[1] if made.qat else None)
        for precision in chosen:
            made.add_tflite(produced[precision], precision, "litert-torch")
    return {"status": "ok"}


_ROUTE_RUNNERS = {"onnx2tf": _onnx2tf_route, "litert-torch": _litert_torch_route}


def _inputs(source, size, chosen, calibration_data, parity_images: int, calibration_count: int,
            warnings: list[str], quantised: bool):
    """Images (calibration + parity), the deployed module and its PyTorch output on the parity images."""
    import numpy as np

    from mobiledepth.export.calibration import calibration_images, generated_images
    from mobiledepth.export.runtimes import TorchRuntime
    from mobiledepth.export.source import deploy_module

    if source.checkpoint is None:
        warnings.append(f"no --checkpoint: exporting random weights (seed {source.seed}; BatchNorm statistics "
                        "calibrated on generated scenes) — fine for latency, meaningless for accuracy")
        if source.kind != "factory":
            from mobiledepth.arch.init import calibrate_batchnorm
            import torch

            calibrate_batchnorm(source.model, torch.from_numpy(generated_images(8, size, seed=99)))
            source.model.eval()
    count = max(parity_images, calibration_count if quantised else parity_images)
    images, image_source = calibration_images(calibration_data, count, size)
    if calibration_data is None and quantised:
        warnings.append("int8 calibrated on generated scenes; pass --calibration-data DIR with real photos "
                        "from your deployment for a faithful quantisation")
    parity_set = images[np.linspace(0, len(images) - 1, min(parity_images, len(images))).round().astype(int)]
    deployed = deploy_module(source.model)
    return images, image_source, parity_set, deployed, TorchRuntime(deployed, size)(parity_set)


def _finish_tflite(path: Path) -> dict:
    """Apply the graph passes in place; returns what they did."""
    from mobiledepth.export.tflite_passes import fold_transposed_concats

    data, folded = fold_transposed_concats(path.read_bytes())
    if folded:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return {"fold_transposed_concats": folded}


def _fp16_rule(artifacts: list[dict], source, deployed, size, parity_set, reference) -> None:
    """The fp16 artifacts' verdicts (``mobiledepth.export.parity.fp16_verdict``): a checkpoint's against its own
    noise floor, measured once on the parity images; random weights' against the fixed bar."""
    from mobiledepth.export.parity import PARITY_BARS, fp16_verdict, input_noise_response
    from mobiledepth.export.runtimes import TorchRuntime

    fp16 = [art for art in artifacts if art["precision"] == "fp16"]
    if not fp16:
        return
    grey_levels = PARITY_BARS["fp16"].get("noise_grey_levels")
    floor = (input_noise_response(TorchRuntime(deployed, size), parity_set, reference, grey_levels)
             if source.checkpoint is not None and grey_levels else None)
    for art in fp16:
        art["parity"].update(fp16_verdict(art["parity"], floor))


def _check_parity(record: dict, source, build: Path, warnings: list[str]) -> None:
    """Fail the export on a broken bar (writing the failed record first); warn on what is only reported.
    With several routes, an artifact that breaks its bar while another route's passes is dropped."""
    from mobiledepth.export.parity import parity_warning

    artifacts, broken = record["artifacts"], []
    for art in artifacts:
        if art["parity"]["passed"] is None:
            note = parity_warning(art["precision"], art["parity"])
            if note:
                warnings.append(f"{art['path']}: {note}")
        elif art["parity"]["passed"] is False and art["precision"] == "fp16" and source.checkpoint is None:
            art["parity"]["enforced"] = False
            # Untrained weights are ill-conditioned: rounding them to fp16 moves the output far more
            # than it moves a trained model's. The fp32 artifact already proves the converter.
            warnings.append(f"{art['path']}: fp16 weights move these random weights' output by "
                            f"{art['parity']['max_abs_err_rel']:.1e} of its range (ordinal agreement "
                            f"{art['parity']['ordinal_agreement']:.4f}); with --checkpoint this fails the export")
        elif art["parity"]["passed"] is False:
            broken.append(art)
    broken = [art for art in broken if not _drop_if_replaced(record, art, build, warnings)]
    if broken:
        write_json_atomic(build / "export.json", {**record, "failed": True})
        worst = broken[0]
        raise StageFailed(
            f"{worst['path']} breaks parity with PyTorch (max error {worst['parity']['max_abs_err_rel']:.2e} of the output "
            f"range, ordinal agreement {worst['parity']['ordinal_agreement']:.4f}; "
            f"bar {worst['parity'].get('limit', worst['parity']['bar'])}{_rule_words(worst['parity'])}); "
            "nothing was published" + _retry_hint(artifacts, broken))


def _rule_words(parity: dict) -> str:
    """', relative to the model's noise floor' for a bar that follows the ``noise_floor`` rule."""
    if parity.get("rule") != "noise_floor":
        return ""
    return (f", relative to the model's own noise floor: ±{parity['noise_floor']['grey_levels']}/255 input noise moves "
            f"it {parity['noise_floor']['max_abs_err_rel']:.2e}")


def _drop_if_replaced(record: dict, art: dict, build: Path, warnings: list[str]) -> bool:
    """A TFLite artifact below its bar is dropped (file removed, listed under ``rejected_artifacts``)
    when another route's artifact of the same precision meets it; True when dropped."""
    others = [a for a in record["artifacts"] if a is not art and a["format"] == "tflite"
              and a["precision"] == art["precision"] and a["parity"]["passed"] is not False]
    if art["format"] != "tflite" or not others:
        return False
    record["artifacts"].remove(art)
    record.setdefault("rejected_artifacts", []).append(art)
    (build / art["path"]).unlink(missing_ok=True)
    warnings.append(f"{art['path']} ({art['route']}) breaks parity (max error {art['parity']['max_abs_err_rel']:.2e} "
                    f"of the range); {others[0]['path']} ({others[0]['route']}) is published instead")
    return True


def _retry_hint(artifacts: list[dict], broken: list[dict]) -> str:
    """When only reduced precisions miss their bar, say how to publish the ones that passed."""
    failed = {a["precision"] for a in broken if a["format"] == "tflite"}
    passed = [a["precision"] for a in artifacts if a["format"] == "tflite" and a["parity"]["passed"] is not False]
    if not failed or "fp32" in failed or not passed:
        return ""
    return (f" — the weights do not survive {', '.join(sorted(failed))} rounding at this size; "
            f"--precision {','.join(dict.fromkeys(passed))} publishes the artifacts that passed")
