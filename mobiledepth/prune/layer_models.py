"""Build single-layer TFLite models directly with TensorFlow (no ONNX, no onnx2tf).

Run as a child process in the converter environment, by file path (``python layer_models.py
JOBS.json OUT_DIR``, see ``mobiledepth.converter_env``; it imports only numpy and TensorFlow), so
that TensorFlow loads once for a whole table and never inside the caller: it reads a list of
``{"file", "layer"}`` jobs, writes each ``OUT_DIR/<file>`` atomically and prints
``done <file>`` (or ``fail <file> <reason>``) per job, flushing, for the caller's progress bar.
A file that already exists is skipped, so a stopped build resumes.
"""

from __future__ import annotations

import json
import os
import sys


def _layer_function(tf, layer: dict, seed: int):
    """A tf.function computing the layer with random (fixed-seed) weights, NHWC float32."""
    import numpy as np

    rng = np.random.default_rng(seed)
    op, h, w, ch = layer["op"], layer["h"], layer["w"], layer["channels"]
    k, stride, act = layer.get("kernel", 1), layer.get("stride", 1), layer.get("act", "none")

    def activation(x):
        return {"relu6": tf.nn.relu6, "relu": tf.nn.relu}.get(act, lambda v: v)(x)

    def pad(x):
        # torch pads k//2 on every side; onnx2tf writes that as PAD + VALID for stride 2
        if stride == 1:
            return x, "SAME"
        p = k // 2
        return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]]), "VALID"

    def const(shape):
        return tf.constant(rng.standard_normal(shape).astype("float32") * 0.1)

    specs = [tf.TensorSpec([1, h, w, ch[0]], tf.float32)]
    if op == "conv":
        weight, bias = const([k, k, ch[0], ch[1]]), const([ch[1]])

        def fn(x):
            x, padding = pad(x)
            return activation(tf.nn.conv2d(x, weight, stride, padding) + bias)
    elif op == "dwconv":
        weight, bias = const([k, k, ch[0], 1]), const([ch[0]])

        def fn(x):
            x, padding = pad(x)
            return activation(tf.nn.depthwise_conv2d(x, weight, [1, stride, stride, 1], padding) + bias)
    elif op in ("add", "null"):
        specs = specs * 2

        def fn(x, y):
            return x + y
    elif op == "concat":  # one channel dim per input
        specs = [tf.TensorSpec([1, h, w, c], tf.float32) for c in ch]

        def fn(*inputs):
            return tf.concat(list(inputs), axis=-1)
    elif op == "phase_merge":  # four phase outputs → CONCATENATION + DEPTH_TO_SPACE
        specs = specs * 4

        def fn(*phases):
            return tf.nn.depth_to_space(tf.concat(phases, axis=-1), 2)
    elif op in ("resize_bilinear", "resize_nearest"):
        method = "bilinear" if op == "resize_bilinear" else "nearest"

        def fn(x):
            return tf.image.resize(x, [2 * h, 2 * w], method=method)
    elif op == "weight_chain":  # the weight-streaming probe: ``depth`` 1x1 convs, each with its own weights
        weights = [const([1, 1, ch[0], ch[0]]) for _ in range(int(layer["depth"]))]
        biases = [const([ch[0]]) for _ in weights]

        def fn(x):
            for weight, bias in zip(weights, biases):
                x = tf.nn.conv2d(x, weight, 1, "VALID") + bias
            return x
    elif op in TRACED_OPS:
        return _traced_op_function(tf, layer, const, activation)
    elif op == "normalize":
        mean, inv_std = const([1, 1, 1, ch[0]]), const([1, 1, 1, ch[0]])

        def fn(x):
            return (x - mean) * inv_std
    else:
        raise ValueError(f"unknown layer op {op!r}")
    return tf.function(fn, input_signature=specs)


TRACED_OPS = ("deconv", "act", "mul", "scale", "maxpool", "avgpool", "global_pool", "depth_to_space")


def _unary(tf, act: str):
    """A stand-alone activation by the name ``traced_layers`` records (``leaky_relu:<slope>``)."""
    if act.startswith("leaky_relu"):
        slope = float(act.split(":")[1]) if ":" in act else 0.01
        return lambda x: tf.nn.leaky_relu(x, alpha=slope)
    if act.startswith("hardtanh"):
        low, high = (float(v) for v in act.split(":")[1:3])
        return lambda x: tf.clip_by_value(x, low, high)
    table = {"sigmoid": tf.math.sigmoid, "silu": lambda x: x * tf.math.sigmoid(x), "tanh": tf.math.tanh,
             "hardswish": lambda x: x * tf.nn.relu6(x + 3.0) / 6.0, "gelu": tf.nn.gelu, "elu": tf.nn.elu,
             "relu": tf.nn.relu, "relu6": tf.nn.relu6}
    return table[act]


def _traced_op_function(tf, layer: dict, const, activation):
    """The single-layer function of an op only :mod:`mobiledepth.prune.traced_layers` lists."""
    op, h, w, ch = layer["op"], layer["h"], layer["w"], layer["channels"]
    k, stride = layer.get("kernel", 1), layer.get("stride", 1)
    specs = [tf.TensorSpec([1, h, w, ch[0]], tf.float32)]
    if op == "deconv":
        weight, bias = const([k, k, ch[1], ch[0]]), const([ch[1]])
        out_shape = [1, h * stride, w * stride, ch[1]]

        def fn(x):
            return activation(tf.nn.conv2d_transpose(x, weight, out_shape, stride, "SAME") + bias)
    elif op == "act":
        fn = _unary(tf, layer.get("act", "none"))
    elif op == "mul":
        specs = specs * 2

        def fn(x, y):
            return x * y
    elif op == "scale":  # an activation times a per-channel (1x1) activation: squeeze-excitation's gate
        specs = specs + [tf.TensorSpec([1, 1, 1, ch[0]], tf.float32)]

        def fn(x, gate):
            return x * gate
    elif op in ("maxpool", "avgpool"):
        pool = tf.nn.max_pool2d if op == "maxpool" else tf.nn.avg_pool2d

        def fn(x):
            return pool(x, k, stride, "VALID")
    elif op == "global_pool":
        def fn(x):
            return tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    else:  # depth_to_space: a x2 pixel shuffle of 4 * c channels
        specs = [tf.TensorSpec([1, h, w, 4 * ch[0]], tf.float32)]

        def fn(x):
            return tf.nn.depth_to_space(x, 2)
    return tf.function(fn, input_signature=specs)


def build_tflite(tf, layer: dict, seed: int = 0) -> bytes:
    """The TFLite flatbuffer of one layer."""
    fn = _layer_function(tf, layer, seed)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    return converter.convert()


def main(argv: list[str]) -> int:
    jobs_path, out_dir = argv[0], argv[1]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    with open(jobs_path) as handle:
        jobs = json.load(handle)
    print(f"tensorflow {tf.__version__}", flush=True)
    for job in jobs:
        target = os.path.join(out_dir, job["file"])
        if not os.path.exists(target):
            try:
                data = build_tflite(tf, job["layer"])
            except Exception as exc:  # noqa: BLE001 - reported per job, the build goes on
                print(f"fail {job['file']} {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}", flush=True)
                continue
            tmp = target + ".tmp"
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        print(f"done {job['file']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
