"""Build ``calibration.tflite``, the fixed model the CI gate times next to yours (run once, commit the file).

    python -m mobiledepth.gate.build_calibration

A small conv net (MobileNet-like: strided 3x3 conv, depthwise-separable blocks, a 1x1 head) on a
128x128 RGB input with weights from a fixed seed, so its cost resembles a depth model's layers.
TensorFlow is needed only here, in the converter environment: run as a module, this file runs
itself there by path (``mobiledepth.converter_env``); ``mobiledepth check`` only reads the shipped file.
The baseline files record its sha256, so replacing it invalidates old baselines (on purpose).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).with_name("calibration.tflite")


def build_calibration_tflite(out: Path = OUT, seed: int = 1234) -> Path:
    """Convert the seeded Keras calibration net to fp32 TFLite at ``out``."""
    import numpy as np
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input(shape=(128, 128, 3), batch_size=1)
    x = tf.keras.layers.Conv2D(24, 3, strides=2, padding="same", activation="relu")(inputs)
    for filters, stride in ((32, 1), (48, 2), (48, 1), (64, 2), (64, 1)):
        x = tf.keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", activation="relu")(x)
        x = tf.keras.layers.Conv2D(filters, 1, activation="relu")(x)
    x = tf.keras.layers.UpSampling2D(4)(x)
    outputs = tf.keras.layers.Conv2D(1, 1)(x)
    model = tf.keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.1, w.shape).astype(np.float32) for w in model.get_weights()])
    data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    partial = out.with_name(out.name + ".part")  # this file runs without mobiledepth: no mobiledepth.io
    partial.write_bytes(data)
    os.replace(partial, out)
    return out


def _in_converter_env(out: Path) -> int:
    """Run this file by path in the converter environment (TensorFlow never loads here)."""
    from mobiledepth.converter_env import converter_env, worker_command

    return subprocess.run(worker_command(Path(__file__).resolve(), str(out.resolve())), env=converter_env()).returncode


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    if __package__:  # python -m mobiledepth.gate.build_calibration, in the main environment
        sys.exit(_in_converter_env(target))
    path = build_calibration_tflite(target)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
