"""The baseline's reference network: the baseline model with its weights refilled, small enough to live in the
baseline file, so that a check times the new model *against the baseline's own network* in the same run.

Why: a calibration model (``calibration.tflite``, 67 KB) fits in any cache; a 10 MB model does not. On a
busy machine the two slow down differently (seen in CI: the calibration model 1.45x, the default model
1.9x, so the same model "regressed" by 31 %). The baseline's own network meets the same cache pressure,
preemption and memory placement as the new model, and the pair is timed round by round (paired, like A/B).

The reference is the model file byte for byte, except the constant tensors of at least FILL_MIN_BYTES that
hold weights (float or 8/16-bit integer): those are refilled with seeded numbers of the same scale. The
graph, every tensor's shape and the file's layout are the model's; dense kernels take the same time
whatever the weight values, and the baseline records the measured ratio of model to reference anyway.
Stored: the file with those buffers zeroed, xz-compressed (a few KB to a few hundred KB), and one fill
recipe per buffer. The file is data: its bytes are decompressed, refilled and checked against the
recorded sha256; nothing in it is executed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import lzma
import os
from pathlib import Path
from typing import Any

from mobiledepth.errors import UserError

CODEC = "xz+base64"
FILL_MIN_BYTES = 512  # smaller constants (biases of narrow layers, shapes) stay as they are
FILL_SEED = 2026
MAX_REFERENCE_BYTES = 2 << 30  # a damaged or hostile baseline cannot make decompression eat the memory
# TFLite tensor types whose constant buffers are weights that may be refilled (int32/int64 hold shapes,
# sizes, permutations and int8 biases: kept)
WEIGHT_TYPES = {"FLOAT32": "float32", "FLOAT16": "float16", "INT8": "int8", "UINT8": "uint8", "INT16": "int16"}


def _weight_dtypes(model, schema) -> dict[int, str]:
    """Buffer index -> numpy dtype, for buffers that every tensor using them reads as a weight type."""
    type_names = {code: name for name, code in vars(schema.TensorType).items() if not name.startswith("_")}
    kinds: dict[int, set[str | None]] = {}
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            kinds.setdefault(tensor.Buffer(), set()).add(WEIGHT_TYPES.get(type_names.get(tensor.Type())))
    return {index: next(iter(found)) for index, found in kinds.items() if len(found) == 1 and None not in found}


def _buffer_span(buffer) -> tuple[int, int]:
    """(file offset, size in bytes) of a buffer's data: inline in the flatbuffer, or after it (offset/size)."""
    if buffer.Offset() > 1:  # models over 2 GB keep their buffers after the flatbuffer
        return int(buffer.Offset()), int(buffer.Size())
    length = buffer.DataLength()
    if not length:
        return 0, 0
    field = buffer._tab.Offset(4)  # the data vector (generated code's own table access)
    return int(buffer._tab.Vector(field)), int(length)


def weight_spans(data: bytes) -> list[tuple[int, int, str]]:
    """(file offset, bytes, dtype) of every refillable weight buffer of a .tflite flatbuffer, by offset."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    spans = []
    for index, dtype in _weight_dtypes(model, schema).items():
        if 0 <= index < model.BuffersLength():
            offset, size = _buffer_span(model.Buffers(index))
            if size >= FILL_MIN_BYTES and size % itemsize(dtype) == 0:
                spans.append((offset, size, dtype))
    return sorted(spans)


def itemsize(dtype: str) -> int:
    """Bytes per element of a numpy dtype name."""
    import numpy as np

    return np.dtype(dtype).itemsize


def _fill_values(index: int, fill: dict):
    """The seeded numbers that refill one buffer: normal with the weights' scale (float), uniform (integer)."""
    import numpy as np

    rng = np.random.default_rng([FILL_SEED, index])
    count = fill["bytes"] // itemsize(fill["dtype"])
    dtype = np.dtype(fill["dtype"])
    if dtype.kind == "f":
        return (rng.standard_normal(count) * fill["scale"]).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min + 1, info.max, size=count, endpoint=True).astype(dtype)


def _refilled(stripped: bytes, fills: list[dict]) -> bytes:
    data = bytearray(stripped)
    for index, fill in enumerate(fills):
        data[fill["offset"]:fill["offset"] + fill["bytes"]] = _fill_values(index, fill).tobytes()
    return bytes(data)


def make_reference(model_path: str | os.PathLike) -> dict[str, Any]:
    """The ``reference`` section of a baseline: the model with its weights stripped (xz, base64), the fill
    recipe, and the sha256 of the refilled file that ``reference_model`` rebuilds."""
    import numpy as np

    data = bytearray(Path(model_path).read_bytes())
    fills = []
    for offset, size, dtype in weight_spans(bytes(data)):
        values = np.frombuffer(bytes(data[offset:offset + size]), dtype=dtype).astype(np.float64)
        finite = values[np.isfinite(values)]
        fills.append({"offset": offset, "bytes": size, "dtype": dtype,
                      "scale": float(finite.std()) if finite.size else 0.0})
        data[offset:offset + size] = bytes(size)
    stripped = bytes(data)
    return {"codec": CODEC, "sha256": hashlib.sha256(_refilled(stripped, fills)).hexdigest(),
            "bytes": len(stripped), "fills": fills,
            "data": base64.b64encode(lzma.compress(stripped, preset=9)).decode("ascii")}


def reference_model(section: dict, directory: str | os.PathLike, baseline_path: str | os.PathLike) -> Path:
    """Rebuild the reference network of a baseline (``make_reference``) as ``directory``/reference.tflite.

    The section must have passed ``baseline.reference_problem``; damage the checks there cannot see (bad base64 or
    xz, another length, another sha256) is a one-line UserError."""
    fix = f"baseline {baseline_path}: its reference network is damaged"
    try:
        packed = base64.b64decode(section["data"], validate=True)
        decompressor = lzma.LZMADecompressor()
        stripped = decompressor.decompress(packed, max_length=MAX_REFERENCE_BYTES)
    except (binascii.Error, ValueError, lzma.LZMAError) as exc:
        raise UserError(f"{fix} ({exc}); recreate it with --update-baseline") from None
    if len(stripped) != section["bytes"] or not decompressor.eof:
        raise UserError(f"{fix} ({len(stripped)} bytes, recorded {section['bytes']}); "
                        "recreate it with --update-baseline")
    rebuilt = _refilled(stripped, section["fills"])
    if hashlib.sha256(rebuilt).hexdigest() != section["sha256"]:
        raise UserError(f"{fix} (its sha256 differs from the recorded one: another file, or another numpy "
                        "random generator); recreate it with --update-baseline")
    path = Path(directory) / "reference.tflite"
    path.write_bytes(rebuilt)
    return path
