"""Build small real TFLite models for the tests and the benchmark script (tensorflow, lazily)."""

from __future__ import annotations

import os
from pathlib import Path


def build_conv_tflite(path: str | os.PathLike, size: int = 32, channels: int = 8, layers: int = 2) -> Path:
    """A small float32 conv net (NHWC input 1xSxSx3 → 1xSxSx1) converted with TFLiteConverter."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    inputs = tf.keras.Input((size, size, 3), batch_size=1)
    x = inputs
    for _ in range(layers):
        x = tf.keras.layers.Conv2D(channels, 3, padding="same", activation="relu")(x)
    outputs = tf.keras.layers.Conv2D(1, 3, padding="same")(x)
    model = tf.keras.Model(inputs, outputs)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    out = Path(path)
    out.write_bytes(converter.convert())
    return out
