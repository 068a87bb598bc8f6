"""Where int8 loses the depth order: by pair separation, by quantiser, and against the model's own noise floor.

    .venv/bin/python benchmarks/int8_order.py --checkpoint RUN/model.pt --tflite EXPORT/model_int8.tflite \\
        [--model module:factory] [--data DIW_ROOT] [--size 128x128] [--out int8_order.json]

Three measurements on the same images (8 generated scenes, plus 8 test images of ``--data`` when given),
each against the fp32 PyTorch model, ordinal agreement as the export measures it (pairs separated by
>= 0.1 % of the output range, ``mobiledepth.export.parity``):

1. **Separation in output steps** (real TFLite interpreter, ``--tflite``): the int8 output tensor has a
   resolution of one quantisation step (its scale); the pairs are binned by how many steps apart PyTorch puts
   them, with the share kept / tied / flipped in each bin. If the order were lost to output rounding, the
   misses would sit under one step.
2. **Quantiser by quantiser** (PyTorch, the PT2E fake-quantised graph of ``mobiledepth.train.qat``, observers
   calibrated on 64 generated scenes, the export's post-training recipe): every quantiser on; none; weights
   only; activations only; all but the output's; then each quantiser alone (the ranking says which layer's
   rounding costs most order).
3. **The fp32 model's noise floor**: the same fp32 model on the same images plus uniform noise of ±0.5 and
   ±1 grey level (/255) — below what an 8-bit camera image resolves (``mobiledepth.export.parity.
   input_noise_response``: median of 3 seeded draws, the measure the export's fp16 bar uses).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BINS = [(0, 1), (1, 2), (2, 4), (4, 8), (8, 16), (16, None)]


def output_step(path: str) -> float:
    """The quantisation step of the int8 tensor that becomes the model's output (behind a DEQUANTIZE if any)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    output = interpreter.get_output_details()[0]["index"]
    for op in interpreter._get_ops_details():
        if output in op["outputs"]:
            producer = tensors[op["inputs"][0]] if op["op_name"] == "DEQUANTIZE" else tensors[output]
            return float(producer["quantization"][0])
    raise ValueError(f"{path}: no op writes the output tensor")


def separation_table(reference: np.ndarray, candidate: np.ndarray, step: float, pairs: int = 20000) -> list[dict]:
    """Per bin of PyTorch separation (in output steps): share of the pairs, and kept / tied / flipped."""
    rng = np.random.default_rng(0)
    rows = []
    for ref, cand in zip(reference.reshape(len(reference), -1), candidate.reshape(len(candidate), -1)):
        a, b = rng.integers(0, ref.size, pairs), rng.integers(0, ref.size, pairs)
        diff, got = ref[a] - ref[b], cand[a] - cand[b]
        keep = np.abs(diff) >= 1e-3 * (ref.max() - ref.min())
        rows.append(np.stack([np.abs(diff[keep]) / step, np.sign(got[keep]) == np.sign(diff[keep]),
                              got[keep] == 0], axis=1))
    table = np.concatenate(rows)
    out = []
    for low, high in BINS:
        inside = (table[:, 0] >= low) & (table[:, 0] < (high or np.inf))
        kept, tied = table[inside, 1].mean(), table[inside, 2].mean()
        out.append({"steps": f"{low}-{high or 'inf'}", "share": float(inside.mean()), "kept": float(kept),
                    "tied": float(tied), "flipped": float(1 - kept - tied)})
    return out


def quantiser_study(model, size, images: np.ndarray, calibration: np.ndarray, reference: np.ndarray,
                    alone: bool = True) -> dict:
    """Ordinal agreement of the fake-quantised graph with chosen quantisers on (see the module docstring)."""
    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval

    from mobiledepth.export.parity import ordinal_agreement
    from mobiledepth.export.rewrites import phase_split_upsampling
    from mobiledepth.train.qat import prepare_graph

    prepared = prepare_graph(model, size, phase_split_upsampling)
    move_exported_model_to_eval(prepared)
    with torch.no_grad():
        for start in range(0, len(calibration), 8):
            prepared(torch.from_numpy(calibration[start:start + 8]))
    quantisers = {node.target: (node.args[0].name, getattr(prepared, node.target))
                  for node in prepared.graph.nodes if node.op == "call_module"
                  and hasattr(getattr(prepared, node.target), "disable_fake_quant")}
    for _, module in quantisers.values():
        module.disable_observer()

    def agreement(on) -> float:
        for name, (_, module) in quantisers.items():
            (module.enable_fake_quant if on(name) else module.disable_fake_quant)()
        with torch.no_grad():
            return ordinal_agreement(reference, prepared(torch.from_numpy(images)).numpy())

    weights = {n for n, (_, m) in quantisers.items() if m.scale.numel() > 1}  # per-channel = weights
    output = list(quantisers)[-1]
    rows = {"all quantisers (int8 PTQ simulated)": agreement(lambda n: True), "none (fp32, BN folded)": agreement(
        lambda n: False), "weights only": agreement(lambda n: n in weights),
        "activations only": agreement(lambda n: n not in weights), "all but the output's": agreement(
        lambda n: n != output)}
    alone = sorted(({"quantiser": n, "tensor": quantisers[n][0], "weights": n in weights,
                     "ordinal": agreement(lambda m, n=n: m == n)} for n in quantisers if alone),
                   key=lambda r: r["ordinal"])
    return {"quantisers": len(quantisers), "rows": rows, "alone": alone}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--model", default=None, help="module:factory of the checkpoint (your own model)")
    parser.add_argument("--tflite", required=True, help="an int8 TFLite export of the same checkpoint")
    parser.add_argument("--data", default=None, help="DIW-format root: 8 of its test images join the scenes")
    parser.add_argument("--size", default="128x128")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="int8_order.json")
    parser.add_argument("--no-alone", action="store_true", help="skip the one-quantiser-at-a-time study (~200 runs)")
    args = parser.parse_args()

    import torch

    from mobiledepth.export.calibration import generated_images, load_images
    from mobiledepth.export.parity import input_noise_response, ordinal_agreement
    from mobiledepth.export.runtimes import TfliteRuntime, TorchRuntime
    from mobiledepth.export.source import deploy_module, load_model_source
    from mobiledepth.sizes import parse_input_size

    torch.set_num_threads(args.threads)
    size = parse_input_size(args.size)
    model = load_model_source(args.model, checkpoint=args.checkpoint).model
    deployed = deploy_module(model)
    images = generated_images(8, size)
    if args.data:
        images = np.concatenate([images, load_images(Path(args.data) / "DIW_test", 8, size)])
    reference = TorchRuntime(deployed, size)(images)
    candidate = TfliteRuntime(args.tflite, threads=args.threads)(images)
    step = output_step(args.tflite)
    result = {"checkpoint": args.checkpoint, "tflite": args.tflite, "images": len(images),
              "tflite_ordinal": ordinal_agreement(reference, candidate), "output_step": step,
              "output_steps_per_range": float(np.mean(np.ptp(reference.reshape(len(reference), -1), axis=1)) / step),
              "by_separation": separation_table(reference, candidate, step),
              "noise_floor": {f"±{k}/255": input_noise_response(TorchRuntime(deployed, size), images, reference,
                                                                 k)["ordinal_agreement"] for k in (0.5, 1.0)},
              "quantisers": quantiser_study(deployed, size, images, generated_images(64, size), reference,
                                            alone=not args.no_alone)}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "quantisers"}, indent=1))
    print(json.dumps(result["quantisers"]["rows"], indent=1))
    for row in result["quantisers"]["alone"][:10]:
        print(f"  alone {row['ordinal']:.4f} {row['tensor']} ({'weights' if row['weights'] else 'activations'})")


if __name__ == "__main__":
    main()
