"""ONNX → TFLite: fp32 and fp16 from one onnx2tf conversion, int8 / int16x8 from its
SavedModel through TensorFlow's own post-training quantiser.

Both run in guarded child processes (``mobiledepth.child``) with the python of the converter
environment (``mobiledepth.converter_env``): TensorFlow never loads into the caller, a
converter crash cannot take the caller down, the converter dies with the caller (even on
``kill -9``), and the full converter log is kept beside the artifacts.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np

from mobiledepth.child import run_child
from mobiledepth.errors import StageFailed

# onnx2tf reads this file from its working directory for every conversion of a 3-channel
# image input, and downloads it from the internet when it is missing (offline: a crash).
ONNX2TF_SAMPLE_NAME = "calibration_image_sample_data_20x128x128x3_float32.npy"
QUANTIZED_PRECISIONS = ("int8", "int16x8")
# A converter that fails with less than this free beside its output ran out of disk (its log may
# not even hold the reason: it could not be written).
LOW_SPACE_BYTES = 1 << 20


def _tool_env() -> dict:
    """The environment of a converter child (``mobiledepth.converter_env``)."""
    from mobiledepth.converter_env import converter_env

    return converter_env()


def _onnx2tf_command() -> list[str]:
    from mobiledepth.converter_env import converter_tool

    return [str(converter_tool("onnx2tf"))]


def _last_error(log: Path) -> str:
    lines = [l.strip() for l in log.read_text(errors="replace").splitlines() if l.strip()]
    errors = [l for l in lines if "error" in l.lower() or "exception" in l.lower()]
    return (errors or lines or ["no output"])[-1][:200]


def _child_failure(what: str, code: int, log: Path) -> Exception:
    """The error for a converter that exited ``code``: ENOSPC when the disk is (nearly) full."""
    if shutil.disk_usage(log.parent).free < LOW_SPACE_BYTES:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(log.parent))
    return StageFailed(f"{what} failed (exit {code}): {_last_error(log)}; see {log.name}")


def write_onnx2tf_sample(work_dir: Path, images_nchw: np.ndarray) -> Path:
    """The 20x128x128x3 float32 sample onnx2tf insists on, made from our own images."""
    from PIL import Image

    resized = []
    for i in range(20):
        hwc = (images_nchw[i % len(images_nchw)].transpose(1, 2, 0) * 255).clip(0, 255).astype(np.uint8)
        resized.append(np.asarray(Image.fromarray(hwc).resize((128, 128), Image.BILINEAR), dtype=np.float32) / 255.0)
    path = work_dir / ONNX2TF_SAMPLE_NAME
    np.save(path, np.stack(resized).astype(np.float32))
    return path


def convert_with_onnx2tf(onnx_path: Path, work_dir: Path, images_nchw: np.ndarray,
                         timeout_s: float = 1800) -> dict[str, Path]:
    """Run onnx2tf once; returns paths of ``fp32``, ``fp16`` and the ``saved_model`` directory."""
    work_dir.mkdir(parents=True, exist_ok=True)
    write_onnx2tf_sample(work_dir, images_nchw)
    out_dir = work_dir / "onnx2tf"
    log = work_dir / "onnx2tf.log"
    # onnx2tf simplifies its input file in place: give it a copy, keep the published ONNX intact
    onnx_copy = work_dir / onnx_path.name
    shutil.copyfile(onnx_path, onnx_copy)
    command = _onnx2tf_command() + ["-i", onnx_copy.name, "-o", str(out_dir)]
    code = run_child(command, log, timeout_s, "onnx2tf", cwd=work_dir, env=_tool_env())
    stem = onnx_path.stem
    produced = {"fp32": out_dir / f"{stem}_float32.tflite", "fp16": out_dir / f"{stem}_float16.tflite",
                "saved_model": out_dir}
    if code != 0 or not produced["fp32"].exists():
        raise _child_failure("onnx2tf", code, log)
    return produced


def quantize(saved_model: Path, images_nchw: np.ndarray, precision: str, out_path: Path,
             timeout_s: float = 3600) -> Path:
    """Full-integer post-training quantisation of onnx2tf's SavedModel (per-channel weights),
    calibrated on ``images_nchw``; ``int16x8`` keeps 16-bit activations."""
    if precision not in QUANTIZED_PRECISIONS:
        raise ValueError(precision)
    images_path = out_path.with_suffix(".calibration.npy")
    np.save(images_path, images_nchw.transpose(0, 2, 3, 1).astype(np.float32))
    log = out_path.with_suffix(".log")
    from mobiledepth.converter_env import worker_command

    command = worker_command(Path(__file__).with_name("quantize_worker.py"), str(saved_model),
                             str(images_path), precision, str(out_path))
    try:
        code = run_child(command, log, timeout_s, f"{precision} quantisation", env=_tool_env())
    finally:
        images_path.unlink(missing_ok=True)
    if code != 0 or not out_path.exists():
        raise _child_failure(f"{precision} quantisation", code, log)
    return out_path
