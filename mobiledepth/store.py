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
- Every failure to open, read or write the store is a one-line ``UserError`` naming the path and
  ``--store`` / ``MOBILEDEPTH_STORE``; readers (``open_store(readonly=True)``) never write, so a
  store on a read-only file system can still be reported.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from mobiledepth.errors import UserError
from mobiledepth.io import sha256_file, sha256_json
from mobiledepth.records import (RECORD_SCHEMA, check_record, new_record, read_export_record, require_fields,
                                 utc_timestamp)

BUSY_TIMEOUT_MS = 60_000
STORE_MARKER_TABLE = "mobiledepth_schema"


def default_store_path() -> Path:
    """``$MOBILEDEPTH_STORE``, else ``$XDG_DATA_HOME/mobiledepth/store.sqlite`` (XDG default ~/.local/share)."""
    env = os.environ.get("MOBILEDEPTH_STORE")
    if env:
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "mobiledepth" / "store.sqlite"


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


def weights_origin(record: dict) -> tuple[int | None, int | None]:
    """(random_weights as 1 / 0, seed) of an export or eval record; None for what it does not say
    (records written before these fields existed: unknown, shown as trained)."""
    places = [record, record.get("model") if isinstance(record.get("model"), dict) else {}]
    random_weights = next((p["random_weights"] for p in places if isinstance(p.get("random_weights"), bool)), None)
    seed = next((p["seed"] for p in places if isinstance(p.get("seed"), int) and not isinstance(p["seed"], bool)), None)
    return (None if random_weights is None else int(random_weights)), seed


def _migration_4(conn: sqlite3.Connection) -> None:
    """v4: whether an artifact / eval comes from random (untrained) weights, and their seed (null: not recorded)."""
    for table in ("artifacts", "evals"):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN random_weights INTEGER")
        conn.execute(f"ALTER TABLE {table} ADD COLUMN seed INTEGER")
        for row_id, raw in conn.execute(f"SELECT rowid, raw FROM {table}").fetchall():
            origin = weights_origin(json.loads(raw))
            if origin != (None, None):
                conn.execute(f"UPDATE {table} SET random_weights = ?, seed = ? WHERE rowid = ?", (*origin, row_id))


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migration_1, _migration_2, _migration_3, _migration_4]
SCHEMA_VERSION = len(MIGRATIONS)


# --------------------------------------------------------------------------- opening

STORE_FIX = "pass another path with --store PATH or MOBILEDEPTH_STORE"


def resolve_store_path(path: str | os.PathLike | None = None) -> Path:
    """``path`` (``--store``) if given, else the default store path."""
    return Path(path).expanduser() if path is not None else default_store_path()


def _store_error(path: Path, exc: Exception, doing: str) -> UserError:
    """One line for a store that SQLite or the file system refused; a store is "not a mobiledepth
    store" only when SQLite says the file is no database."""
    if isinstance(exc, OSError):
        reason = (exc.strerror or str(exc)).lower()
        return UserError(f"cannot {doing} store {path} ({reason}); {STORE_FIX}")
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_NOTADB":
        return UserError(f"{path} is not a mobiledepth store (sqlite: {exc}); {STORE_FIX}")
    if name.startswith("SQLITE_READONLY"):
        return UserError(f"store {path} is read-only (sqlite: {exc}); {STORE_FIX}")
    if name.startswith("SQLITE_CORRUPT"):
        return UserError(f"store {path} is damaged (sqlite: {exc}); restore it or {STORE_FIX}")
    return UserError(f"cannot {doing} store {path} (sqlite: {exc}); check the permissions of the file and its "
                     f"folder, or {STORE_FIX}")


def _uri(path: Path, query: str) -> str:
    return f"{path.resolve().as_uri()}?{query}"


def _marker(uri: str) -> tuple[set[str], int | None]:
    """The table names of the SQLite file at ``uri`` and its mobiledepth schema version (None without one)."""
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = None
        if STORE_MARKER_TABLE in tables:
            version = conn.execute(f"SELECT MAX(version) FROM {STORE_MARKER_TABLE}").fetchone()[0]
        return tables, version
    finally:
        conn.close()


def _file_size(path: Path) -> int | None:
    """Size of the file at ``path``; None when there is none (or the path cannot even be looked at)."""
    try:
        return path.stat().st_size
    except OSError:
        return None


def _inspect(path: Path) -> tuple[int, str | None]:
    """Read-only look at an existing file: (schema version, the URI query that reads it) — (0, None)
    for no file, an empty file or an empty SQLite file. Refuses a folder, a foreign file, a newer store.

    ``mode=ro`` first; ``immutable=1`` when SQLite cannot create the -shm beside a WAL store (a
    read-only folder or mount): nothing else can be writing there."""
    size = _file_size(path)
    if size is None or (size == 0 and not path.is_dir()):
        return 0, None
    if path.is_dir():
        raise UserError(f"store path {path} is a directory; pass a file path with --store PATH or MOBILEDEPTH_STORE")
    try:
        try:
            query = "mode=ro"
            tables, version = _marker(_uri(path, query))
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_CANTOPEN":
                raise
            query = "immutable=1"
            tables, version = _marker(_uri(path, query))
    except sqlite3.DatabaseError as exc:
        raise _store_error(path, exc, "read") from None
    if STORE_MARKER_TABLE not in tables:
        if tables:
            raise UserError(f"{path} is an SQLite file but not a mobiledepth store; {STORE_FIX}")
        return 0, query
    if version is not None and version > SCHEMA_VERSION:
        raise UserError(
            f"store {path} has schema v{version}, newer than this mobiledepth understands "
            f"(v{SCHEMA_VERSION}); upgrade mobiledepth"
        )
    return version or 0, query


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
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = _set_wal(conn)
        if mode.lower() != "wal":  # e.g. a network file system; still safe, just slower
            conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
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
            conn.execute(f"INSERT INTO {STORE_MARKER_TABLE} VALUES (?, ?, ?)", (version, utc_timestamp(), __version__))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return max(current, target)


def _probe_write(conn: sqlite3.Connection) -> None:
    """A write, rolled back: SQLite opens a file it may not write read-only and says so only on the first write."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"CREATE TABLE {STORE_MARKER_TABLE}_write_probe (x INTEGER)")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _check_creatable(path: Path) -> None:
    """A store that does not exist yet could be created at ``path`` (probed; nothing is created)."""
    from mobiledepth.io import check_writable

    try:
        check_writable(path, what="store")
    except UserError as exc:
        raise UserError(f"{exc} (--store PATH or MOBILEDEPTH_STORE)") from None


def _open_writable(store_path: Path) -> "Store":
    version, _ = _inspect(store_path)
    conn = None
    try:
        if store_path.exists():
            os.close(os.open(store_path, os.O_RDWR))  # says "read-only file system" where SQLite says "unable to open"
        else:
            _check_creatable(store_path)
        store_path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(store_path)
        migrate(conn)
        _probe_write(conn)
    except (OSError, sqlite3.DatabaseError) as exc:
        if conn is not None:
            conn.close()
        raise _store_error(store_path, exc, "write to" if version else "create") from None
    return Store(store_path, conn)


def _memory_copy(conn: sqlite3.Connection) -> sqlite3.Connection:
    """The database on ``conn`` copied into memory (``conn`` is closed)."""
    memory = sqlite3.connect(":memory:", isolation_level=None)
    conn.backup(memory)
    conn.close()
    return memory


def _open_readonly(store_path: Path) -> "Store":
    version, query = _inspect(store_path)
    try:
        if not version:  # no store yet: read an empty one, create nothing
            conn = sqlite3.connect(":memory:", isolation_level=None)
        else:
            conn = sqlite3.connect(_uri(store_path, query), uri=True, isolation_level=None,
                                   timeout=BUSY_TIMEOUT_MS / 1000)
            if version < SCHEMA_VERSION:  # an older store: upgrade a copy in memory, leave the file alone
                conn = _memory_copy(conn)
        migrate(conn)  # a no-op on a current store
    except sqlite3.DatabaseError as exc:
        raise _store_error(store_path, exc, "read") from None
    return Store(store_path, conn)


def open_store(path: str | os.PathLike | None = None, readonly: bool = False) -> "Store":
    """Open the store at ``path`` or the default path.

    Writable (default): created on first use, migrated if older, refused (UserError) if it cannot be
    written. ``readonly``: never writes — a missing store reads as empty, an older one is upgraded in
    memory, a store on a read-only file system or folder is read as it is."""
    store_path = resolve_store_path(path)
    return _open_readonly(store_path) if readonly else _open_writable(store_path)


def check_store_writable(path: str | os.PathLike | None = None) -> Path:
    """Before long work: fail now (one-line UserError) if records could not be written to the store
    later. An existing store is opened (and migrated); a missing one is only probed, not created."""
    store_path = resolve_store_path(path)
    if not store_path.exists():
        _check_creatable(store_path)
        return store_path
    with open_store(store_path):
        pass
    return store_path


StoreChoice = "str | os.PathLike | None | bool"  # a path, None: the default store, False: record nowhere


def check_store_choice(store) -> Path | None:
    """A stage's first step: fail now if ``store`` (see :data:`StoreChoice`) could not take its record later."""
    return None if store is False else check_store_writable(None if store is True else store)


def record_in_store(record: dict, store, base_dir: str | os.PathLike | None = None) -> Path | None:
    """A stage's last step: ingest its record into ``store`` (see :data:`StoreChoice`); returns the store's path."""
    if store is False:
        return None
    with open_store(None if store is True else store) as db:
        db.ingest(record, base_dir=base_dir)
    return db.path


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
    if not isinstance(record.get("schema"), int):  # the store keeps records for good: the envelope must be whole
        raise UserError(f"{kind} record has schema {record.get('schema')!r}; this mobiledepth reads schema <= {RECORD_SCHEMA}")
    check_record(record, kind)
    _NESTED_CHECKS.get(kind, lambda r: None)(record)
    return kind


def _validate_export(record: dict) -> None:
    require_fields(record, ("model",), "export record")
    for artifact in record["artifacts"]:
        require_fields(artifact, ("sha256",), "export artifact")


def _validate_bench(record: dict) -> None:
    for result in record["results"]:
        require_fields(result, ("artifact_sha256", "device", "delegate"), "bench result")


def _validate_store_export(record: dict) -> None:
    for inner in record["records"]:
        if isinstance(inner, dict) and inner.get("kind") == "store_export":
            raise UserError("nested store exports are not allowed")
        _validate(inner)


_STEP_KEYS = ("iteration", "estimated_ms", "whdr")


def _require_number(record: dict, key: str, what: str, nullable: bool = False) -> None:
    value = record.get(key)
    if (value is None and nullable) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return
    raise UserError(f"{what} has {key} = {value!r}, not a number; is it a prune.json written by 'mobiledepth prune'?")


def _validate_prune(record: dict) -> None:
    """Every key the store and the report read from a prune record (one-line error naming the first gap)."""
    require_fields(record["model"], ("name",), "prune record's model")
    _require_number(record, "target_ms", "prune record")
    if not isinstance(record["iterations"], list) or not record["iterations"]:
        raise UserError("prune record has no iterations; import the prune.json of a run that has started")
    steps = [(it, f"prune record's iterations[{n}]", _STEP_KEYS) for n, it in enumerate(record["iterations"])]
    if record.get("final") is not None:
        steps.append((record["final"], "prune record's final", _STEP_KEYS[1:]))
    for step, what, keys in steps:
        require_fields(step, keys, what)
        for key in ("iteration", "estimated_ms")[keys is not _STEP_KEYS:]:
            _require_number(step, key, what)
        _require_number(step, "measured_ms", what, nullable=True)
        _require_number(step, "whdr", what, nullable=True)


_NESTED_CHECKS: dict[str, Callable[[dict], None]] = {
    "export": _validate_export, "bench": _validate_bench, "prune": _validate_prune,
    "store_export": _validate_store_export,
}


# --------------------------------------------------------------------------- columns
# Each table's columns are listed once, below the migrations that made them: the INSERT, the row
# dataclass and its SELECT all come from these lists (a test holds them to the tables' DDL).

def _j(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _as_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _bool_or_none(value: int | None) -> bool | None:
    return None if value is None else bool(value)


_ENCODERS: dict[str, Callable[[Any], Any]] = {
    "value": lambda v: v, "json": _j, "text": _as_str, "flag": lambda v: int(bool(v)),
    "optional_flag": lambda v: None if v is None else int(bool(v)),
}
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "value": lambda v: v, "json": lambda v: json.loads(v) if v else None, "text": lambda v: v, "flag": bool,
    "optional_flag": _bool_or_none,
}


@dataclass(frozen=True)
class Column:
    """A stored column: where its value sits in the record (a dotted path; None: the store makes it),
    how it is kept (value / json / text / flag: 0 or 1 / optional_flag: 0, 1 or NULL) and whether rows read back show it."""

    name: str
    source: str | None = ""  # "": the record's key of the column's own name
    codec: str = "value"
    in_row: bool = True

    def encode(self, record: dict, made: dict[str, Any]) -> Any:
        value = made[self.name] if self.source is None else _lookup(record, self.source or self.name)
        return _ENCODERS[self.codec](value)

    def decode(self, value: Any) -> Any:
        return _DECODERS[self.codec](value)


def _lookup(record: Any, path: str) -> Any:
    """The value at a dotted path (``device.profile``, ``input_size.0``); None where a step is missing."""
    value = record
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _values(columns: tuple[Column, ...], record: dict, made: dict[str, Any]) -> tuple:
    return tuple(column.encode(record, made) for column in columns)


def _names(columns: tuple[Column, ...]) -> str:
    return ", ".join(column.name for column in columns)


# Every key of android_bench's BenchResult (``new_result``) -> its column; test_report_store checks
# that each field new_result defines is stored, so adding one there cannot be silently dropped here.
BENCH_COLUMNS = (
    Column("artifact_sha256"), Column("model_name"), Column("model_path"), Column("precision"),
    Column("device_profile", "device.profile"), Column("device_serial", "device.serial"),
    Column("device_model_code", "device.model_code"), Column("soc", "device.soc"),
    Column("android", "device.android", "text"), Column("delegate"), Column("threads"), Column("tool"),
    Column("tool_version"), Column("runs"), Column("warmup"), Column("samples_us", codec="json"),
    Column("samples_kind"), Column("tool_stats", "stats", "json"), Column("init_us"), Column("first_inference_us"),
    Column("warmup_avg_us"), Column("memory", codec="json"), Column("delegation_status", "delegation.status"),
    Column("delegation", codec="json"), Column("fallback", codec="flag"), Column("failed", codec="flag"),
    Column("error"), Column("started_at"), Column("duration_s"),
    Column("ingested_at", None, in_row=False), Column("raw", None, "json"), Column("record_key", None, in_row=False),
)
ARTIFACT_COLUMNS = (  # read from the export record with its one artifact under "artifact" (the stored raw)
    Column("sha256", "artifact.sha256"), Column("model_name", "model.name"), Column("spec_hash", "model.spec_hash"),
    Column("params", "model.params"), Column("macs", "model.macs"), Column("format", "artifact.format"),
    Column("precision", "artifact.precision"), Column("layout", "artifact.layout", in_row=False),
    Column("input_h", "input_size.0", in_row=False), Column("input_w", "input_size.1", in_row=False),
    Column("size_bytes", "artifact.size_bytes", in_row=False), Column("parity", "artifact.parity", "json"),
    Column("checkpoint_sha256", "model.checkpoint_sha256"), Column("path", None),
    Column("created_at", in_row=False), Column("ingested_at", None, in_row=False),
    Column("raw", None, "json", in_row=False), Column("random_weights", None, "optional_flag"), Column("seed", None),
)
EVAL_COLUMNS = (
    Column("artifact_sha256"), Column("model_name"), Column("model_path", in_row=False), Column("backend"),
    Column("precision"), Column("dataset_name", "dataset.name"), Column("dataset_hash", "dataset.hash"),
    Column("metric"), Column("value"), Column("correct", in_row=False), Column("pairs"), Column("created_at"),
    Column("ingested_at", None, in_row=False), Column("raw", None, "json", in_row=False),
    Column("record_key", None, in_row=False), Column("random_weights", None, "optional_flag"), Column("seed", None),
)
PRUNE_RUN_COLUMNS = (
    Column("run_id", None), Column("model_name", "model.name"), Column("device"), Column("delegate"),
    Column("target_ms"), Column("choose", None), Column("status"), Column("run_dir"), Column("created_at"),
    Column("finished_at", in_row=False), Column("steps", None, in_row=False),
    Column("ingested_at", None, in_row=False), Column("raw", None, "json", in_row=False),
)
PRUNE_STEP_COLUMNS = (  # read from one iteration (or the final step) of a prune record
    Column("run_id", None, in_row=False), Column("iteration", None), Column("final", None, "flag"),
    Column("step_target_ms", "target_ms"), Column("estimated_ms"), Column("measured_ms"), Column("whdr"),
    Column("params"), Column("chosen_group", "chosen.group"), Column("chosen_width", "chosen.width"),
    Column("widths", codec="json"), Column("checkpoint_sha256"), Column("artifact_sha256"),
    Column("finished_at", None, in_row=False), Column("ingested_at", None, in_row=False),
)
TABLE_COLUMNS = {"artifacts": ARTIFACT_COLUMNS, "bench_results": BENCH_COLUMNS, "evals": EVAL_COLUMNS,
                 "prune_runs": PRUNE_RUN_COLUMNS, "prune_steps": PRUNE_STEP_COLUMNS}


def _row_type(name: str, doc: str, columns: tuple[Column, ...], before=(), after=()) -> type:
    """A dataclass with a field per shown column, between the fields ``before`` and ``after`` (name, default)."""
    hidden_in_repr = {"raw"}
    specs = [(n, Any) for n in before] + [
        (c.name, Any, field(repr=c.name not in hidden_in_repr)) for c in columns if c.in_row
    ] + [(n, Any, field(default=d)) for n, d in after]
    row_type = make_dataclass(name, specs)
    row_type.__doc__ = doc
    return row_type


def _row(row_type: type, row: sqlite3.Row, columns: tuple[Column, ...], **extra: Any) -> Any:
    """A row dataclass from a SELECT row: the shown columns decoded, plus ``extra`` fields."""
    return row_type(**{c.name: c.decode(row[c.name]) for c in columns if c.in_row}, **extra)


BenchRow = _row_type("BenchRow", "One stored benchmark result with its statistics (derived from the raw samples when"
                     " given; ``stats_source``: samples | tool | none).", BENCH_COLUMNS, before=("id",),
                     after=(("stats", None), ("stats_source", "none")))
ArtifactRow = _row_type("ArtifactRow", "One stored artifact (an exported file), keyed by content hash; "
                        "``random_weights`` None: the export record did not say.", ARTIFACT_COLUMNS,
                        after=(("input_size", (None, None)),))
EvalRow = _row_type("EvalRow", "One stored evaluation (a metric of an artifact or checkpoint on a dataset).",
                    EVAL_COLUMNS, before=("id",))
PruneStepRow = _row_type("PruneStepRow", "One step of a stored NetAdapt run (an iteration, or the final model), "
                         "with its run's settings.", PRUNE_RUN_COLUMNS + PRUNE_STEP_COLUMNS)


def _insert_new(conn: sqlite3.Connection, table: str, rows: list[tuple], summary: IngestSummary, counter: str) -> None:
    """INSERT OR IGNORE each row of ``table``; count the new ones in ``summary.<counter>``, the rest as duplicates."""
    columns = TABLE_COLUMNS[table]
    sql = f"INSERT OR IGNORE INTO {table} ({_names(columns)}) VALUES ({','.join('?' * len(columns))})"
    for row in rows:
        if conn.execute(sql, row).rowcount:
            setattr(summary, counter, getattr(summary, counter) + 1)
        else:
            summary.duplicates += 1


def _ingest_export(conn: sqlite3.Connection, record: dict, base_dir: Path | None) -> IngestSummary:
    summary = IngestSummary("export")
    random_weights, seed = weights_origin(record)
    sql = (f"INSERT OR REPLACE INTO artifacts ({_names(ARTIFACT_COLUMNS)})"
           f" VALUES ({','.join('?' * len(ARTIFACT_COLUMNS))})")
    for artifact in record["artifacts"]:
        path = artifact.get("path")
        if path and base_dir is not None and not Path(path).is_absolute():
            path = str((base_dir / path).resolve())
        raw = {k: v for k, v in record.items() if k != "artifacts"}  # everything, for a faithful export
        raw["artifact"] = artifact
        made = {"path": path, "ingested_at": utc_timestamp(), "raw": raw, "random_weights": random_weights, "seed": seed}
        conn.execute(sql, _values(ARTIFACT_COLUMNS, raw, made))
        summary.artifacts += 1
    return summary


def _bench_row(result: dict) -> tuple:
    """The column values of one BenchResult (raw samples kept verbatim)."""
    made = {"ingested_at": utc_timestamp(), "raw": result, "record_key": sha256_json(result)}
    return _values(BENCH_COLUMNS, result, made)


def _ingest_bench(conn: sqlite3.Connection, record: dict, base_dir: Path | None) -> IngestSummary:
    summary = IngestSummary("bench")
    _insert_new(conn, "bench_results", [_bench_row(r) for r in record["results"]], summary, "bench_results")
    return summary


def _ingest_eval(conn: sqlite3.Connection, record: dict, base_dir: Path | None) -> IngestSummary:
    summary = IngestSummary("eval")
    random_weights, seed = weights_origin(record)
    made = {"ingested_at": utc_timestamp(), "raw": record, "record_key": sha256_json(record),
            "random_weights": random_weights, "seed": seed}
    _insert_new(conn, "evals", [_values(EVAL_COLUMNS, record, made)], summary, "evals")
    return summary


def prune_run_id(record: dict) -> str:
    """A prune run's identity: its start checkpoint and spec, start time, device, delegate and target."""
    model = record["model"]
    key = [model.get("checkpoint_sha256"), model.get("spec_hash"), record["created_at"], record["device"],
           record["delegate"], record["target_ms"]]
    return sha256_json(key)[:16]


def _final_artifact(export_dir: Path) -> dict | None:
    """The exported TFLite artifact (the one the final bench timed) of an export run, with the model's params."""
    try:
        export = read_export_record(export_dir)
    except UserError:  # no (readable) export: the final step stays unlinked
        return None
    tflite = export.tflite_artifact()
    if tflite is None:
        return None
    return {"artifact_sha256": tflite.get("sha256"), "params": export.model.get("params")}


def _resolve_prune_files(record: dict, base_dir: Path) -> None:
    """Fill in what a prune.json written before it recorded them leaves to the run directory: each step's
    checkpoint sha256, the final artifact and its params (a record that carries them is not completed)."""
    final = record.get("final")
    for step in record["iterations"] + ([final] if final else []):
        path = base_dir / step["checkpoint"] if step.get("checkpoint") else None
        if "checkpoint_sha256" not in step and path is not None and path.is_file():
            step["checkpoint_sha256"] = sha256_file(path)
    if final and final.get("export_dir") and "artifact_sha256" not in final:
        linked = _final_artifact(base_dir / final["export_dir"])
        if linked:
            final["params"] = final.get("params") or linked["params"]
            final["artifact_sha256"] = linked["artifact_sha256"]
    record.setdefault("run_dir", str(base_dir.resolve()))


def _prune_step_rows(record: dict, run_id: str) -> list[tuple]:
    """One row per iteration, plus the final model (numbered as the last iteration, ``final`` = 1)."""
    iterations = record["iterations"]
    steps = [(it, False, it.get("finished_at")) for it in iterations]
    if record.get("final") is not None:
        steps.append((record["final"], True, record.get("finished_at")))
    now = utc_timestamp()
    return [
        _values(PRUNE_STEP_COLUMNS, step, {"run_id": run_id, "iteration": step.get("iteration", iterations[-1]["iteration"]),
                                           "final": final, "finished_at": finished_at, "ingested_at": now})
        for step, final, finished_at in steps
    ]


_UPSERT_PRUNE_RUN = (
    f"INSERT INTO prune_runs ({_names(PRUNE_RUN_COLUMNS)}) VALUES ({','.join('?' * len(PRUNE_RUN_COLUMNS))})"
    " ON CONFLICT(run_id) DO UPDATE SET status = excluded.status, finished_at = excluded.finished_at,"
    " steps = excluded.steps, ingested_at = excluded.ingested_at, raw = excluded.raw"
    " WHERE excluded.steps >= prune_runs.steps"
)


def _ingest_prune(conn: sqlite3.Connection, record: dict, base_dir: Path | None) -> IngestSummary:
    """The run (newest record wins: a resumed run re-imported adds its new steps) and its steps."""
    summary = IngestSummary("prune")
    run_id = prune_run_id(record)
    rows = _prune_step_rows(record, run_id)
    made = {"run_id": run_id, "choose": (record.get("settings") or {}).get("choose", "accuracy"), "steps": len(rows),
            "ingested_at": utc_timestamp(), "raw": record}
    conn.execute(_UPSERT_PRUNE_RUN, _values(PRUNE_RUN_COLUMNS, record, made))
    _insert_new(conn, "prune_steps", rows, summary, "prune_steps")
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


def _bench_from_sql(row: sqlite3.Row) -> BenchRow:
    """A stored result; its statistics from the raw samples (android_bench's ``stats_from_samples``), else
    the tool's own when it gave no raw samples, else none."""
    from android_bench.result import stats_from_samples

    bench = _row(BenchRow, row, BENCH_COLUMNS, id=row["id"])
    bench.samples_us = bench.samples_us or []
    tool_stats = bench.tool_stats
    if bench.samples_us and bench.samples_kind != "per_invocation_avg":
        bench.stats, bench.stats_source = stats_from_samples(bench.samples_us), "samples"
    elif tool_stats and any(v is not None for v in tool_stats.values()):
        bench.stats, bench.stats_source = tool_stats, "tool"
    return bench


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
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                summary = _INGESTERS[kind](conn, record, Path(base_dir) if base_dir is not None else None)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:  # read-only, disk full, locked past the busy timeout
            raise _store_error(self.path, exc, "write to") from None
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
        return {
            r["sha256"]: _row(ArtifactRow, r, ARTIFACT_COLUMNS, input_size=(r["input_h"], r["input_w"]))
            for r in self._rows("SELECT * FROM artifacts ORDER BY sha256")
        }

    def bench_results(self) -> list[BenchRow]:
        """Every benchmark result, oldest first."""
        return [_bench_from_sql(r) for r in self._rows("SELECT * FROM bench_results ORDER BY id")]

    def evals(self) -> list[EvalRow]:
        """Every evaluation, oldest first."""
        return [_row(EvalRow, r, EVAL_COLUMNS, id=r["id"]) for r in self._rows("SELECT * FROM evals ORDER BY id")]

    def prune_steps(self) -> list[PruneStepRow]:
        """Every step of every stored NetAdapt run: runs oldest first, iterations in order, the final step last."""
        run_level = ", ".join(f"r.{c.name}" for c in PRUNE_RUN_COLUMNS if c.in_row and c.name != "run_id")
        rows = self._rows(
            f"SELECT s.*, {run_level} FROM prune_steps s JOIN prune_runs r USING (run_id)"
            " ORDER BY r.created_at, s.run_id, s.final, s.iteration"
        )
        return [_row(PruneStepRow, r, PRUNE_RUN_COLUMNS + PRUNE_STEP_COLUMNS) for r in rows]

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
            records.append(new_record("bench", results=results))
        records.extend(json.loads(r["raw"]) for r in self._rows("SELECT raw FROM evals ORDER BY id"))
        records.extend(json.loads(r["raw"]) for r in self._rows("SELECT raw FROM prune_runs ORDER BY created_at, run_id"))
        return new_record("store_export", store_schema=SCHEMA_VERSION, records=records)

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
