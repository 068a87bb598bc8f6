"""int8 recipes on a trained model: PTQ as today, PTQ calibrated on the training distribution, QAT.

    .venv/bin/python benchmarks/int8_recipes.py --checkpoint RUN/model.pt --qat QAT_RUN/model.pt \\
        --data DATA_ROOT [--model module:factory] [--size 128x128] [--threads 1] [--out DIR]

Runs in the main environment (no TensorFlow in this process): every row is a real
``mobiledepth export --converter litert-torch --precision fp32,int8`` of the same trained weights:

- ``ptq-generated``: ai-edge-quantizer static int8, calibrated on 64 generated scenes (the default);
- ``ptq-train-dist``: the same, calibrated on 64 images of the training split (``--calibration-data``);
- ``qat``: the QAT checkpoint's PT2E program, converted by litert-torch's PT2E path.

Per row, from the export's own ``int8_bars``: ordinal agreement against PyTorch fp32 on the parity
images; int8/fp32 median latency, 2 threads, interleaved in the same rounds; WHDR of the fp32 and int8
TFLite files on the held-out split (``--eval-data``, i.e. ``mobiledepth eval`` in a child); and the file
size. ``--rows`` runs a subset (each row is a whole export: minutes on a loaded 2-core machine).
``--model module:factory`` for your own model's checkpoints (e.g. ``benchmarks.public_models:basic_unet``);
the load average (``os.getloadavg``) before and after each row is recorded beside its latency ratio, which
is only meaningful on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_row(name: str, checkpoint: str, calibration: str | None, size, out: Path, data: Path,
            model: str | None = None) -> dict:
    """Export fp32 + int8 and measure both against the bars; returns the table row."""
    import os

    from mobiledepth.export import export_model

    load_before = os.getloadavg()[0]
    result = export_model(model=model, checkpoint=checkpoint, input_size=size, precisions="fp32,int8",
                          out=out / name, converter="litert-torch", calibration_data=calibration, store=False,
                          eval_data=data)
    bars = result.record["int8_bars"]
    arts = {a["precision"]: a for a in result.artifacts if a["format"] == "tflite"}
    whdr = bars["whdr_delta"]
    return {"row": name, "ordinal": bars["ordinal_agreement"]["value"], "whdr_fp32": whdr["whdr_fp32_tflite"],
            "whdr_int8": whdr["whdr_int8"], "whdr_delta": whdr["value"],
            "latency_ratio": bars["latency_ratio"]["value"], "size_mb": arts["int8"]["size_bytes"] / 1e6,
            "fp32_size_mb": arts["fp32"]["size_bytes"] / 1e6, "load_1min": [load_before, os.getloadavg()[0]],
            "warnings": result.warnings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="the trained fp32 checkpoint")
    parser.add_argument("--qat", default=None, help="its 'mobiledepth train --qat' checkpoint (for the qat row)")
    parser.add_argument("--data", required=True, help="DIW-format root with train and test splits")
    parser.add_argument("--model", default=None, help="module:factory of the checkpoints (your own model)")
    parser.add_argument("--size", default="128x128")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of this process")
    parser.add_argument("--out", default="/tmp/int8_recipes")
    parser.add_argument("--rows", default="ptq-generated,ptq-train-dist,qat", help="which rows to run")
    args = parser.parse_args()

    import torch

    from mobiledepth.sizes import parse_input_size

    if "qat" in args.rows.split(",") and not args.qat:
        parser.error("the qat row needs --qat QAT_RUN/model.pt (or --rows ptq-generated,ptq-train-dist)")
    if args.threads:
        torch.set_num_threads(args.threads)
    size, out, data = parse_input_size(args.size), Path(args.out), Path(args.data)
    recipes = {"ptq-generated": (args.checkpoint, None), "ptq-train-dist": (args.checkpoint, str(data / "DIW_train")),
               "qat": (args.qat, None)}
    rows = [run_row(name, *recipes[name], size=size, out=out, data=data, model=args.model)
            for name in args.rows.split(",")]
    (out / "int8_recipes.json").write_text(json.dumps(rows, indent=1))
    print("| recipe | ordinal agreement (≥ 0.99) | WHDR fp32 TFLite | WHDR int8 | Δ WHDR (≤ 0.005) "
          "| int8/fp32 latency (≤ 0.6) | load avg (1 min) | int8 size |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {r['ordinal']:.4f} | {r['whdr_fp32']:.4f} | {r['whdr_int8']:.4f} | {r['whdr_delta']:+.4f} "
              f"| {r['latency_ratio']:.2f} | {r['load_1min'][0]:.2f}–{r['load_1min'][1]:.2f} | {r['size_mb']:.2f} MB (fp32 {r['fp32_size_mb']:.2f} MB) |")


if __name__ == "__main__":
    main()
