"""`mobiledepth export`: strip heads → ONNX → TFLite (fp32/fp16/int8/int16x8), parity at every stage.

Everything is built in a temporary directory beside the run directory and renamed into
place only when every artifact meets its parity bar; a failed export is moved to
``<out>.failed/`` with its record and converter logs, never left where a good one would be.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

from mobiledepth.errors import StageFailed, UserError
from mobiledepth.io import sha256_file, write_json_atomic, write_text_atomic

PRECISIONS = ("fp32", "fp16", "int8", "int16x8")
DEFAULT_PRECISIONS = ("fp32", "fp16")
ARTIFACT_NAMES = {"onnx": "model.onnx", "fp32": "model_fp32.tflite", "fp16": "model_fp16.tflite",
                  "int8": "model_int8.tflite", "int16x8": "model_int16x8.tflite"}
ProgressFn = Callable[[str, str, float | None, str], None]


@dataclass
class ExportResult:
    run_dir: Path
    record: dict
    warnings: list[str] = field(default_factory=list)

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
    for dist in ("mobiledepth", "torch", "onnx", "onnxruntime", "onnx2tf", "tensorflow", "ai-edge-litert"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _prepare_out(out: Path) -> Path:
    """Check the run directory's parent is writable; return a fresh temporary build directory."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)).resolve()
    except OSError as exc:
        raise UserError(f"cannot write to {out.parent} ({exc.strerror}); choose another --out") from None


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


def export_model(model: str | None = None, checkpoint: str | os.PathLike | None = None,
                 input_size: tuple[int, int] | None = None,
                 precisions: str | list[str] | tuple[str, ...] = DEFAULT_PRECISIONS,
                 calibration_data: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                 parity_images: int = 4, calibration_images_count: int = 64,
                 progress: ProgressFn | None = None, rewrites: bool = True) -> ExportResult:
    """Export a model to ONNX and TFLite with parity proven against PyTorch; returns the record.

    ``rewrites``: apply the exact speed rewrites of ``mobiledepth.export.rewrites`` to the graph
    (parity is always measured against the unrewritten model)."""
    from mobiledepth.sizes import check_input_size
    from mobiledepth.export.source import load_model_source

    chosen = parse_precisions(precisions)
    notify = progress or (lambda *args: None)
    warnings: list[str] = []
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def stage(name: str, detail: str = ""):
        class _Stage:
            def __enter__(self):
                self.t0 = time.perf_counter()
                notify(name, "start", None, detail)
                return self

            def __exit__(self, kind, value, tb):
                timings[name] = round(time.perf_counter() - self.t0, 3)
                if kind is None:
                    notify(name, "done", timings[name], detail)
                elif not issubclass(kind, UserError):  # a user's mistake gets its one line, not a stage trace
                    notify(name, "failed", timings[name], detail)
                return False
        return _Stage()

    with stage("load", "build the model, load weights, strip heads"):
        source = load_model_source(model, checkpoint)
        size = check_input_size(*input_size) if input_size else source.default_input_size
    run_dir = Path(out) if out else default_run_dir(source.name, size)
    if calibration_data is not None:
        from mobiledepth.export.calibration import find_images

        find_images(calibration_data)  # fail before any work when the folder has no images
    build = _prepare_out(run_dir)
    try:
        record = _build(source, size, chosen, calibration_data, build, parity_images,
                        calibration_images_count, stage, warnings, rewrites)
    except BaseException as exc:
        failed = run_dir.with_name(run_dir.name + ".failed")
        if any(build.iterdir()):
            shutil.rmtree(failed, ignore_errors=True)
            os.replace(build, failed)
        else:
            shutil.rmtree(build, ignore_errors=True)
        if isinstance(exc, StageFailed) and failed.exists():
            raise StageFailed(f"{exc}; the artifacts and logs are in {failed}/") from None
        raise
    record["timings_s"] = {**timings, "total": round(time.perf_counter() - started, 3)}
    record["warnings"] = warnings
    write_json_atomic(build / "export.json", record)
    _replace_dir(build, run_dir)
    return ExportResult(run_dir=run_dir, record=record, warnings=warnings)


def _build(source, size, chosen, calibration_data, build: Path, parity_images: int,
           calibration_count: int, stage, warnings: list[str], rewrites: bool) -> dict:
    import numpy as np
    import yaml

    from mobiledepth.export.calibration import calibration_images, generated_images
    from mobiledepth.export.onnx_export import export_onnx
    from mobiledepth.export.parity import measure_parity
    from mobiledepth.export.rewrites import phase_split_upsampling
    from mobiledepth.export.runtimes import OnnxRuntime, TfliteRuntime, TorchRuntime
    from mobiledepth.export.source import deploy_module
    from mobiledepth.export.tflite import convert_with_onnx2tf, quantize
    from mobiledepth.export.tflite_passes import fold_transposed_concats

    with stage("inputs", "parity and calibration images"):
        if source.checkpoint is None:
            warnings.append("no --checkpoint: exporting random weights (BatchNorm statistics calibrated on "
                            "generated scenes) — fine for latency, meaningless for accuracy")
            if source.kind != "factory":
                from mobiledepth.arch.init import calibrate_batchnorm
                import torch

                calibrate_batchnorm(source.model, torch.from_numpy(generated_images(8, size, seed=99)))
                source.model.eval()
        count = max(parity_images, calibration_count if any(p in chosen for p in ("int8", "int16x8")) else parity_images)
        images, image_source = calibration_images(calibration_data, count, size)
        if calibration_data is None and any(p in chosen for p in ("int8", "int16x8")):
            warnings.append("int8 calibrated on generated scenes; pass --calibration-data DIR with real photos "
                            "from your deployment for a faithful quantisation")
        parity_set = images[np.linspace(0, len(images) - 1, min(parity_images, len(images))).round().astype(int)]
        deployed = deploy_module(source.model)
        reference = TorchRuntime(deployed, size)(parity_set)

    artifacts: list[dict] = []

    def finish_tflite(path: Path) -> dict:
        """Apply the graph passes in place; returns what they did."""
        data, folded = fold_transposed_concats(path.read_bytes())
        if folded:
            path.write_bytes(data)
        return {"fold_transposed_concats": folded}

    def add(path: Path, fmt: str, precision: str, parity: dict, io: dict) -> None:
        artifacts.append({"path": path.name, "format": fmt, "precision": precision, "layout": io["layout"],
                          "input_shape": io["input_shape"], "output_shape": io["output_shape"],
                          "size_bytes": path.stat().st_size, "sha256": sha256_file(path),
                          "parity": parity, **{k: v for k, v in io.items() if k not in ("layout", "input_shape", "output_shape")}})

    with stage("onnx", "torch.onnx.export (opset 17) + onnx.checker + ONNX Runtime parity"):
        graph, phase_split = phase_split_upsampling(deployed) if rewrites else (deployed, 0)
        onnx_path = export_onnx(graph, size, build / ARTIFACT_NAMES["onnx"])
        onnx_out = OnnxRuntime(onnx_path)(parity_set)
        add(onnx_path, "onnx", "fp32", measure_parity(reference, onnx_out, "fp32"),
            {"layout": "NCHW", "input_shape": [1, 3, *size], "output_shape": [1, *onnx_out.shape[1:]]})

    with stage("tflite", "onnx2tf → fp32 + fp16"):
        produced = convert_with_onnx2tf(onnx_path, build / "convert", images)
        for precision in ("fp32", "fp16"):
            if precision in chosen:
                path = build / ARTIFACT_NAMES[precision]
                shutil.copyfile(produced[precision], path)
                passes = finish_tflite(path)
                add(path, "tflite", precision, measure_parity(reference, TfliteRuntime(path)(parity_set), precision), _tflite_io(path))
                artifacts[-1]["graph_passes"] = passes

    for precision in (p for p in chosen if p in ("int8", "int16x8")):
        with stage(precision, f"post-training quantisation ({precision}), calibrated on {image_source}"):
            path = quantize(produced["saved_model"], images, precision, build / ARTIFACT_NAMES[precision])
            passes = finish_tflite(path)
            add(path, "tflite", precision, measure_parity(reference, TfliteRuntime(path)(parity_set), precision), _tflite_io(path))
            artifacts[-1]["graph_passes"] = passes

    # keep the converter logs, drop its intermediate files (SavedModel, duplicates)
    for log in (build / "convert").glob("*.log"):
        shutil.move(str(log), build / log.name)
    shutil.rmtree(build / "convert", ignore_errors=True)

    config = {"model": source.name, "source": source.kind, "checkpoint": source.checkpoint,
              "input_size": list(size), "precisions": chosen, "calibration": image_source,
              "parity_images": len(parity_set), "spec": source.spec}
    write_text_atomic(build / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    from mobiledepth.arch.stats import count_parameters, count_macs

    record = {
        "kind": "export", "schema": 1, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": source.name, "source": source.kind, "spec_hash": source.spec_hash,
                  "params": count_parameters(source.model), "macs": count_macs(deployed, size),
                  "checkpoint": source.checkpoint, "checkpoint_sha256": source.checkpoint_sha256},
        "input_size": list(size), "input_range": "RGB float32 in [0, 1] (ImageNet normalisation is inside the model)",
        "calibration": image_source, "artifacts": artifacts, "versions": converter_versions(),
        "graph_rewrites": {"phase_split_upsampling": phase_split},
    }
    broken = []
    for art in artifacts:
        if art["parity"]["passed"] is not False:
            continue
        if art["precision"] == "fp16" and source.checkpoint is None:
            art["parity"]["enforced"] = False
            # Untrained weights are ill-conditioned: rounding them to fp16 moves the output far more
            # than it moves a trained model's. The fp32 artifact already proves the converter.
            warnings.append(f"{art['path']}: fp16 weights move these random weights' output by "
                            f"{art['parity']['max_abs_err_rel']:.1e} of its range (ordinal agreement "
                            f"{art['parity']['ordinal_agreement']:.4f}); with --checkpoint this fails the export")
        else:
            broken.append(art)
    if broken:
        write_json_atomic(build / "export.json", {**record, "failed": True})
        worst = broken[0]
        raise StageFailed(
            f"{worst['path']} breaks parity with PyTorch (max error {worst['parity']['max_abs_err_rel']:.2e} of the output "
            f"range, ordinal agreement {worst['parity']['ordinal_agreement']:.4f}; bar {worst['parity']['bar']}); "
            "nothing was published" + _retry_hint(artifacts, broken))
    return record


def _retry_hint(artifacts: list[dict], broken: list[dict]) -> str:
    """When only reduced precisions miss their bar, say how to publish the ones that passed."""
    failed = {a["precision"] for a in broken if a["format"] == "tflite"}
    passed = [a["precision"] for a in artifacts if a["format"] == "tflite" and a["parity"]["passed"] is not False]
    if not failed or "fp32" in failed or not passed:
        return ""
    return (f" — the weights do not survive {', '.join(sorted(failed))} rounding at this size; "
            f"--precision {','.join(dict.fromkeys(passed))} publishes the artifacts that passed")
