"""int8 post-training quantisation recipes on a trained model: where does the ordering go?

    .venv/bin/python benchmarks/int8_recipes.py CHECKPOINT [--size 256x256] [--float-top 3,8,16] [--out DIR]

CHECKPOINT: a trained model (e.g. ``benchmarks/train_synth.py``'s). The graph is the export's
(heads stripped, phase-split rewrite, onnx2tf SavedModel); calibration on 64 generated scenes,
evaluation on 8 unseen ones against PyTorch fp32. Variants:

- ``full_int8``: the export's recipe (int8 activations, per-channel weights, int8 I/O);
- ``float_topK``: TensorFlow's QuantizationDebugger ranks every quantised tensor by RMSE / scale
  (~0.29 = 1/sqrt(12) is ideal rounding noise); the K worst stay in float (selective quantisation);
- ``float_head``: the prediction conv and the final upsampling in float (no output rounding).

Per variant: max / mean error relative to the range, and of the pixel pairs PyTorch separates
by at least 0.1 %, 1 % and 5 % of the range, the fraction kept in order, tied and flipped; the
1-thread latency on this machine.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SEPARATIONS = (1e-3, 1e-2, 5e-2)


def order_kept(reference: np.ndarray, candidate: np.ndarray, separation: float, pairs: int = 20000) -> tuple[float, float, float]:
    """(kept, tied, flipped) fractions of random pixel pairs the reference separates by ``separation`` of its range."""
    rng = np.random.default_rng(0)
    kept = tied = flipped = total = 0
    for ref, cand in zip(reference.reshape(len(reference), -1), candidate.reshape(len(candidate), -1)):
        a, b = rng.integers(0, ref.size, pairs), rng.integers(0, ref.size, pairs)
        diff = ref[a] - ref[b]
        mask = np.abs(diff) >= separation * (ref.max() - ref.min())
        got, want = np.sign(cand[a] - cand[b])[mask], np.sign(diff)[mask]
        kept += int((got == want).sum())
        tied += int((got == 0).sum())
        flipped += int((got == -want).sum())
        total += int(mask.sum())
    return kept / total, tied / total, flipped / total


def host_ms(path: Path, runs: int = 20) -> float:
    from android_bench.host import HostModel

    model = HostModel(str(path), threads=1)
    for _ in range(3):
        model.time_once()
    return float(np.median([model.time_once() for _ in range(runs)])) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--float-top", default="3,8,16")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from mobiledepth.arch import load_checkpoint
    from mobiledepth.export.calibration import generated_images
    from mobiledepth.export.onnx_export import export_onnx
    from mobiledepth.export.rewrites import phase_split_upsampling
    from mobiledepth.export.runtimes import TorchRuntime
    from mobiledepth.export.source import deploy_module
    from mobiledepth.export.tflite import convert_with_onnx2tf
    from mobiledepth.sizes import parse_input_size

    size = parse_input_size(args.size)
    work = Path(args.out or tempfile.mkdtemp(prefix="int8-"))
    work.mkdir(parents=True, exist_ok=True)
    model, _, _ = load_checkpoint(args.checkpoint, with_heads=False)
    deployed = deploy_module(model.eval())
    calibration, test = generated_images(64, size), generated_images(8, size, seed=4242)
    reference = TorchRuntime(deployed, size)(test)
    graph, _ = phase_split_upsampling(deployed)
    saved_model = convert_with_onnx2tf(export_onnx(graph, size, work / "model.onnx"), work / "convert", calibration)["saved_model"]

    import tensorflow as tf

    def representative():
        for image in calibration.transpose(0, 2, 3, 1):
            yield [image[None]]

    def converter(full_integer: bool):
        conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        if full_integer:
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = conv.inference_output_type = tf.int8
        return conv

    def keep_in_float(tensors: list[str]) -> bytes:
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=tensors)
        return tf.lite.experimental.QuantizationDebugger(converter=converter(False), debug_dataset=representative,
                                                         debug_options=options).get_nondebug_quantized_model()

    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter(False), debug_dataset=representative)
    debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    dump.seek(0)
    layers = list(csv.DictReader(dump))
    for layer in layers:
        scale = float(layer["scale"])
        layer["rmse_over_scale"] = float(layer["mean_squared_error"]) ** 0.5 / scale if scale else 0.0
    layers.sort(key=lambda layer: -layer["rmse_over_scale"])
    (work / "layer_stats.json").write_text(json.dumps(layers, indent=1))
    ratios = np.array([layer["rmse_over_scale"] for layer in layers])
    print(f"{len(layers)} quantised tensors, RMSE/scale median {np.median(ratios):.3f}, max {ratios.max():.3f} "
          f"(ideal rounding: {1 / 12 ** 0.5:.3f})")

    variants = {"full_int8": converter(True).convert()}
    for k in (int(v) for v in args.float_top.split(",") if v):
        variants[f"float_top{k}"] = keep_in_float([layer["tensor_name"] for layer in layers[:k]])
    convs = [layer for layer in layers if layer["op_name"] == "CONV_2D"]
    prediction = max(convs, key=lambda layer: int(float(layer["tensor_idx"])))  # the last conv written
    head = [prediction["tensor_name"]] + [layer["tensor_name"] for layer in layers if layer["op_name"] == "RESIZE_BILINEAR"]
    variants["float_head"] = keep_in_float(head)

    print_variants(variants, work, reference, test)


def print_variants(variants: dict[str, bytes], work: Path, reference: np.ndarray, test: np.ndarray) -> None:
    """Write each quantised variant and print its parity, depth-order and speed row (Markdown)."""
    from mobiledepth.export.parity import measure_parity
    from mobiledepth.export.runtimes import TfliteRuntime

    print("| variant | size | max err / range | mean err / range | "
          + " | ".join(f"pairs ≥ {s:g}: kept / tied / flipped" for s in SEPARATIONS) + " | 1-thread ms |")
    print("|---|---|---|---|" + "---|" * len(SEPARATIONS) + "---|")
    for name, data in variants.items():
        path = work / f"{name}.tflite"
        path.write_bytes(data)
        candidate = TfliteRuntime(path)(test)
        parity = measure_parity(reference, candidate, "int8")
        cells = [" / ".join(f"{v:.3f}" for v in order_kept(reference, candidate, s)) for s in SEPARATIONS]
        print(f"| {name} | {len(data) / 1e6:.2f} MB | {parity['max_abs_err_rel']:.3f} | {parity['mean_abs_err_rel']:.4f} | "
              + " | ".join(cells) + f" | {host_ms(path):.1f} |", flush=True)


if __name__ == "__main__":
    main()
