"""PyTorch → ONNX (the TorchScript exporter at opset 17: fast, one self-contained file)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from mobiledepth.errors import StageFailed

INPUT_NAME = "image"
OUTPUT_NAME = "depth"
OPSET = 17


def export_onnx(model, input_size: tuple[int, int], path: str | os.PathLike) -> Path:
    """Trace ``model`` (depth-only, eval mode) at batch 1 and write a checked ONNX file."""
    import onnx
    import torch

    path = Path(path)
    example = torch.rand(1, 3, *input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(path), opset_version=OPSET, dynamo=False,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True)
    graph = onnx.load(str(path))
    try:
        onnx.checker.check_model(graph, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise StageFailed(f"the exported ONNX graph is invalid ({str(exc).splitlines()[0]})") from None
    if len(graph.graph.input) != 1 or len(graph.graph.output) != 1:
        raise StageFailed(f"the exported graph has {len(graph.graph.input)} inputs and {len(graph.graph.output)} "
                          "outputs; a deployable depth model has exactly one of each")
    return path


def onnx_op_counts(path: str | os.PathLike) -> dict[str, int]:
    """How many nodes of each op type the ONNX graph has."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
