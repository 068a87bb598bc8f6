"""Build small real TFLite models for the tests with TensorFlow's converter.

TensorFlow lives in the converter environment only (``mobiledepth.converter_env``): the test
process calls ``build_tflites`` / ``build_conv_tflite``, which run this file there as a child
(``python ab_tflite_models.py JOBS.json``), one TensorFlow start for a whole list of models.
Kinds: ``conv`` (a small conv net, NHWC 1xSxSx3 → 1xSxSx1) and ``transposed_concat``
(TRANSPOSE(a), TRANSPOSE(b) → CONCAT(axis=1) → TRANSPOSE → CONV, as onnx2tf writes it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def skip_without_converter() -> None:
    """pytest.skip when there is no converter environment (TensorFlow) to build models with."""
    import pytest

    from mobiledepth.converter_env import converter_python
    from mobiledepth.errors import UserError

    try:
        converter_python()
    except UserError as exc:
        pytest.skip(str(exc))


def build_tflites(jobs: list[dict], timeout_s: float = 600) -> list[Path]:
    """Build every ``{"kind", "path", ...}`` job in one converter-environment child."""
    from mobiledepth.converter_env import converter_env, worker_command

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump([{**job, "path": str(Path(job["path"]).resolve())} for job in jobs], handle)
    try:
        done = subprocess.run(worker_command(Path(__file__).resolve(), handle.name), env=converter_env(),
                              capture_output=True, text=True, timeout=timeout_s)
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        raise RuntimeError(f"building test TFLite models failed:\n{done.stderr[-3000:]}")
    return [Path(job["path"]) for job in jobs]


def build_conv_tflite(path: str | os.PathLike, size: int = 32, channels: int = 8, layers: int = 2) -> Path:
    """A small float32 conv net (NHWC input 1xSxSx3 → 1xSxSx1)."""
    return build_tflites([{"kind": "conv", "path": path, "size": size, "channels": channels, "layers": layers}])[0]


# --------------------------------------------------------------------------- in the converter env

def _conv(tf, size: int, channels: int, layers: int = 2, head_kernel: int = 3, seed: int | None = None) -> bytes:
    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((size, size, 3), batch_size=1)
    x = inputs
    for _ in range(layers):
        x = tf.keras.layers.Conv2D(channels, 3, padding="same", activation="relu")(x)
    outputs = tf.keras.layers.Conv2D(1, head_kernel, padding="same")(x)
    return tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inputs, outputs)).convert()


def _transposed_concat(tf) -> bytes:
    import numpy as np

    kernel = tf.constant(np.random.default_rng(0).standard_normal((1, 1, 10, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 6], tf.float32), tf.TensorSpec([1, 8, 8, 4], tf.float32)])
    def net(a, b):
        nchw = tf.concat([tf.transpose(a, [0, 3, 1, 2]), tf.transpose(b * 2.0, [0, 3, 1, 2])], axis=1)
        return tf.nn.conv2d(tf.transpose(nchw, [0, 2, 3, 1]), kernel, 1, "SAME")

    return tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()], net).convert()


def _main(jobs_path: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    builders = {"conv": _conv, "transposed_concat": _transposed_concat}
    for job in json.loads(Path(jobs_path).read_text()):
        options = {k: v for k, v in job.items() if k not in ("kind", "path")}
        Path(job["path"]).write_bytes(builders[job["kind"]](tf, **options))


if __name__ == "__main__":
    _main(sys.argv[1])
