"""PyTorch → ONNX: the TorchScript exporter at opset 17 (fast, one self-contained file); when it
refuses an op, the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, onnxscript), which
decomposes more (e.g. ``adaptive_avg_pool2d`` to sizes that do not divide the input)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from mobiledepth.errors import StageFailed, UserError

INPUT_NAME = "image"
OUTPUT_NAME = "depth"
OPSET = 17
DYNAMO_OPSET = 18  # the dynamo exporter's own opset (it writes 18 and up)
_OPERATOR = re.compile(r"operator '?(?:aten::)?([A-Za-z_][\w.]*)'?")


class OnnxRefused(UserError):
    """Neither ONNX exporter can export the model; ``op`` names the operator the TorchScript one refused."""

    def __init__(self, message: str, op: str | None):
        super().__init__(message)
        self.op = op


@dataclass
class OnnxExport:
    path: Path
    exporter: str             # "torchscript" | "dynamo"
    refused_op: str | None    # what the TorchScript exporter refused, when the dynamo one stepped in


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def refused_operator(exc: BaseException) -> str | None:
    """The operator an exporter error names (``adaptive_avg_pool2d``), if it names one."""
    match = _OPERATOR.search(str(exc))
    return match.group(1).rstrip(".,") if match else None


def _torchscript(model, example, path: Path) -> None:
    import torch

    torch.onnx.export(model, example, str(path), opset_version=OPSET, dynamo=False,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True)


def _environment_failure(exc: BaseException, path: Path) -> bool:
    """The write failed (an OSError, or torch's writer on a disk with under 1 MiB left), not the model."""
    import shutil

    if isinstance(exc, OSError):
        return True
    try:
        return shutil.disk_usage(path.parent).free < (1 << 20)
    except OSError:
        return True


def _dynamo(model, example, path: Path) -> None:
    import logging

    import torch

    quiet = logging.getLogger("torch.onnx")  # it warns about torchvision ops it skips: not ours to show
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
            _dynamo_export(torch, model, example, path)
    finally:
        quiet.setLevel(level)


def _dynamo_export(torch, model, example, path: Path) -> None:
    torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=DYNAMO_OPSET, external_data=False,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], optimize=True, verbose=False)


def export_onnx_any(model, input_size: tuple[int, int], path: str | os.PathLike) -> OnnxExport:
    """Write a checked ONNX file with the TorchScript exporter, or the dynamo one when it refuses;
    OnnxRefused (one line naming the operator) when both fail."""
    import torch

    path = Path(path)
    example = torch.rand(1, 3, *input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            _torchscript(model, example, path)
            exporter, refused = "torchscript", None
        except Exception as exc:  # an op it cannot write: try the exporter that decomposes more
            path.unlink(missing_ok=True)
            if _environment_failure(exc, path):
                raise  # a full disk or a vanished folder is not the exporter's fault: no second try
            refused, first = refused_operator(exc), _first_line(exc)
            try:
                _dynamo(model, example, path)
                exporter = "dynamo"
            except Exception as second:
                path.unlink(missing_ok=True)
                raise OnnxRefused(f"ONNX export refuses {refused or 'the model'} (TorchScript exporter: {first}; "
                                  f"dynamo exporter: {_first_line(second)}); export with --converter litert-torch",
                                  refused) from None
    _check(path)
    return OnnxExport(path, exporter, refused)


def export_onnx(model, input_size: tuple[int, int], path: str | os.PathLike) -> Path:
    """Trace ``model`` (depth-only, eval mode) at batch 1 and write a checked ONNX file."""
    return export_onnx_any(model, input_size, path).path


def _check(path: Path) -> None:
    """onnx.checker (full) and exactly one input and one output, else StageFailed."""
    import onnx

    graph = onnx.load(str(path))
    try:
        onnx.checker.check_model(graph, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise StageFailed(f"the exported ONNX graph is invalid ({str(exc).splitlines()[0]})") from None
    if len(graph.graph.input) != 1 or len(graph.graph.output) != 1:
        raise StageFailed(f"the exported graph has {len(graph.graph.input)} inputs and {len(graph.graph.output)} "
                          "outputs; a deployable depth model has exactly one of each")


def onnx_op_counts(path: str | os.PathLike) -> dict[str, int]:
    """How many nodes of each op type the ONNX graph has."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
