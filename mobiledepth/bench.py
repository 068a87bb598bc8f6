"""The bench stage: time a .tflite (or an export run's TFLite artifacts) on phones or on host.

Timing itself lives in ``android_bench`` (benchmark_model over adb, or the TFLite
interpreter on host); this stage resolves what to time, links every result to its artifact
by sha256, and writes ``bench.json`` beside the artifacts, atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mobiledepth.errors import UserError
from mobiledepth.io import sha256_file, write_json_atomic

BENCH_RECORD = "bench.json"
EXPORT_RECORD = "export.json"


@dataclass
class BenchRun:
    """What the stage produced: the results (one per model × device) and the record's path."""

    results: list[dict[str, Any]]
    record_path: Path
    record: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["failed"]]

    @property
    def fallbacks(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["fallback"] and not r["failed"]]


def resolve_targets(target: str | Path):
    """The models to time and the directory of ``bench.json``, from a .tflite or a run directory."""
    from android_bench.runner import ModelItem

    path = Path(target)
    if path.is_file():
        if path.suffix != ".tflite":
            raise UserError(f"{path} is not a .tflite file; pass a TFLite model or an export run directory")
        return [ModelItem(path, sha256_file(path))], path.parent
    if not path.is_dir():
        raise UserError(f"{path} does not exist; pass a .tflite file or a run directory from 'mobiledepth export'")
    record_file = path / EXPORT_RECORD
    if not record_file.is_file():
        raise UserError(f"{path} has no {EXPORT_RECORD}; pass a run directory made by 'mobiledepth export' or a .tflite file")
    try:
        record = json.loads(record_file.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{record_file} is not valid JSON ({exc.msg}); re-run 'mobiledepth export'") from exc
    if record.get("kind") != "export":
        raise UserError(f"{record_file} is not an export record (kind={record.get('kind')!r}); re-run 'mobiledepth export'")
    model_name = (record.get("model") or {}).get("name")
    items = []
    for artifact in record.get("artifacts") or []:
        if artifact.get("format") != "tflite":
            continue
        file = path / artifact["path"]
        if not file.is_file():
            raise UserError(f"artifact {artifact['path']} listed in {record_file} is missing; re-run 'mobiledepth export'")
        digest = sha256_file(file)
        if artifact.get("sha256") and artifact["sha256"] != digest:
            raise UserError(
                f"artifact {artifact['path']} changed since export (sha256 differs from {EXPORT_RECORD}); "
                "re-run 'mobiledepth export' so results link to the right model"
            )
        items.append(ModelItem(file, digest, model_name, artifact.get("precision")))
    if not items:
        raise UserError(f"{record_file} lists no TFLite artifact; export with a TFLite format first")
    return items, path


def bench(
    target: str | Path,
    devices: list[str] | tuple[str, ...] = ("host",),
    delegate: str = "cpu",
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    serial: str | None = None,
    profile_ops: bool = False,
    require_full_delegation: bool = False,
    benchmark_binary: str | Path | None = None,
    invocations: int = 1,
    run_timeout_s: float = 30.0,
    profiles_path: str | Path | None = None,
) -> BenchRun:
    """Benchmark a .tflite or an export run's TFLite artifacts; write ``bench.json``; return the results.

    ``bench.json`` keeps earlier results: each call appends its results to the record.
    """
    from android_bench.result import utc_now
    from android_bench.runner import RunOptions, benchmark

    items, out_dir = resolve_targets(target)
    options = RunOptions(
        delegate=delegate,
        threads=threads,
        runs=runs,
        warmup=warmup,
        profile_ops=profile_ops,
        require_full_delegation=require_full_delegation,
        invocations=invocations,
        run_timeout_s=run_timeout_s,
    )
    results = benchmark(items, list(devices), options, serial, benchmark_binary, profiles_path)
    for result in results:
        result["model_path"] = _relative(Path(result["model_path"]), out_dir)
    record_path = out_dir / BENCH_RECORD
    record = {"kind": "bench", "schema": 1, "created_at": utc_now(), "results": _previous(record_path) + results}
    write_json_atomic(record_path, record)
    return BenchRun(results, record_path, record)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def _previous(record_path: Path) -> list[dict[str, Any]]:
    """Results already in bench.json (an unreadable or foreign file is an error, not overwritten)."""
    if not record_path.exists():
        return []
    try:
        record = json.loads(record_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{record_path} exists but is not valid JSON ({exc.msg}); move it away and retry") from exc
    if record.get("kind") != "bench" or not isinstance(record.get("results"), list):
        raise UserError(f"{record_path} is not a bench record; move it away and retry")
    return record["results"]
