"""Artifacts you can call: a checkpoint, an ONNX file or a TFLite file behind one interface.

``runtime(images)`` takes RGB float32 in [0, 1], NCHW ``(N, 3, H, W)``, and returns the depth
map ``(N, 1, H, W)`` float32, whatever the artifact's layout (NHWC TFLite) or precision
(fp16 weights, int8/int16 quantised input and output), so parity is one line.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from mobiledepth.errors import UserError


class Runtime:
    backend = "?"
    precision = "fp32"
    input_size: tuple[int, int]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1] != 3:
            raise UserError(f"{self.backend} runtime expects images as (N, 3, H, W), got {images.shape}")
        if tuple(images.shape[2:]) != tuple(self.input_size):
            raise UserError(f"model input is {self.input_size[0]}x{self.input_size[1]}, images are "
                            f"{images.shape[2]}x{images.shape[3]}; resize them first")
        return self._run(images)

    def _run(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class TorchRuntime(Runtime):
    backend = "torch"

    def __init__(self, model, input_size: tuple[int, int]):
        self.model = model.eval()
        self.input_size = tuple(input_size)

    def _run(self, images):
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(images)).numpy().astype(np.float32)


class OnnxRuntime(Runtime):
    backend = "onnx"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise UserError(f"{path} is not a loadable ONNX model ({str(exc).splitlines()[0][:160]})") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_size = tuple(inp.shape[2:4])
        self.batch_fixed = isinstance(inp.shape[0], int)

    def _run(self, images):
        if self.batch_fixed:
            return np.concatenate([self.session.run(None, {self.input_name: images[i:i + 1]})[0]
                                   for i in range(len(images))]).astype(np.float32)
        return self.session.run(None, {self.input_name: images})[0].astype(np.float32)


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    if detail["dtype"] in (np.float32, np.float16) or scale == 0:
        return x.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    if detail["dtype"] in (np.float32, np.float16) or scale == 0:
        return y.astype(np.float32)
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence the C++ runtime's "INFO: Created TensorFlow Lite XNNPACK delegate" line."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # pytest capture, notebooks
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)


class TfliteRuntime(Runtime):
    backend = "tflite"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        try:
            with quiet_native_stderr():
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())
                self.interpreter.allocate_tensors()
        except Exception as exc:
            raise UserError(f"{path} is not a loadable TFLite model ({str(exc).splitlines()[0][:160]})") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        shape = list(self.input["shape"])
        self.nhwc = shape[-1] == 3
        self.input_size = tuple(shape[1:3] if self.nhwc else shape[2:4])
        self.precision = tflite_precision(self.interpreter)

    def _run(self, images):
        outputs = []
        for image in images:
            x = image[None].transpose(0, 2, 3, 1) if self.nhwc else image[None]
            self.interpreter.set_tensor(self.input["index"], _quantize(x, self.input))
            self.interpreter.invoke()
            y = _dequantize(self.interpreter.get_tensor(self.output["index"]), self.output)
            outputs.append(y.transpose(0, 3, 1, 2) if self.nhwc and y.ndim == 4 else y)
        return np.concatenate(outputs)


def tflite_precision(interpreter) -> str:
    """fp32 / fp16 / int8 / int16x8, read off the model's tensors."""
    kinds = {np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}
    if "int16" in kinds:
        return "int16x8"
    if "int8" in kinds or "uint8" in kinds:
        return "int8"
    if "float16" in kinds:
        return "fp16"
    return "fp32"


def load_runtime(path: str | os.PathLike, threads: int | None = None, model: str | dict | None = None) -> Runtime:
    """Open a ``.pt``/``.pth`` checkpoint, ``.onnx`` or ``.tflite`` file as a callable Runtime.

    ``model`` names the spec for a checkpoint that does not store one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxRuntime(path, threads)
    if suffix == ".tflite":
        return TfliteRuntime(path, threads)
    if suffix in (".pt", ".pth", ".ckpt"):
        from mobiledepth.arch.checkpoint import load_checkpoint

        net, spec, meta = load_checkpoint(path, spec=model, with_heads=False)
        size = (meta or {}).get("input_size") or spec.get("input_size") or (256, 256)
        return TorchRuntime(net, tuple(size))
    raise UserError(f"unknown model file type '{suffix}' for {path}; use .pt, .onnx or .tflite")
