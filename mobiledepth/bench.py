"""The bench stage: time a .tflite (or an export run's TFLite artifacts) on phones or on host.

Timing itself lives in ``android_bench`` (benchmark_model over adb, or the TFLite
interpreter on host); this stage resolves what to time, links every result to its artifact
by sha256, and writes ``bench.json`` beside the artifacts, atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mobiledepth.errors import UserError
from mobiledepth.io import check_writable, sha256_file, write_json_atomic
from mobiledepth.records import new_record, read_export_record, read_record

BENCH_RECORD = "bench.json"
EXPORT_RECORD = "export.json"


@dataclass
class BenchRun:
    """What the stage produced: the results (one per model × device) and the record's path."""

    results: list[dict[str, Any]]
    record_path: Path
    record: dict[str, Any] = field(repr=False, default_factory=dict)
    stored: Path | None = None  # the store the new results went into (None: not recorded)

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
    export = read_export_record(record_file)
    model_name = export.model.get("name")
    items = []
    for artifact in export.tflite_artifacts(recommended_only=True):  # another route's file: pass its path
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
    store=False,
    method: str = "shell",
    benchmark_apk: str | Path | None = None,
    npu_libs: str | Path | None = None,
    adb_servers: list[str] | tuple[str, ...] = (),
    host_runtime: str = "interpreter",
) -> BenchRun:
    """Benchmark a .tflite or an export run's TFLite artifacts; write ``bench.json``; return the results.

    ``bench.json`` keeps earlier results: each call appends its results to the record; the new
    ones go into ``store`` (a path, None for the default store, False for nowhere). The record's
    destination and the store are checked before anything is timed, so they never disagree.
    """
    from android_bench.runner import RunOptions, benchmark
    from mobiledepth.store import check_store_choice, record_in_store

    items, out_dir = resolve_targets(target)
    record_path = out_dir / BENCH_RECORD
    check_record_destination(record_path)
    check_store_choice(store)
    options = RunOptions(
        delegate=delegate,
        threads=threads,
        runs=runs,
        warmup=warmup,
        profile_ops=profile_ops,
        require_full_delegation=require_full_delegation,
        invocations=invocations,
        run_timeout_s=run_timeout_s,
        method=method,
        host_runtime=host_runtime,
        apk=str(benchmark_apk) if benchmark_apk else None,
        npu_libs=str(npu_libs) if npu_libs else None,
    )
    results = benchmark(items, list(devices), options, serial, benchmark_binary, profiles_path,
                        adb_servers=list(adb_servers))
    for result in results:
        result["model_path"] = _relative(Path(result["model_path"]), out_dir)
    record = new_record("bench", results=_previous(record_path) + results)
    write_json_atomic(record_path, record)
    stored = record_in_store({**record, "results": results}, store, base_dir=out_dir)
    return BenchRun(results, record_path, record, stored)


def check_record_destination(record_path: Path) -> None:
    """``bench.json`` can be written beside the models, and any file already there is a bench record
    (else a one-line UserError, before any timing)."""
    try:
        check_writable(record_path, what="bench record")
    except UserError as exc:
        problem = str(exc).split("; ")[0]
        raise UserError(f"{problem}; bench writes {BENCH_RECORD} beside the models: copy the model or run "
                        "folder somewhere writable and bench that copy") from None
    _previous(record_path)


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
        record = read_record(record_path, "bench")
    except UserError as exc:
        raise UserError(f"{str(exc).split('; ')[0]}; move it away and retry") from None
    if not isinstance(record["results"], list):
        raise UserError(f"{record_path} is not a bench record (results is not a list); move it away and retry")
    return record["results"]
