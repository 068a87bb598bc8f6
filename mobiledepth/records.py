"""Every JSON record mobiledepth writes: its kind, its envelope, one constructor and one reader.

A record is a plain dict, written as JSON as it is, whose envelope is ``kind`` / ``schema`` /
``created_at``. ``created_at`` is UTC to the second with a ``Z`` (android_bench's ``utc_now``);
readers also accept the ``+00:00`` form that records written before carry. The bench results
inside a bench record are android_bench's ``new_result`` dicts: that function is their one
definition (android_bench cannot import this module), and the store's columns are derived from it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from mobiledepth.errors import UserError

RECORD_SCHEMA = 1  # the newest record schema this mobiledepth writes and reads


@dataclass(frozen=True)
class RecordKind:
    """One kind of record: the fields every reader needs, the file a stage writes it to, and who writes it."""

    name: str
    required: tuple[str, ...]
    made_by: str
    file: str | None = None
    schema: int = RECORD_SCHEMA


RECORD_KINDS: dict[str, RecordKind] = {kind.name: kind for kind in (
    RecordKind("export", ("artifacts",), "mobiledepth export", "export.json"),
    RecordKind("bench", ("results",), "mobiledepth bench", "bench.json"),
    RecordKind("eval", ("metric", "value"), "mobiledepth eval", "eval.json"),
    RecordKind("train", ("model", "steps", "stopped"), "mobiledepth train", "train.json"),
    RecordKind("prune", ("model", "device", "delegate", "target_ms", "created_at", "iterations"),
               "mobiledepth prune", "prune.json"),
    RecordKind("lut", ("format", "entries"), "mobiledepth lut build"),
    RecordKind("lut_validation", ("table", "rows"), "mobiledepth lut validate", "validation.json"),
    RecordKind("latency_baseline", ("model", "calibration", "threads", "samples_us", "calibration_samples_us"),
               "mobiledepth check --update-baseline"),
    RecordKind("store_export", ("records",), "mobiledepth store export"),
)}


def utc_timestamp() -> str:
    """Now, in the one timestamp style of every record: ``2026-11-24T10:00:00Z``."""
    from android_bench.result import utc_now

    return utc_now()


def parse_timestamp(text: str) -> datetime:
    """A record timestamp (``...Z`` or the older ``...+00:00``) as an aware datetime; ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a timestamp")
    parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return parsed


def _kind(name: str) -> RecordKind:
    if name not in RECORD_KINDS:
        raise ValueError(f"not a record kind: {name!r}; expected one of {', '.join(RECORD_KINDS)}")
    return RECORD_KINDS[name]


def new_record(kind: str, **fields: Any) -> dict[str, Any]:
    """A record of ``kind``: the envelope (``created_at`` now unless given), then ``fields`` in order."""
    return {"kind": kind, "schema": _kind(kind).schema, "created_at": utc_timestamp(), **fields}


def require_fields(record: Any, keys: Iterable[str], what: str) -> None:
    """A one-line UserError when ``record`` is not a JSON object or lacks one of ``keys``."""
    if not isinstance(record, dict):
        raise UserError(f"{what} is {type(record).__name__}, not a JSON object; is it a mobiledepth record?")
    missing = [key for key in keys if key not in record]
    if missing:
        raise UserError(f"{what} lacks {', '.join(missing)}; is it a mobiledepth record (schema {RECORD_SCHEMA})?")


def check_record(record: Any, expected_kind: str | None = None) -> RecordKind:
    """Validate the envelope and the required fields of a record; return its kind (one-line UserError).

    ``schema``, when present, must be one this mobiledepth reads; ``created_at``, when present, a timestamp."""
    if not isinstance(record, dict) or "kind" not in record:
        raise UserError("not a mobiledepth record (no 'kind'); pass an export.json, bench.json, prune.json or eval record")
    name = record["kind"]
    if expected_kind is not None and name != expected_kind:
        article = "an" if expected_kind[0] in "aeiou" else "a"
        raise UserError(f"not {article} {expected_kind} record (kind={name!r}); re-run '{_kind(expected_kind).made_by}'")
    if name not in RECORD_KINDS:
        raise UserError(f"unknown record kind {name!r}; expected one of {', '.join(sorted(RECORD_KINDS))}")
    kind = RECORD_KINDS[name]
    schema = record.get("schema", kind.schema)
    if not isinstance(schema, int) or isinstance(schema, bool) or schema > kind.schema:
        raise UserError(f"{name} record has schema {schema!r}; this mobiledepth reads schema <= {kind.schema}")
    require_fields(record, kind.required, f"{name} record")
    if "created_at" in record:
        try:
            parse_timestamp(record["created_at"])
        except ValueError:
            raise UserError(f"{name} record has created_at = {record['created_at']!r}, not a UTC timestamp; "
                            f"re-run '{kind.made_by}'") from None
    return kind


def load_json(path: str | os.PathLike, fix: str) -> Any:
    """The JSON in ``path``; a one-line UserError ending in ``fix`` for a missing, unreadable or non-JSON file."""
    file = Path(path)
    try:
        return json.loads(file.read_text())
    except FileNotFoundError:
        raise UserError(f"no such file: {file}; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{file} is not valid JSON ({getattr(exc, 'msg', exc)}); {fix}") from None
    except OSError as exc:
        raise UserError(f"cannot read {file} ({(exc.strerror or str(exc)).lower()}); check its permissions") from None


def read_record(source: str | os.PathLike | dict, expected_kind: str | None = None) -> dict[str, Any]:
    """A validated record from a file or a dict; errors name the file and the missing or invalid field."""
    if isinstance(source, dict):
        check_record(source, expected_kind)
        return source
    fix = f"re-run '{_kind(expected_kind).made_by}'" if expected_kind else "pass a mobiledepth record"
    record = load_json(source, fix)
    try:
        check_record(record, expected_kind)
    except UserError as exc:
        raise UserError(f"{Path(source)}: {exc}") from None
    return record


@dataclass
class ExportRecord:
    """An ``export.json`` and the run directory it describes."""

    data: dict[str, Any]
    path: Path

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def model(self) -> dict[str, Any]:
        return self.data.get("model") if isinstance(self.data.get("model"), dict) else {}

    def tflite_artifacts(self, recommended_only: bool = False) -> list[dict[str, Any]]:
        """The TFLite artifacts, in the order the export wrote them; ``recommended_only``: one per
        precision, the route export recommends (records without ``recommended`` list every one)."""
        return [a for a in self.data["artifacts"] if a.get("format") == "tflite"
                and (not recommended_only or a.get("recommended", True) is not False)]

    def tflite_artifact(self, sha256: str | None = None) -> dict[str, Any] | None:
        """The TFLite artifact with ``sha256``, or (without one) the first recommended one; None if none."""
        return next((a for a in self.tflite_artifacts(recommended_only=sha256 is None)
                     if sha256 is None or a.get("sha256") == sha256), None)


def read_export_record(run_dir_or_file: str | os.PathLike) -> ExportRecord:
    """The ``export.json`` of a run directory (or that file itself), validated: artifacts is a list of objects."""
    path = Path(run_dir_or_file)
    file = path / "export.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{file.parent} has no export.json; pass a run directory made by 'mobiledepth export'")
    record = read_record(file, "export")
    artifacts = record["artifacts"]
    if not isinstance(artifacts, list) or not all(isinstance(a, dict) for a in artifacts):
        raise UserError(f"{file}: artifacts is not a list of objects; re-run 'mobiledepth export'")
    return ExportRecord(record, file)
