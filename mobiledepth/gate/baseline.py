"""Baseline files and model identity: what a baseline knows a model by, and reading one safely.

A baseline (``--update-baseline``) records the model's identity (sha256, spec hash, precision,
input size), the host, every timing of the model, of its reference network (``gate.reference``) and
of the calibration model, and the reference network itself. Reading one
validates every field it uses and names the first bad one.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Sequence

from mobiledepth.errors import UserError
from mobiledepth.records import new_record, read_export_record
from mobiledepth.gate.verdict import MIN_SAMPLES, median

BASELINE_KIND = "latency_baseline"


def tflite_signature(path: str | os.PathLike) -> dict[str, Any]:
    """Input shapes and dtypes, input size ``[H, W]`` and precision of a .tflite model, read off the file."""
    from ai_edge_litert.interpreter import Interpreter

    from mobiledepth.export.runtimes import tflite_precision

    try:
        interpreter = Interpreter(model_path=str(path))
        details = interpreter.get_input_details()
        precision = tflite_precision(interpreter)
    except Exception as exc:
        raise UserError(f"cannot read {path} as a TFLite model ({str(exc).splitlines()[0]})") from None
    shapes = [list(map(int, d["shape"])) for d in details]
    return {"input_shapes": shapes, "input_dtypes": [getattr(d["dtype"], "__name__", str(d["dtype"])) for d in details],
            "input_size": _image_size(shapes[0]) if shapes else None, "precision": precision}


def _image_size(shape: list[int]) -> list[int] | None:
    """``[H, W]`` of an NHWC or NCHW image input (3 or fewer channels last means NHWC)."""
    if len(shape) != 4:
        return None
    return shape[1:3] if shape[-1] <= 4 else shape[2:4]


def _export_listing(path: Path, sha256: str) -> dict[str, Any]:
    """Spec hash and precision from the export.json beside ``path``, if it lists a TFLite file with this sha256.

    The record is data: fields of the wrong type are ignored, nothing in it is run."""
    try:
        record = read_export_record(path.parent / "export.json")
    except UserError:
        return {}
    artifact = record.tflite_artifact(sha256)
    if artifact is None:
        return {}
    return {key: value for key, value in (("spec_hash", record.model.get("spec_hash")), ("precision", artifact.get("precision")))
            if isinstance(value, str) and value}


def model_identity(path: str | os.PathLike) -> dict[str, Any]:
    """What a baseline knows a model by: sha256, spec hash, precision, input size (plus input shapes / dtypes).

    The spec hash (and the precision, when present) come from the export.json beside the file when it
    lists this very file (matched by sha256, not by name: every export is called model_fp32.tflite);
    without one the spec hash is None. Input size and, failing export.json, precision are read off the file."""
    from mobiledepth.io import sha256_file

    file = Path(path)
    sha256 = sha256_file(file)
    signature = tflite_signature(file)
    listed = _export_listing(file, sha256)
    return {"sha256": sha256, "spec_hash": listed.get("spec_hash"), **signature,
            "precision": listed.get("precision", signature["precision"])}


IDENTITY_FIELDS = ("sha256", "spec_hash", "precision", "input_size")


def has_identity(recorded: dict) -> bool:
    """Whether a baseline's model section carries the identity fields (baselines made before them do not)."""
    return all(key in recorded for key in IDENTITY_FIELDS)


def _size_text(size: Sequence[int] | None) -> str:
    return "x".join(map(str, size)) if size else "unknown"


def model_differences(recorded: dict, identity: dict, fields: Sequence[str], other: str = "baseline") -> list[str]:
    """What differs in ``fields`` (of ``network``, ``precision``, ``input_size``) between the
    ``other`` (recorded) model and this one; empty when they are the same file (same sha256)."""
    if recorded.get("sha256") == identity["sha256"]:
        return []
    differences = []
    old_spec, new_spec = recorded.get("spec_hash"), identity.get("spec_hash")
    if "network" in fields and old_spec and new_spec and old_spec != new_spec:
        differences.append(f"another network (spec hash {new_spec[:12]}, {other} {old_spec[:12]})")
    if "precision" in fields and recorded.get("precision") != identity["precision"]:
        differences.append(f"precision {identity['precision']} ({other} {recorded.get('precision')})")
    if "input_size" in fields and list(recorded.get("input_size") or []) != list(identity["input_size"] or []):
        differences.append(f"input size {_size_text(identity['input_size'])} "
                           f"({other} {_size_text(recorded.get('input_size'))})")
    return differences


def model_name_for(path: Path, explicit: str | None, store_path: str | os.PathLike | None) -> str:
    """The model's name: ``--model-name``, else the store's record for its sha256, else the file name."""
    if explicit:
        return explicit
    from mobiledepth.io import sha256_file
    from mobiledepth.store import default_store_path, open_store

    candidate = Path(store_path) if store_path else default_store_path()
    if candidate.is_file():
        with open_store(candidate) as store:
            name = store.model_name_of(sha256_file(path))
        if name:
            return name
    return path.name


def _host_info() -> dict[str, Any]:
    return {"machine": platform.machine(), "processor": platform.processor() or None,
            "system": platform.system(), "cpu_count": os.cpu_count(), "node": platform.node()}


def baseline_record(model: Path, name: str, identity: dict, calib: Path, repeat: int, threads: int, runs: int,
                    warmup: int, model_samples: list[float], calib_samples: list[float], reference: dict) -> dict:
    """The baseline file's content: the model's identity, the host, every timing, and the reference network
    (``gate.reference.make_reference`` plus its ``samples_us`` and the median per-round ``model_ratio``)."""
    from mobiledepth.io import sha256_file

    return {
        **new_record(BASELINE_KIND),
        "model": {"name": name, "file": model.name, **identity},
        "calibration": {"sha256": sha256_file(calib), "median_us": median(calib_samples), "repeat": repeat},
        "threads": threads, "runs": runs, "warmup": warmup, "host": _host_info(),
        "median_us": median(model_samples), "relative_to_calibration": median(model_samples) / median(calib_samples),
        "samples_us": model_samples, "calibration_samples_us": calib_samples, "reference": reference,
    }


# what a baseline must hold (field -> type); the model's identity fields are optional (older baselines)
BASELINE_FIELDS = {"model": dict, "calibration": dict, "threads": int, "samples_us": list,
                   "calibration_samples_us": list}
BASELINE_MODEL_FIELDS = {"name": str, "sha256": str, "input_shapes": list, "input_dtypes": list}
BASELINE_CALIBRATION_FIELDS = {"sha256": str}


def _field_problem(section: dict, fields: dict[str, type], prefix: str = "") -> str | None:
    """The first field of ``fields`` that ``section`` lacks or holds with another type (a ``float`` field takes
    any number: JSON writes 1.0 as 1 in other tools; booleans are never numbers)."""
    for key, kind in fields.items():
        if key not in section:
            return f"no '{prefix}{key}' field"
        value = section[key]
        accepted = (int, float) if kind is float else kind
        if not isinstance(value, accepted) or (kind in (int, float) and isinstance(value, bool)):
            return f"'{prefix}{key}' is {type(value).__name__} {value!r:.40}, not {kind.__name__}"
    return None


def _samples_problem(key: str, values: list) -> str | None:
    """Why a list of timings (µs) cannot be compared with: empty, too short, not positive numbers."""
    if not values:
        return f"'{key}' is empty"
    for value in values:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value <= 0:
            return f"'{key}' holds {value!r:.40}, not a positive number of microseconds"
    if len(values) < MIN_SAMPLES:
        return f"'{key}' holds {len(values)} timings, fewer than the {MIN_SAMPLES} needed"
    return None


def _identity_problem(recorded: dict) -> str | None:
    """A model identity field of the wrong type (they are optional; present ones must be well formed)."""
    for key in ("spec_hash", "precision"):
        if recorded.get(key) is not None and not isinstance(recorded[key], str):
            return f"'model.{key}' is {type(recorded[key]).__name__}, not a string"
    size = recorded.get("input_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        return f"'model.input_size' is {size!r:.40}, not [height, width]"
    return None


def baseline_problem(data: dict) -> str | None:
    """The first thing that makes a baseline unusable, naming the field; None when it is usable."""
    problem = (_field_problem(data, BASELINE_FIELDS)
               or _field_problem(data["model"], BASELINE_MODEL_FIELDS, "model.")
               or _field_problem(data["calibration"], BASELINE_CALIBRATION_FIELDS, "calibration."))
    if problem:
        return problem
    if data["threads"] < 1:
        return f"'threads' is {data['threads']}, not a positive count"
    repeat = data["calibration"].get("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        return f"'calibration.repeat' is {repeat!r:.40}, not a positive count"
    return (_samples_problem("samples_us", data["samples_us"])
            or _samples_problem("calibration_samples_us", data["calibration_samples_us"])
            or _identity_problem(data["model"])
            or ("reference" in data and _reference_section_problem(data["reference"])) or None)


REFERENCE_FIELDS = {"codec": str, "sha256": str, "bytes": int, "fills": list, "data": str}
FILL_FIELDS = {"offset": int, "bytes": int, "dtype": str, "scale": float}


def reference_problem(section: Any) -> str | None:
    """Why a reference network section (``gate.reference.make_reference``) is unusable, naming the field."""
    from mobiledepth.gate.reference import CODEC, WEIGHT_TYPES, itemsize

    if not isinstance(section, dict):
        return f"'reference' is {type(section).__name__}, not an object"
    problem = _field_problem(section, REFERENCE_FIELDS, "reference.")
    if problem:
        return problem
    if section["codec"] != CODEC:
        return f"'reference.codec' is {section['codec']!r:.40}, not {CODEC!r}"
    for fill in section["fills"]:
        if not isinstance(fill, dict):
            return f"'reference.fills' holds {fill!r:.60}, not {{offset, bytes, dtype, scale}}"
        problem = _field_problem(fill, FILL_FIELDS, "reference.fills[].")
        if problem:
            return problem
        if fill["dtype"] not in WEIGHT_TYPES.values() or fill["offset"] < 0 or fill["bytes"] < 0 \
                or fill["offset"] + fill["bytes"] > section["bytes"] or fill["bytes"] % itemsize(fill["dtype"]):
            return f"'reference.fills' holds {fill!r:.60}, outside the file or of an unknown type"
    return None


def _reference_section_problem(section: Any) -> str | None:
    """What is wrong with a baseline's reference network section (optional: older baselines have none)."""
    problem = reference_problem(section) or _field_problem(section, {"model_ratio": float, "samples_us": list},
                                                          "reference.")
    if problem:
        return problem
    if not math.isfinite(section["model_ratio"]) or section["model_ratio"] <= 0:
        return f"'reference.model_ratio' is {section['model_ratio']!r:.40}, not a positive number"
    return _samples_problem("reference.samples_us", section["samples_us"])


def read_baseline(path: str | os.PathLike) -> dict:
    """Load and validate a baseline file (a one-line UserError naming the field when it is unusable)."""
    file = Path(path)
    fix = "recreate it with --update-baseline"
    if not file.is_file():
        raise UserError(f"baseline {file} does not exist; create it with --update-baseline")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"baseline {file} is not JSON ({exc}); {fix}") from None
    except OSError as exc:
        raise UserError(f"cannot read baseline {file} ({os.strerror(exc.errno or 0).lower()}); "
                        "check its permissions") from None
    if not isinstance(data, dict) or data.get("kind") != BASELINE_KIND:
        raise UserError(f"{file} is not a latency baseline (kind {data.get('kind') if isinstance(data, dict) else None!r}); "
                        "create one with --update-baseline")
    if data.get("schema") != 1:
        raise UserError(f"baseline {file} has schema {data.get('schema')!r}; this mobiledepth reads schema 1")
    problem = baseline_problem(data)
    if problem:
        raise UserError(f"baseline {file}: {problem}; {fix}")
    return data


def _legacy_differences(recorded: dict, identity: dict, name: str) -> list[str]:
    """How a model differs from a baseline that lacks identity fields: by name, input shape and type."""
    differences = []
    if name != recorded["name"]:
        differences.append(f"model '{name}' (baseline '{recorded['name']}')")
    if identity["input_shapes"] != recorded["input_shapes"]:
        differences.append(f"input shape {identity['input_shapes']} (baseline {recorded['input_shapes']})")
    if identity["input_dtypes"] != recorded["input_dtypes"]:
        differences.append(f"input type {identity['input_dtypes']} (baseline {recorded['input_dtypes']})")
    return differences


def match_baseline_model(baseline: dict, baseline_path: str | os.PathLike, identity: dict, name: str,
                         allow_different_model: bool = False) -> list[str]:
    """Refuse (UserError) a baseline made for another model unless ``allow_different_model``; return warnings.

    Same sha256: the same model. Else a spec hash that differs is another network; precision and
    input size must agree. Without a spec hash on either side, or for a baseline without identity
    fields (made by an older mobiledepth), the name decides as before, with a warning."""
    recorded, warnings = baseline["model"], []
    if not has_identity(recorded):
        warnings.append(f"baseline {baseline_path} does not record the model's identity (sha256, spec hash, "
                        "precision, input size); compared by name and input shape; recreate it with --update-baseline")
        differences = _legacy_differences(recorded, identity, name)
    else:
        differences = model_differences(recorded, identity, ("network", "precision", "input_size"))
        if recorded["sha256"] != identity["sha256"] and not (recorded["spec_hash"] and identity["spec_hash"]):
            missing = "this model (no export.json beside it lists it)" if recorded["spec_hash"] else "the baseline"
            warnings.append(f"no spec hash for {missing}, so the network is matched by name ('{name}')")
            if name != recorded["name"]:
                differences.insert(0, f"model '{name}' (baseline '{recorded['name']}')")
    if differences and not allow_different_model:
        raise UserError(f"baseline {baseline_path} was made for another model: {'; '.join(differences)}; pass the "
                        "baseline of this model, recreate it with --update-baseline, or pass --allow-different-model")
    if differences:
        warnings.append("compared with a baseline of another model (--allow-different-model): "
                        + "; ".join(differences))
    return warnings


def match_ab_models(new: Path, old: Path, allow_different_model: bool = False) -> list[str]:
    """A/B: refuse (UserError) models of another precision or input size unless ``allow_different_model``.

    Different networks are what A/B compares; timing fp16 against fp32, or 256x256 against 128x128,
    measures the precision or the size instead. Returns warnings."""
    from mobiledepth.io import sha256_file

    if sha256_file(new) == sha256_file(old):
        return []
    differences = model_differences(model_identity(old), model_identity(new), ("precision", "input_size"),
                                    other="--against")
    if differences and not allow_different_model:
        raise UserError(f"{new} and {old} do not do the same work: {'; '.join(differences)}; export both at one "
                        "precision and input size, or pass --allow-different-model to compare anyway")
    return [f"compared models that do different work (--allow-different-model): {'; '.join(differences)}"] \
        if differences else []
