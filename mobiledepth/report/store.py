"""The shared latency / accuracy store: one SQLite file that every export, bench and eval feeds.

Default location: ``$MOBILEDEPTH_STORE`` if set, else ``$XDG_DATA_HOME/mobiledepth/store.sqlite``
(``~/.local/share/mobiledepth/store.sqlite`` when ``XDG_DATA_HOME`` is unset). The file is
created on first use. Everything is keyed by the artifact's content hash (sha256), so a
benchmark made on a phone in a lab and a WHDR measured in CI meet in one report.

Safety:
- WAL journal, a busy timeout and ``BEGIN IMMEDIATE`` transactions: many processes may
  ingest at once and nothing is lost; readers never block writers.
- One record = one transaction: a crash (or an exception) mid-ingest leaves no half record.
- Raw benchmark samples are stored as given; statistics are derived from them on read.
- A NetAdapt run (``prune.json``) is kept whole, plus one row per step (every iteration and
  the final model), so the report can draw the pruning trajectory.
- ``schema_version`` + an ordered list of migrations: a newer mobiledepth upgrades an older
  store in place (inside a transaction); an older mobiledepth refuses a newer store.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from mobiledepth.errors import UserError
from mobiledepth.io import sha256_file, sha256_json

RECORD_SCHEMA = 1  # the version of the JSON records (export.json, bench.json, eval, prune.json) we read
BUSY_TIMEOUT_MS = 60_000
STORE_MARKER_TABLE = "mobiledepth_schema"


def default_store_path() -> Path:
    """``$MOBILEDEPTH_STORE``, else ``$XDG_DATA_HOME/mobiledepth/store.sqlite`` (XDG default ~/.local/share)."""
    env = os.environ.get("MOBILEDEPTH_STORE")
    if env:
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "mobiledepth" / "store.sqlite"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- migrations
# Migration N brings a store from version N-1 to N. Never edit a released migration: add one.

def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ';'-separated DDL inside the caller's transaction (``executescript`` would commit it)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _migration_1(conn: sqlite3.Connection) -> None:
    """v1: artifacts, benchmark results with raw samples, evaluations."""
    _run_script(
        conn,
        """
        CREATE TABLE artifacts (
            sha256 TEXT PRIMARY KEY,
            model_name TEXT, spec_hash TEXT, params INTEGER, macs INTEGER,
            format TEXT, precision TEXT, layout TEXT,
            input_h INTEGER, input_w INTEGER,
            size_bytes INTEGER, parity TEXT,
            checkpoint_sha256 TEXT, path TEXT,
            created_at TEXT, ingested_at TEXT NOT NULL,
            raw TEXT NOT NULL
        );
        CREATE TABLE bench_results (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            artifact_sha256 TEXT, model_name TEXT, model_path TEXT, precision TEXT,
            device_profile TEXT, device_serial TEXT, device_model_code TEXT, soc TEXT, android TEXT,
            delegate TEXT, threads INTEGER, tool TEXT, tool_version TEXT,
            runs INTEGER, warmup INTEGER,
            samples_us TEXT, samples_kind TEXT, tool_stats TEXT,
            init_us REAL, first_inference_us REAL, warmup_avg_us REAL,
            memory TEXT, delegation_status TEXT, delegation TEXT,
            fallback INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, error TEXT,
            started_at TEXT, duration_s REAL, ingested_at TEXT NOT NULL,
            raw TEXT NOT NULL
        );
        CREATE TABLE evals (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            artifact_sha256 TEXT, model_name TEXT, model_path TEXT, backend TEXT, precision TEXT,
            dataset_name TEXT, dataset_hash TEXT, metric TEXT, value REAL,
            correct INTEGER, pairs INTEGER, created_at TEXT, ingested_at TEXT NOT NULL,
            raw TEXT NOT NULL
        );
        CREATE INDEX bench_by_artifact ON bench_results(artifact_sha256);
        CREATE INDEX evals_by_artifact ON evals(artifact_sha256);
        """
    )


def _migration_2(conn: sqlite3.Connection) -> None:
    """v2: a content key per bench result and eval so importing the same file twice adds nothing."""
    for table in ("bench_results", "evals"):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN record_key TEXT")
        rows = conn.execute(f"SELECT id, raw FROM {table} ORDER BY id").fetchall()
        seen: set[str] = set()
        for row_id, raw in rows:  # backfill; drop exact duplicates an old store may hold
            key = sha256_json(json.loads(raw))
            if key in seen:
                conn.execute(f"DELETE FROM {table} WHERE id = ?", (row_id,))
            else:
                seen.add(key)
                conn.execute(f"UPDATE {table} SET record_key = ? WHERE id = ?", (key, row_id))
        conn.execute(f"CREATE UNIQUE INDEX {table}_by_key ON {table}(record_key)")


def _migration_3(conn: sqlite3.Connection) -> None:
    """v3: NetAdapt runs (the whole prune.json) and their steps (every iteration + the final model)."""
    _run_script(
        conn,
        """
        CREATE TABLE prune_runs (
            run_id TEXT PRIMARY KEY,
            model_name TEXT, device TEXT, delegate TEXT, target_ms REAL, choose TEXT, status TEXT,
            run_dir TEXT, created_at TEXT, finished_at TEXT, steps INTEGER NOT NULL,
            ingested_at TEXT NOT NULL, raw TEXT NOT NULL
        );
        CREATE TABLE prune_steps (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES prune_runs(run_id),
            iteration INTEGER NOT NULL, final INTEGER NOT NULL DEFAULT 0,
            step_target_ms REAL, estimated_ms REAL NOT NULL, measured_ms REAL, whdr REAL, params INTEGER,
            chosen_group TEXT, chosen_width INTEGER, widths TEXT,
            checkpoint_sha256 TEXT, artifact_sha256 TEXT, finished_at TEXT, ingested_at TEXT NOT NULL,
            UNIQUE (run_id, iteration, final)
        );
        CREATE INDEX prune_steps_by_artifact ON prune_steps(artifact_sha256)
        """
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migration_1, _migration_2, _migration_3]
SCHEMA_VERSION = len(MIGRATIONS)


# --------------------------------------------------------------------------- opening

def _check_existing_file(path: Path) -> None:
    """Refuse (without touching it) a file that is not a mobiledepth store, or is too new."""
    if not path.exists() or path.stat().st_size == 0:
        return
    if path.is_dir():
        raise UserError(f"store path {path} is a directory; pass a file path with --store or MOBILEDEPTH_STORE")
    fix = "pass another path with --store or MOBILEDEPTH_STORE"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            version = None
            if STORE_MARKER_TABLE in tables:
                row = conn.execute(f"SELECT MAX(version) FROM {STORE_MARKER_TABLE}").fetchone()
                version = row[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{path} is not a mobiledepth store (sqlite: {exc}); {fix}") from None
    if STORE_MARKER_TABLE not in tables:
        if tables:
            raise UserError(f"{path} is an SQLite file but not a mobiledepth store; {fix}")
        return
    if version is not None and version > SCHEMA_VERSION:
        raise UserError(
            f"store {path} has schema v{version}, newer than this mobiledepth understands "
            f"(v{SCHEMA_VERSION}); upgrade mobiledepth"
        )


def _set_wal(conn: sqlite3.Connection) -> str:
    """Switch to WAL. Several processes creating the store at once can get SQLITE_BUSY here,
    which the busy handler does not retry for a journal-mode change, so retry it ourselves."""
    import time

    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = _set_wal(conn)
    if mode.lower() != "wal":  # e.g. a network file system; still safe, just slower
        conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the store on ``conn`` up to schema ``target`` in one write transaction; return it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {STORE_MARKER_TABLE} ("
            "version INTEGER NOT NULL, applied_at TEXT NOT NULL, mobiledepth_version TEXT)"
        )
        current = conn.execute(f"SELECT COALESCE(MAX(version), 0) FROM {STORE_MARKER_TABLE}").fetchone()[0]
        from mobiledepth import __version__

        for version in range(current + 1, target + 1):
            MIGRATIONS[version - 1](conn)
            conn.execute(f"INSERT INTO {STORE_MARKER_TABLE} VALUES (?, ?, ?)", (version, _now(), __version__))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return max(current, target)


def open_store(path: str | os.PathLike | None = None) -> "Store":
    """Open (creating on first use, migrating if older) the store at ``path`` or the default path."""
    store_path = Path(path).expanduser() if path is not None else default_store_path()
    _check_existing_file(store_path)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(store_path)
    try:
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise UserError(f"cannot open store {store_path}: {exc}; pass another path with --store") from None
    return Store(store_path, conn)


# --------------------------------------------------------------------------- records

@dataclass
class IngestSummary:
    """What one ``ingest`` call added: counts per table and how many were already there."""

    kind: str
    artifacts: int = 0
    bench_results: int = 0
    evals: int = 0
    prune_steps: int = 0
    duplicates: int = 0

    def __iadd__(self, other: "IngestSummary") -> "IngestSummary":
        self.artifacts += other.artifacts
        self.bench_results += other.bench_results
        self.evals += other.evals
        self.prune_steps += other.prune_steps
        self.duplicates += other.duplicates
        return self


def _require(record: dict, keys: Iterable[str], what: str) -> None:
    if not isinstance(record, dict):
        raise UserError(f"{what} is {type(record).__name__}, not a JSON object; is it a mobiledepth record?")
    missing = [k for k in keys if k not in record]
    if missing:
        raise UserError(f"{what} lacks {', '.join(missing)}; is it a mobiledepth record (schema {RECORD_SCHEMA})?")


def _json_default(value: Any) -> Any:
    """numpy scalars / arrays (as stages may hand over) become plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise UserError(f"record holds a {type(value).__name__} value, which is not JSON; store plain numbers and strings")


def plain_record(record: Any) -> Any:
    """A deep copy of ``record`` made of JSON types only (what the store keeps and hashes)."""
    return json.loads(json.dumps(record, default=_json_default))


def _validate(record: Any) -> str:
    """Return the record's kind, or raise a one-line UserError before anything is written."""
    if not isinstance(record, dict) or "kind" not in record:
        raise UserError("not a mobiledepth record (no 'kind'); import export.json, bench.json, prune.json or eval records")
    kind = record["kind"]
    if kind not in _INGESTERS:
        raise UserError(f"unknown record kind {kind!r}; expected one of {', '.join(sorted(_INGESTERS))}")
    schema = record.get("schema")
    if not isinstance(schema, int) or schema > RECORD_SCHEMA:
        raise UserError(f"{kind} record has schema {schema!r}; this mobiledepth reads schema <= {RECORD_SCHEMA}")
    if kind == "export":
        _require(record, ("model", "artifacts"), "export record")
        for artifact in record["artifacts"]:
            _require(artifact, ("sha256",), "export artifact")
    elif kind == "bench":
        _require(record, ("results",), "bench record")
        for result in record["results"]:
            _require(result, ("artifact_sha256", "device", "delegate"), "bench result")
    elif kind == "eval":
        _require(record, ("metric", "value"), "eval record")
    elif kind == "prune":
        _validate_prune(record)
    elif kind == "store_export":
        _require(record, ("records",), "store export")
        for inner in record["records"]:
            if isinstance(inner, dict) and inner.get("kind") == "store_export":
                raise UserError("nested store exports are not allowed")
            _validate(inner)
    return kind


_PRUNE_KEYS = ("model", "device", "delegate", "target_ms", "created_at", "iterations")
_STEP_KEYS = ("iteration", "estimated_ms", "whdr")


def _require_number(record: dict, key: str, what: str, nullable: bool = False) -> None:
    value = record.get(key)
    if (value is None and nullable) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return
    raise UserError(f"{what} has {key} = {value!r}, not a number; is it a prune.json written by 'mobiledepth prune'?")


def _validate_prune(record: dict) -> None:
    """Every key the store and the report read from a prune record (one-line error naming the first gap)."""
    _require(record, _PRUNE_KEYS, "prune record")
    _require(record["model"], ("name",), "prune record's model")
    _require_number(record, "target_ms", "prune record")
    if not isinstance(record["iterations"], list) or not record["iterations"]:
        raise UserError("prune record has no iterations; import the prune.json of a run that has started")
    steps = [(it, f"prune record's iterations[{n}]", _STEP_KEYS) for n, it in enumerate(record["iterations"])]
    if record.get("final") is not None:
        steps.append((record["final"], "prune record's final", _STEP_KEYS[1:]))
    for step, what, keys in steps:
        _require(step, keys, what)
        for key in ("iteration", "estimated_ms")[keys is not _STEP_KEYS:]:
            _require_number(step, key, what)
        _require_number(step, "measured_ms", what, nullable=True)
        _require_number(step, "whdr", what, nullable=True)


def _j(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _as_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _ingest_export(conn: sqlite3.Connection, record: dict, base_dir: Path | None) -> IngestSummary:
    summary = IngestSummary("export")
    model = record.get("model") or {}
    size = record.get("input_size") or [None, None]
    for artifact in record["artifacts"]:
        path = artifact.get("path")
        if path and base_dir is not None and not Path(path).is_absolute():
            path = str((base_dir / path).resolve())
        raw = {k: v for k, v in record.items() if k != "artifacts"}  # everything, for a faithful export
        raw["artifact"] = artifact
        conn.execute(
            "INSERT OR REPLACE INTO artifacts (sha256, model_name, spec_hash, params, macs, format, precision,"
            " layout, input_h, input_w, size_bytes, parity, checkpoint_sha256, path, created_at, ingested_at, raw)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                artifact["sha256"], model.get("name"), model.get("spec_hash"), model.get("params"),
                model.get("macs"), artifact.get("format"), artifact.get("precision"), artifact.get("layout"),
                size[0], size[1], artifact.get("size_bytes"), _j(artifact.get("parity")),
                model.get("checkpoint_sha256"), path, record.get("created_at"), _now(), _j(raw),
            ),
        )
        summary.artifacts += 1
    return summary


def _bench_row(result: dict) -> tuple:
    """The column values of one BenchResult (raw samples kept verbatim)."""
    device = result.get("device") or {}
    delegation = result.get("delegation") or {}
    return (
        result.get("artifact_sha256"), result.get("model_name"), result.get("model_path"),
        result.get("precision"), device.get("profile"), device.get("serial"), device.get("model_code"),
        device.get("soc"), _as_str(device.get("android")), result.get("delegate"), result.get("threads"),
        result.get("tool"), result.get("tool_version"), result.get("runs"), result.get("warmup"),
        _j(result.get("samples_us")), result.get("samples_kind"), _j(result.get("stats")),
        result.get("init_us"), result.get("first_inference_us"), result.get("warmup_avg_us"),
        _j(result.get("memory")), delegation.get("status"), _j(delegation),
        int(bool(result.get("fallback"))), int(bool(result.get("failed"))), result.get("error"),
        result.get("started_at"), result.get("duration_s"), _now(), _j(result), sha256_json(result),
    )


_BENCH_COLUMNS = (
    "artifact_sha256, model_name, model_path, precision, device_profile, device_serial, device_model_code,"
    " soc, android, delegate, threads, tool, tool_version, runs, warmup, samples_us, samples_kind, tool_stats,"
    " init_us, first_inference_us, warmup_avg_us, memory, delegation_status, delegation, fallback, failed,"
    " error, started_at, duration_s, ingested_at, raw, record_key"
)


def _ingest_bench(conn: sqlite3.Connection, record: dict, base_dir: Path | None) -> IngestSummary:
    summary = IngestSummary("bench")
    _insert_new(conn, "bench_results", _BENCH_COLUMNS, [_bench_row(r) for r in record["results"]], summary, "bench_results")
    return summary


def _insert_new(conn: sqlite3.Connection, table: str, columns: str, rows: list[tuple],
                summary: IngestSummary, counter: str) -> None:
    """INSERT OR IGNORE each row; count the new ones in ``summary.<counter>``, the rest as duplicates."""
    placeholders = ",".join("?" * len(columns.split(",")))
    for row in rows:
        cursor = conn.execute(f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({placeholders})", row)
        if cursor.rowcount:
            setattr(summary, counter, getattr(summary, counter) + 1)
        else:
            summary.duplicates += 1


def _ingest_eval(conn: sqlite3.Connection, record: dict, base_dir: Path | None) -> IngestSummary:
    summary = IngestSummary("eval")
    dataset = record.get("dataset") or {}
    cursor = conn.execute(
        "INSERT OR IGNORE INTO evals (artifact_sha256, model_name, model_path, backend, precision, dataset_name,"
        " dataset_hash, metric, value, correct, pairs, created_at, ingested_at, raw, record_key)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            record.get("artifact_sha256"), record.get("model_name"), record.get("model_path"),
            record.get("backend"), record.get("precision"), dataset.get("name"), dataset.get("hash"),
            record["metric"], record["value"], record.get("correct"), record.get("pairs"),
            record.get("created_at"), _now(), _j(record), sha256_json(record),
        ),
    )
    if cursor.rowcount:
        summary.evals += 1
    else:
        summary.duplicates += 1
    return summary


def prune_run_id(record: dict) -> str:
    """A prune run's identity: its start checkpoint and spec, start time, device, delegate and target."""
    model = record["model"]
    key = [model.get("checkpoint_sha256"), model.get("spec_hash"), record["created_at"], record["device"],
           record["delegate"], record["target_ms"]]
    return sha256_json(key)[:16]


def _final_artifact(export_json: Path) -> dict | None:
    """The exported TFLite artifact (the one the final bench timed) of an export.json, with the model's params."""
    try:
        export = json.loads(export_json.read_text())
    except (OSError, ValueError):  # no (readable) export: the final step stays unlinked
        return None
    tflite = [a for a in export.get("artifacts") or [] if a.get("format") == "tflite"]
    if not tflite:
        return None
    return {"artifact_sha256": tflite[0].get("sha256"), "params": (export.get("model") or {}).get("params")}


def _resolve_prune_files(record: dict, base_dir: Path) -> None:
    """Fill in what the run directory knows: each step's checkpoint sha256, the final artifact and its params."""
    final = record.get("final")
    for step in record["iterations"] + ([final] if final else []):
        path = base_dir / step["checkpoint"] if step.get("checkpoint") else None
        if "checkpoint_sha256" not in step and path is not None and path.is_file():
            step["checkpoint_sha256"] = sha256_file(path)
    if final and final.get("export_dir") and "artifact_sha256" not in final:
        linked = _final_artifact(base_dir / final["export_dir"] / "export.json")
        if linked:
            final["params"] = final.get("params") or linked["params"]
            final["artifact_sha256"] = linked["artifact_sha256"]
    record.setdefault("run_dir", str(base_dir.resolve()))


def _prune_step_rows(record: dict, run_id: str) -> list[tuple]:
    """One row per iteration, plus the final model (numbered as the last iteration, ``final`` = 1)."""
    iterations = record["iterations"]
    steps = [(it, 0, it.get("finished_at")) for it in iterations]
    if record.get("final") is not None:
        steps.append((record["final"], 1, record.get("finished_at")))
    rows = []
    for step, final, finished_at in steps:
        chosen = step.get("chosen") or {}
        rows.append((
            run_id, step.get("iteration", iterations[-1]["iteration"]), final, step.get("target_ms"),
            step["estimated_ms"], step.get("measured_ms"), step.get("whdr"), step.get("params"),
            chosen.get("group"), chosen.get("width"), _j(step.get("widths")), step.get("checkpoint_sha256"),
            step.get("artifact_sha256"), finished_at, _now(),
        ))
    return rows


_PRUNE_STEP_COLUMNS = (
    "run_id, iteration, final, step_target_ms, estimated_ms, measured_ms, whdr, params, chosen_group,"
    " chosen_width, widths, checkpoint_sha256, artifact_sha256, finished_at, ingested_at"
)


def _ingest_prune(conn: sqlite3.Connection, record: dict, base_dir: Path | None) -> IngestSummary:
    """The run (newest record wins: a resumed run re-imported adds its new steps) and its steps."""
    summary = IngestSummary("prune")
    run_id = prune_run_id(record)
    rows = _prune_step_rows(record, run_id)
    conn.execute(
        "INSERT INTO prune_runs (run_id, model_name, device, delegate, target_ms, choose, status, run_dir,"
        " created_at, finished_at, steps, ingested_at, raw) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT(run_id) DO UPDATE SET status = excluded.status, finished_at = excluded.finished_at,"
        " steps = excluded.steps, ingested_at = excluded.ingested_at, raw = excluded.raw"
        " WHERE excluded.steps >= prune_runs.steps",
        (
            run_id, record["model"]["name"], record["device"], record["delegate"], record["target_ms"],
            (record.get("settings") or {}).get("choose", "accuracy"), record.get("status"), record.get("run_dir"),
            record["created_at"], record.get("finished_at"), len(rows), _now(), _j(record),
        ),
    )
    _insert_new(conn, "prune_steps", _PRUNE_STEP_COLUMNS, rows, summary, "prune_steps")
    return summary


def _ingest_store_export(conn: sqlite3.Connection, record: dict, base_dir: Path | None) -> IngestSummary:
    summary = IngestSummary("store_export")
    for inner in record["records"]:
        summary += _INGESTERS[inner["kind"]](conn, inner, None)
    return summary


_INGESTERS: dict[str, Callable[[sqlite3.Connection, dict, Path | None], IngestSummary]] = {
    "export": _ingest_export,
    "bench": _ingest_bench,
    "eval": _ingest_eval,
    "prune": _ingest_prune,
    "store_export": _ingest_store_export,
}


# --------------------------------------------------------------------------- derived stats

def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of an already sorted list."""
    position = (len(sorted_values) - 1) * q
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def stats_from_samples(samples: list[float] | None) -> dict[str, float | int] | None:
    """count / min / max / mean / std / median / p5 / p10 / p90 / p95 of raw samples (µs), or None."""
    if not samples:
        return None
    ordered = sorted(float(s) for s in samples)
    return {
        "count": len(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
        "std": statistics.pstdev(ordered) if len(ordered) > 1 else 0.0,
        "median": _percentile(ordered, 0.5),
        "p5": _percentile(ordered, 0.05),
        "p10": _percentile(ordered, 0.10),
        "p90": _percentile(ordered, 0.90),
        "p95": _percentile(ordered, 0.95),
    }


@dataclass
class BenchRow:
    """One stored benchmark result with its statistics (derived from the raw samples when given)."""

    id: int
    artifact_sha256: str | None
    model_name: str | None
    precision: str | None
    device_profile: str | None
    device_serial: str | None
    device_model_code: str | None
    soc: str | None
    delegate: str | None
    threads: int | None
    tool: str | None
    tool_version: str | None
    samples_us: list[float]
    samples_kind: str | None
    stats: dict[str, Any] | None
    stats_source: str  # "samples" | "tool" | "none"
    memory: dict | None
    delegation_status: str | None
    fallback: bool
    failed: bool
    error: str | None
    started_at: str | None
    raw: dict = field(repr=False, default_factory=dict)


@dataclass
class ArtifactRow:
    """One stored artifact (an exported file), keyed by content hash."""

    sha256: str
    model_name: str | None
    spec_hash: str | None
    params: int | None
    macs: int | None
    format: str | None
    precision: str | None
    input_size: tuple[int | None, int | None]
    checkpoint_sha256: str | None
    parity: dict | None
    path: str | None


@dataclass
class EvalRow:
    """One stored evaluation (a metric of an artifact or checkpoint on a dataset)."""

    id: int
    artifact_sha256: str | None
    model_name: str | None
    backend: str | None
    precision: str | None
    dataset_name: str | None
    dataset_hash: str | None
    metric: str
    value: float
    pairs: int | None
    created_at: str | None


@dataclass
class PruneStepRow:
    """One step of a stored NetAdapt run (an iteration, or the final model), with its run's settings."""

    run_id: str
    model_name: str | None
    device: str | None
    delegate: str | None
    target_ms: float | None
    choose: str | None
    status: str | None
    run_dir: str | None
    created_at: str | None
    iteration: int
    final: bool
    step_target_ms: float | None
    estimated_ms: float
    measured_ms: float | None
    whdr: float | None
    params: int | None
    chosen_group: str | None
    chosen_width: int | None
    widths: dict | None
    checkpoint_sha256: str | None
    artifact_sha256: str | None


def _bench_from_sql(row: sqlite3.Row) -> BenchRow:
    samples = json.loads(row["samples_us"]) if row["samples_us"] else []
    tool_stats = json.loads(row["tool_stats"]) if row["tool_stats"] else None
    derived = stats_from_samples(samples) if row["samples_kind"] != "per_invocation_avg" else None
    if derived is not None:
        stats, source = derived, "samples"
    elif tool_stats and any(v is not None for v in tool_stats.values()):
        stats, source = tool_stats, "tool"
    else:
        stats, source = None, "none"
    return BenchRow(
        id=row["id"], artifact_sha256=row["artifact_sha256"], model_name=row["model_name"],
        precision=row["precision"], device_profile=row["device_profile"], device_serial=row["device_serial"],
        device_model_code=row["device_model_code"], soc=row["soc"], delegate=row["delegate"],
        threads=row["threads"], tool=row["tool"], tool_version=row["tool_version"], samples_us=samples,
        samples_kind=row["samples_kind"], stats=stats, stats_source=source,
        memory=json.loads(row["memory"]) if row["memory"] else None,
        delegation_status=row["delegation_status"], fallback=bool(row["fallback"]), failed=bool(row["failed"]),
        error=row["error"], started_at=row["started_at"], raw=json.loads(row["raw"]),
    )


# --------------------------------------------------------------------------- the store

class Store:
    """A connection to one store file. Use ``open_store``; close it (or use ``with``) when done."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn
        self._conn.row_factory = sqlite3.Row

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    @property
    def schema_version(self) -> int:
        return self._conn.execute(f"SELECT MAX(version) FROM {STORE_MARKER_TABLE}").fetchone()[0]

    # -- writing
    def ingest(self, record: dict, base_dir: str | os.PathLike | None = None) -> IngestSummary:
        """Add one JSON record (export / bench / eval / prune / store_export) in a single transaction.

        ``base_dir`` (the record's run directory) resolves the relative artifact paths of an export
        record and the checkpoints / final export of a prune record. Bench results, evals and prune
        steps already in the store are counted as duplicates, not added twice.
        """
        record = plain_record(record)
        kind = _validate(record)
        if kind == "prune" and base_dir is not None:
            _resolve_prune_files(record, Path(base_dir))  # file reads, before the write lock
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            summary = _INGESTERS[kind](conn, record, Path(base_dir) if base_dir is not None else None)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return summary

    def ingest_file(self, path: str | os.PathLike) -> IngestSummary:
        """Read a record JSON file (export.json, bench.json, an eval record, a store export) and ingest it."""
        file = Path(path)
        try:
            record = json.loads(file.read_text())
        except FileNotFoundError:
            raise UserError(f"no such record file: {file}; pass the path of an export.json / bench.json / prune.json") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{file} is not JSON ({exc}); pass an export.json / bench.json / prune.json / eval record") from None
        try:
            return self.ingest(record, base_dir=file.parent)
        except UserError as exc:
            raise UserError(f"{file}: {exc}") from None

    # -- reading
    def _rows(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, params).fetchall()

    def artifacts(self) -> dict[str, ArtifactRow]:
        """Every artifact by sha256."""
        out = {}
        for r in self._rows("SELECT * FROM artifacts ORDER BY sha256"):
            out[r["sha256"]] = ArtifactRow(
                sha256=r["sha256"], model_name=r["model_name"], spec_hash=r["spec_hash"], params=r["params"],
                macs=r["macs"], format=r["format"], precision=r["precision"],
                input_size=(r["input_h"], r["input_w"]), checkpoint_sha256=r["checkpoint_sha256"],
                parity=json.loads(r["parity"]) if r["parity"] else None, path=r["path"],
            )
        return out

    def bench_results(self) -> list[BenchRow]:
        """Every benchmark result, oldest first."""
        return [_bench_from_sql(r) for r in self._rows("SELECT * FROM bench_results ORDER BY id")]

    def evals(self) -> list[EvalRow]:
        """Every evaluation, oldest first."""
        return [
            EvalRow(
                id=r["id"], artifact_sha256=r["artifact_sha256"], model_name=r["model_name"], backend=r["backend"],
                precision=r["precision"], dataset_name=r["dataset_name"], dataset_hash=r["dataset_hash"],
                metric=r["metric"], value=r["value"], pairs=r["pairs"], created_at=r["created_at"],
            )
            for r in self._rows("SELECT * FROM evals ORDER BY id")
        ]

    def prune_steps(self) -> list[PruneStepRow]:
        """Every step of every stored NetAdapt run: runs oldest first, iterations in order, the final step last."""
        rows = self._rows(
            "SELECT s.*, r.model_name, r.device, r.delegate, r.target_ms, r.choose, r.status, r.run_dir, r.created_at"
            " FROM prune_steps s JOIN prune_runs r USING (run_id) ORDER BY r.created_at, s.run_id, s.final, s.iteration"
        )
        return [
            PruneStepRow(
                run_id=r["run_id"], model_name=r["model_name"], device=r["device"], delegate=r["delegate"],
                target_ms=r["target_ms"], choose=r["choose"], status=r["status"], run_dir=r["run_dir"],
                created_at=r["created_at"], iteration=r["iteration"], final=bool(r["final"]),
                step_target_ms=r["step_target_ms"], estimated_ms=r["estimated_ms"], measured_ms=r["measured_ms"],
                whdr=r["whdr"], params=r["params"], chosen_group=r["chosen_group"], chosen_width=r["chosen_width"],
                widths=json.loads(r["widths"]) if r["widths"] else None,
                checkpoint_sha256=r["checkpoint_sha256"], artifact_sha256=r["artifact_sha256"],
            )
            for r in rows
        ]

    def model_name_of(self, sha256: str) -> str | None:
        """The model name recorded for an artifact (export or bench), or None."""
        for sql in (
            "SELECT model_name FROM artifacts WHERE sha256 = ?",
            "SELECT model_name FROM bench_results WHERE artifact_sha256 = ? AND model_name IS NOT NULL",
        ):
            row = self._conn.execute(sql, (sha256,)).fetchone()
            if row and row[0]:
                return row[0]
        return None

    def counts(self) -> dict[str, int]:
        """Number of rows per table."""
        return {
            t: self._conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("artifacts", "bench_results", "evals", "prune_runs", "prune_steps")
        }

    def export_records(self) -> dict:
        """The whole store as one ``store_export`` record that ``ingest`` reads back."""
        records: list[dict] = []
        for r in self._rows("SELECT raw FROM artifacts ORDER BY sha256"):
            raw = json.loads(r["raw"])
            artifact = raw.pop("artifact")
            records.append({**raw, "kind": "export", "artifacts": [artifact]})
        results = [json.loads(r["raw"]) for r in self._rows("SELECT raw FROM bench_results ORDER BY id")]
        if results:
            records.append({"kind": "bench", "schema": RECORD_SCHEMA, "created_at": _now(), "results": results})
        records.extend(json.loads(r["raw"]) for r in self._rows("SELECT raw FROM evals ORDER BY id"))
        records.extend(json.loads(r["raw"]) for r in self._rows("SELECT raw FROM prune_runs ORDER BY created_at, run_id"))
        return {"kind": "store_export", "schema": RECORD_SCHEMA, "created_at": _now(),
                "store_schema": SCHEMA_VERSION, "records": records}

    def integrity_ok(self) -> bool:
        """SQLite's own integrity check."""
        return self._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def iter_record_files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Expand directories to the record files inside them (export.json, prune.json, bench*.json, eval*.json)."""
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*.json")
                if f.name in ("export.json", "prune.json") or f.name.startswith(("bench", "eval"))
            )
            if not found:
                raise UserError(f"no export.json / prune.json / bench*.json / eval*.json under {p}; pass record files")
            yield from found
        else:
            yield p
