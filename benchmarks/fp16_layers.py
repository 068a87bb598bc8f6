"""Where the fp16 artifact's error comes from: per-layer fp16 weight rounding against the model's own noise floor.

    .venv/bin/python benchmarks/fp16_layers.py --checkpoint RUN/model.pt [--model module:factory] [--size 256x256]
        [--images 4] [--tflite RUN/model_fp16.tflite] [--no-layers] [--out fp16_layers.json]

A TFLite fp16 artifact stores fp16 weights that the CPU dequantises to fp32 (XNNPACK computes in fp32), so
its error is the rounding of the weights alone. This script measures, against the fp32 PyTorch model on the
export's parity images (generated scenes):

- every conv's weights rounded to fp16 at once (the artifact, simulated in PyTorch), and the real ``--tflite``
  file when given — the two should agree;
- each conv's weights rounded alone (which layer costs most), and how much of the total the worst ones carry;
- the fp32 model's own response to imperceptible input noise (uniform ±0.5/255 and ±1/255, below one grey
  level of an 8-bit camera image; median of 3 seeded draws): the noise floor any reduced precision is compared
  with — measured by the export's own ``mobiledepth.export.parity.input_noise_response``, whose ±0.5/255 figure
  is a trained checkpoint's fp16 bar.

Errors are the export's parity measures (``mobiledepth.export.parity.measure_parity``): max and mean |error|
relative to each image's output range, ordinal agreement on pairs separated by >= 0.1 % of the range.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def fp16_rounded(model, names: set[str] | None = None, keep: set[str] = frozenset()):
    """A copy of ``model`` whose conv weights (all, or those in ``names``; never those in ``keep``) are rounded to
    fp16 and back."""
    import copy

    import torch

    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for name, module in rounded.named_modules():
            if isinstance(module, torch.nn.Conv2d) and (names is None or name in names) and name not in keep:
                module.weight.copy_(module.weight.half().float())
    return rounded


def summary(parity: dict) -> dict:
    return {k: parity[k] for k in ("max_abs_err_rel", "mean_abs_err_rel", "ordinal_agreement")}


def measure(args) -> dict:
    """Every row of the study (see the module docstring)."""
    import torch

    from mobiledepth.export.calibration import generated_images
    from mobiledepth.export.parity import input_noise_response, measure_parity
    from mobiledepth.export.runtimes import TfliteRuntime, TorchRuntime
    from mobiledepth.export.source import deploy_module, load_model_source
    from mobiledepth.sizes import parse_input_size

    torch.set_num_threads(args.threads)
    size = parse_input_size(args.size)
    source = load_model_source(args.model, checkpoint=args.checkpoint)
    images = generated_images(args.images, size)

    def run(model, x=images):
        return TorchRuntime(deploy_module(model), size)(x)

    reference = run(source.model)
    rows = {"all conv weights fp16 (torch)": summary(measure_parity(reference, run(fp16_rounded(source.model)), "fp16"))}
    if args.tflite:
        rows["TFLite fp16 artifact"] = summary(measure_parity(reference, TfliteRuntime(args.tflite)(images), "fp16"))
    for grey_levels in (0.5, 1.0):
        rows[f"fp32, input noise ±{grey_levels}/255"] = summary(input_noise_response(
            lambda x: run(source.model, x), images, reference, grey_levels))
    convs = [n for n, m in source.model.named_modules() if isinstance(m, torch.nn.Conv2d) and args.layers]
    layers = sorted(({"layer": name, **summary(measure_parity(reference, run(fp16_rounded(source.model, {name})),
                                                               "fp16"))} for name in convs),
                    key=lambda row: -row["max_abs_err_rel"])
    for count in range(1, min(args.keep, len(layers)) + 1):  # the fix tried: the worst layers' weights kept in fp32
        kept = {row["layer"] for row in layers[:count]}
        rows[f"fp16 but the worst {count} conv(s) fp32"] = summary(measure_parity(
            reference, run(fp16_rounded(source.model, keep=kept)), "fp16"))
    return {"checkpoint": args.checkpoint, "size": list(size), "images": args.images, "rows": rows,
            "layers": layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--images", type=int, default=4, help="parity images (generated scenes), as the export uses")
    parser.add_argument("--tflite", default=None, help="the exported model_fp16.tflite of the same checkpoint")
    parser.add_argument("--model", default=None, help="module:factory of the checkpoint (your own model)")
    parser.add_argument("--no-layers", dest="layers", action="store_false",
                        help="skip the conv-by-conv rows (the whole-model rows and the noise floor only)")
    parser.add_argument("--keep", type=int, default=3, help="rows with the worst 1..N convs kept in fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="fp16_layers.json")
    args = parser.parse_args()
    result = measure(args)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("| what | max err / range | mean err / range | ordinal agreement |\n|---|---|---|---|")
    for name, row in result["rows"].items():
        print(f"| {name} | {row['max_abs_err_rel']:.2e} | {row['mean_abs_err_rel']:.2e} | {row['ordinal_agreement']:.4f} |")
    print("\nworst layers alone (fp16 weights in that layer only):")
    for row in result["layers"][:8]:
        print(f"  {row['layer']}: max {row['max_abs_err_rel']:.2e} mean {row['mean_abs_err_rel']:.2e} "
              f"ordinal {row['ordinal_agreement']:.4f}")


if __name__ == "__main__":
    main()
