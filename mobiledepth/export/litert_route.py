"""PyTorch → TFLite directly with litert-torch (no ONNX, no TensorFlow): the second converter route.

The deployed module (rewrites applied, so the phase-split upsampling reaches this route too) is
captured with ``torch.export`` into a ``.pt2`` file; a guarded child (``mobiledepth.child``)
loads it, wraps it for NHWC input and output (``litert_torch.to_channel_last_io``, like the
onnx2tf route's artifacts), converts it to fp32 and derives the other precisions from that
flatbuffer with ai-edge-quantizer: fp16 weights (float casting), int8 / int16x8 (static,
calibrated on the export's images; float input and output). A converter crash cannot take the
export down, and the full log (``litert-torch.log``) is kept beside the artifacts.

int8 from a QAT checkpoint (``mobiledepth train --qat``): the checkpoint holds the PT2E-quantised
program (``convert_pt2e`` of the fine-tuned graph, exact rewrites included); the child converts it
with ``litert_torch.convert(..., quant_config=QuantConfig(pt2e_quantizer=...))``, which lowers the
quantise / dequantise pairs to integer kernels: int8 weights and activations, float input (quantised
inside), int8 output. No calibration here: the ranges are the ones trained.

Usage of the child: python -m mobiledepth.export.litert_route GRAPH.pt2 OUT_DIR PRECISIONS [IMAGES.npy|-] [QAT.pt2]
"""

from __future__ import annotations

import io

import importlib.util
import os
import sys
from pathlib import Path

ROUTE = "litert-torch"
LOG_NAME = "litert-torch.log"
SIGNATURE_INPUT = "args_0"  # the input name litert-torch gives the first positional argument


def installed() -> bool:
    """litert-torch and ai-edge-quantizer can be imported here (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("litert_torch", "ai_edge_quantizer"))


def convert_with_litert_torch(graph, input_size: tuple[int, int], work_dir: Path, precisions: list[str],
                              images_nchw=None, timeout_s: float = 1800, qat_program: bytes | None = None
                              ) -> dict[str, Path]:
    """Convert ``graph`` (NCHW in, depth out); returns the TFLite path per precision made. With
    ``qat_program`` (a QAT checkpoint's quantised program) int8 comes from it instead of ai-edge-quantizer."""
    import numpy as np
    import torch

    from mobiledepth.child import run_child
    from mobiledepth.errors import StageFailed
    from mobiledepth.export.tflite import _child_failure

    work_dir.mkdir(parents=True, exist_ok=True)
    program = work_dir / "graph.pt2"
    try:
        with torch.no_grad():
            exported = torch.export.export(graph.eval(), (torch.rand(1, 3, *input_size),), strict=False)
    except Exception as exc:  # the graph cannot be captured: no TFLite from this route
        raise StageFailed(f"torch.export cannot capture the model ({(str(exc).splitlines() or [''])[0][:200]})") from None
    buffer = io.BytesIO()  # torch's zip writer aborts the process on a full disk: serialise in memory,
    torch.export.save(exported, buffer)  # then write with Python, which raises a plain ENOSPC instead
    program.write_bytes(buffer.getvalue())
    command = [sys.executable, "-m", "mobiledepth.export.litert_route", str(program), str(work_dir / "litert"),
               ",".join(precisions)]
    if images_nchw is not None and any(p in ("int8", "int16x8") for p in precisions):
        np.save(work_dir / "calibration.npy", images_nchw.transpose(0, 2, 3, 1).astype(np.float32))
        command.append(str(work_dir / "calibration.npy"))
    if qat_program is not None and "int8" in precisions:
        (work_dir / "qat_int8.pt2").write_bytes(qat_program)
        command += ["-"] * (len(command) == 6) + [str(work_dir / "qat_int8.pt2")]
    log = work_dir / LOG_NAME
    code = run_child(command, log, timeout_s, "litert-torch", env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    produced = {p: work_dir / "litert" / f"model_{p}.tflite" for p in precisions}
    if code != 0 or not all(path.exists() for path in produced.values()):
        raise _child_failure("litert-torch", code, log)
    return produced


def _convert_fp32(program: str, out: Path) -> None:
    import litert_torch
    import torch

    module = torch.export.load(program).module()
    _, _, height, width = next(n for n in module.graph.nodes if n.op == "placeholder").meta["val"].shape
    nhwc = litert_torch.to_channel_last_io(module, args=[0], outputs=[0])
    litert_torch.convert(nhwc, (torch.rand(1, height, width, 3),)).export(str(out))


def _convert_qat_int8(program: str, out: Path) -> None:
    """Full-integer TFLite from a PT2E-quantised program (NHWC I/O), through litert-torch's PT2E path with
    the symmetric per-channel config the program was prepared with (mobiledepth.train.qat.quantizer)."""
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig

    module = torch.export.load(program).module()
    _, _, height, width = next(n for n in module.graph.nodes if n.op == "placeholder").meta["val"].shape
    config = QuantConfig(pt2e_quantizer=PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_qat=True)))
    nhwc = litert_torch.to_channel_last_io(module, args=[0], outputs=[0])
    litert_torch.convert(nhwc, (torch.rand(1, height, width, 3),), quant_config=config).export(str(out))


def _quantize(fp32: Path, precision: str, out: Path, images_path: str | None) -> None:
    """fp16 weights (float casting) or static int8 / int16x8 of the fp32 flatbuffer, with ai-edge-quantizer."""
    import numpy as np
    from ai_edge_quantizer import qtyping, quantizer, recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    q = quantizer.Quantizer(str(fp32))
    calibration = None
    if precision == "fp16":
        q.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                 granularity=qtyping.QuantGranularity.TENSORWISE,
                                 algorithm_key=AlgorithmName.FLOAT_CASTING)
    else:
        q.load_quantization_recipe(recipe.static_wi8_ai8() if precision == "int8" else recipe.static_wi8_ai16())
        images = np.load(images_path)
        calibration = q.calibrate({"serving_default": [{SIGNATURE_INPUT: image[None]} for image in images]})
    q.quantize(calibration).export_model(str(out), overwrite=True)


def main(program: str, out_dir: str, precisions: str, images_path: str | None = None,
         qat_program: str | None = None) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fp32 = out / "model_fp32.tflite"
    _convert_fp32(program, fp32)
    for precision in (p for p in precisions.split(",") if p != "fp32"):
        if precision == "int8" and qat_program:
            _convert_qat_int8(qat_program, out / "model_int8.tflite")
        else:
            _quantize(fp32, precision, out / f"model_{precision}.tflite", None if images_path == "-" else images_path)


if __name__ == "__main__":
    main(*sys.argv[1:6])
