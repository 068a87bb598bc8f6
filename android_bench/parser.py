"""Parse the output of TensorFlow Lite's ``benchmark_model`` (and LiteRT's CompiledModel tool).

Handles every variant listed in docs/bench.md: plain lines or lines prefixed with ``INFO:`` /
``VERBOSE:`` / ``ERROR:`` / ``WARNING:`` or a logcat header; old and new summary lines;
stats lines with or without percentiles, ``count=N curr=X`` when all runs were equal,
scientific notation; the three memory lines; every delegation message (including the
silent CPU fallback, and the list of ops a delegate refuses); failures; the op-profiling table; and the LiteRT ``BENCHMARK RESULTS``
block in milliseconds. A value the output does not give is ``None``, never a guess.
"""

from __future__ import annotations

import re
from typing import Any

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"

# logcat formats: threadtime "11-24 16:00:00.123  1234  1235 I tflite  : msg",
# time "11-24 16:00:00.123 I/tflite( 1234): msg", brief "I/tflite( 1234): msg", tag "I/tflite: msg".
_LOGCAT_PREFIXES = (
    re.compile(r"^\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[VDIWEF]\s+[^:]*?\s*:\s?"),
    re.compile(r"^(?:\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+)?[VDIWEF]/[^(:]+(?:\(\s*\d+\))?\s*:\s?"),
)
_LEVEL_PREFIX = re.compile(r"^(?:INFO|VERBOSE|ERROR|WARNING|WARN|DEBUG)\s*:\s?")
# LiteRT's Python tool logs "2026-12-02 01:28:45 INFO benchmark_litert_model: msg"; absl/glog "E0000 00:00:… file.cc:736] msg".
_PY_LOGGER_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:,\d+)? (?:INFO|WARNING|ERROR|DEBUG) [\w.]+: ")
_GLOG_PREFIX = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.]+:\d+\] ")
_WARNING_LINE = re.compile(r"^(?:WARNING|WARN|Warning)\b|^W\d{4} |^\d{4}-\d\d-\d\d [\d:,]+ WARNING ")
_SOURCE_PREFIX = re.compile(r"^\[[\w./-]+:\d+\]\s*")  # LiteRT log lines: "[file.cc:123] msg"

_STATS = re.compile(r"(?<![\w)])count=(\d+)(.*)$")
_KEY_VALUE = re.compile(rf"(\w+)=({_NUM})")
_SUMMARY = re.compile(r"(Average inference timings in us|Inference timings in us):\s*(.*)$")
_SUMMARY_KEYS = {
    "Init": "init_us",
    "First inference": "first_inference_us",
    "Warmup (avg)": "warmup_avg_us",
    "Warmup": "warmup_avg_us",
    "Inference (avg)": "inference_avg_us",
    "Inference": "inference_avg_us",
}
_INIT_SESSION = re.compile(rf"Initialized session in ({_NUM})\s*ms")
_MEM_INIT_OVERALL = re.compile(
    rf"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\):"
    rf"\s*init=({_NUM})\s+overall=({_NUM})"
)
_MEM_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring:\s*({_NUM})")

_FULL = re.compile(r"Explicitly applied (.+?) delegate, and the model graph will be completely executed")
_PARTIAL = re.compile(
    r"Explicitly applied (.+?) delegate, and the model graph will be partially executed by the "
    r"delegate w/ (\d+) delegate kernels"
)
_NONE = re.compile(r"Though (.+?) delegate is explicitly applied, the model graph will not be executed")
_REPLACING = re.compile(
    r"Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \(([^)]*)\) node"
    r"(?:, yielding (\d+) partitions)?"
)
_UNSUPPORTED_HEADER = re.compile(r"Following operations are not supported by (.+?) delegate")
_UNSUPPORTED_OP = re.compile(r"^([A-Z][A-Z0-9_]*(?: [A-Za-z0-9_]+)?): (.+)$")
_GPU_SPLIT = re.compile(r"(\d+) operations will run on the GPU, and the remaining (\d+) operations? will run on the CPU")
_GPU_KERNELS = re.compile(r"Created (\d+) GPU delegate kernels")
_FAILED_APPLY = re.compile(r"Failed to apply (.+?) delegate")
_NNAPI_UNSUPPORTED = re.compile(r"NNAPI acceleration is unsupported on this platform")
_NOT_LOADED = re.compile(r"\b(GPU|NPU|CPU) accelerator could not be loaded and registered")
_FULLY_ACCELERATED = re.compile(r"^Fully accelerated:\s*(True|False)\b")
_ACCELERATORS = re.compile(r"^Accelerators:\s*([A-Z| ]+)$")

_FAILURES = re.compile(
    r"Benchmarking failed|Failed to apply .*delegate|failed to prepare|Failed to invoke|"
    r"Failed to allocate tensors|Failed to construct interpreter|Failed to mmap model|"
    r"Failed to load model|Could not open '|Segmentation fault|Aborted|Fatal signal \d+|"
    r"CANNOT LINK EXECUTABLE|not executable|Permission denied|No such file or directory|"
    r"inaccessible or not found|: not found$|Run failed|^Traceback \(most recent call last\)|"
    r"Failed to initialize .*environment|Requesting full delegation and CPU acceleration are incompatible|"
    r"Model is not fully accelerated|^[A-Z]\w*Error: ",
    re.IGNORECASE,
)

_LITERT_BANNER = "========== BENCHMARK RESULTS =========="  # the C++ tool's frame; the Python tool's is
_LITERT_PY_TITLE = "BENCHMARK RESULTS"  # "====…" / " BENCHMARK RESULTS" / "====…"
_LITERT_MS = {
    "Model initialization": "init_us",
    "Warmup (first)": "first_inference_us",
    "Warmup (avg)": "warmup_avg_us",
    "Inference (avg)": "inference_avg_us",
}
_LITERT_LINE = re.compile(rf"^([A-Za-z][A-Za-z0-9 ()]+?):\s+({_NUM})\s*(ms|MB)?(?:\s*\((\d+) runs\))?\s*$")
_LITERT_STATS = {"Inference (min)": "min", "Inference (max)": "max", "Inference (median)": "median",
                 "Inference (p5)": "p5", "Inference (p95)": "p95", "Inference (std)": "std"}
_LITERT_MEM = {"Init footprint": "init_mb", "Overall footprint": "overall_mb", "Peak memory": "peak_mb"}

_PROFILE_START = re.compile(r"Operator-wise Profiling Info for Regular Benchmark Runs")
_PROFILE_OTHER = re.compile(r"Profiling Info for (?!Regular)|Operator-wise Profiling Info for (?!Regular)")
_PROFILE_SECTION = re.compile(r"^=+\s*(.+?)\s*=+$")
_PROFILE_COLUMNS = {
    "node type": "node_type",
    "start": "start_ms",
    "first": "first_ms",
    "avg ms": "avg_ms",
    "%": "percent",
    "avg %": "percent",
    "cdf%": "cdf_percent",
    "cdf %": "cdf_percent",
    "mem kb": "mem_kb",
    "times called": "times_called",
    "name": "name",
    "count": "count",
}
_INT_COLUMNS = {"times_called", "count"}
_TEXT_COLUMNS = {"node_type", "name"}


def strip_prefix(line: str) -> str:
    """Remove a logcat header, a log-level prefix and a LiteRT ``[file:line]`` tag from one line."""
    text = line.rstrip("\r\n")
    for pattern in _LOGCAT_PREFIXES:
        stripped = pattern.sub("", text, count=1)
        if stripped != text:
            text = stripped
            break
    text = _PY_LOGGER_PREFIX.sub("", text, count=1)
    text = _GLOG_PREFIX.sub("", text, count=1)
    text = _LEVEL_PREFIX.sub("", text, count=1)
    return _SOURCE_PREFIX.sub("", text, count=1)


def _number(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() and "e" not in text.lower() and "." not in text else value


def parse_stats_line(text: str) -> dict[str, Any] | None:
    """``count=N first=… curr=… min=… max=… avg=… std=… [p5=… median=… p95=…]`` → dict.

    ``count=N curr=X`` (every run took the same time) gives min=max=avg=X and std=0,
    which is what the tool means by it. Returns None when the line has no ``count=``.
    """
    match = _STATS.search(text)
    if not match:
        return None
    stats: dict[str, Any] = {k: None for k in ("count", "first", "curr", "min", "max", "avg", "std", "p5", "median", "p95")}
    stats["count"] = int(match.group(1))
    for key, value in _KEY_VALUE.findall(match.group(2)):
        if key in stats:
            stats[key] = _number(value)
    if stats["count"] and stats["avg"] is None and stats["curr"] is not None and stats["min"] is None:
        same = stats["curr"]  # "count=N curr=X(all same)"
        stats.update(first=same, min=same, max=same, avg=same, std=0)
    return stats


def _empty_result() -> dict[str, Any]:
    return {
        "format": None,
        "init_us": None,
        "first_inference_us": None,
        "warmup_avg_us": None,
        "inference_avg_us": None,
        "stats": None,
        "warmup_stats": None,
        "memory": {"init_mb": None, "overall_mb": None, "peak_mb": None},
        "delegation": {
            "status": None,
            "delegate": None,
            "delegated_nodes": None,
            "total_nodes": None,
            "kernels": None,
            "partitions": None,
            "unsupported_ops": [],  # [{"op", "reason"}] as the delegate listed them
            "delegates": {},  # every delegate the output names -> its own status (two in one run: both)
            "fully_accelerated": None,  # LiteRT 2.x: the CompiledModel's own answer (Python tool)
            "not_loaded": [],  # LiteRT 2.x accelerators that "could not be loaded and registered"
            "accelerators": None,  # LiteRT 2.x Python tool: the accelerators it asked for, e.g. ["GPU", "CPU"]
        },
        "op_profile": None,
        "failed": False,
        "error": None,
    }


def parse_output(text: str) -> dict[str, Any]:
    """Parse one benchmark_model output into a dict (see module docstring)."""
    result = _empty_result()
    lines = [strip_prefix(raw) for raw in text.splitlines()]
    stats_lines: list[dict[str, Any]] = []
    replacing: list[dict[str, Any]] = []
    failures: list[str] = []
    error_lines: list[str] = []
    in_litert = False
    skip_rule = False
    litert_stats: dict[str, Any] = {}
    profile_lines: list[str] = []
    in_profile = False
    in_unsupported = False
    warning = False

    for raw, line in zip(text.splitlines(), lines):
        body = line.strip()
        warning = _is_warning(raw, warning)
        if _PROFILE_START.search(body):
            in_profile = True
            continue
        if in_profile:
            if _PROFILE_OTHER.search(body) or _SUMMARY.search(body):
                in_profile = False
            else:
                profile_lines.append(line)
                continue
        if body in (_LITERT_BANNER, _LITERT_PY_TITLE):
            in_litert, skip_rule = True, body == _LITERT_PY_TITLE
            result["format"] = "litert" if body == _LITERT_BANNER else "litert_python"
            continue
        if in_litert:
            if body.startswith("=====") and body.strip("=") == "":
                in_litert, skip_rule = skip_rule, False  # the Python tool's title sits between two rules
                continue
            _parse_litert_line(body, result, litert_stats)
            continue
        if in_unsupported and (m := _UNSUPPORTED_OP.match(body)):
            result["delegation"]["unsupported_ops"].append({"op": m.group(1), "reason": m.group(2)})
            continue
        in_unsupported = bool(_UNSUPPORTED_HEADER.search(body))
        if raw.lstrip().startswith(("ERROR", "E/")) or re.match(r"^\d\d-\d\d .*\sE\s", raw):
            error_lines.append(body)
        if not warning and _FAILURES.search(body):
            failures.append(body)
        if _parse_litert_fact(body, result["delegation"]):
            continue
        if body.startswith(("Timings (microseconds):", "Memory (bytes):")):
            continue  # op-profiler summaries, not wall-clock runs
        stats = parse_stats_line(body)
        if stats is not None:
            stats_lines.append(stats)
            continue
        if _parse_summary(body, result):
            result["format"] = result["format"] or "tflite"
            continue
        if result["init_us"] is None and (m := _INIT_SESSION.search(body)):
            result["_init_session_us"] = float(m.group(1)) * 1000.0
        if m := _MEM_INIT_OVERALL.search(body):
            result["memory"]["init_mb"] = float(m.group(1))
            result["memory"]["overall_mb"] = float(m.group(2))
        elif m := _MEM_PEAK.search(body):
            result["memory"]["peak_mb"] = float(m.group(1))
        _parse_delegation(body, result["delegation"], replacing)

    _assign_stats(result, stats_lines, litert_stats)
    init_session = result.pop("_init_session_us", None)
    if result["init_us"] is None and init_session is not None:
        result["init_us"] = init_session
    _settle_delegation(result["delegation"], replacing)
    if profile_lines:
        result["op_profile"] = parse_op_profile(profile_lines)
    _settle_failure(result, failures, error_lines)
    return result


def _is_warning(raw: str, previous: bool) -> bool:
    """A warning line (never a failure), or the "└ …" continuation of one."""
    text = raw.lstrip()
    if text.startswith("\u2514"):
        return previous
    return bool(_WARNING_LINE.match(text))


def _parse_litert_fact(body: str, delegation: dict[str, Any]) -> bool:
    """LiteRT 2.x lines about the accelerators: full acceleration, load failures, the requested set."""
    if m := _FULLY_ACCELERATED.match(body):
        delegation["fully_accelerated"] = m.group(1) == "True"
    elif m := _NOT_LOADED.search(body):
        name = m.group(1).lower()
        if name not in delegation["not_loaded"]:
            delegation["not_loaded"].append(name)
    elif m := _ACCELERATORS.match(body):
        delegation["accelerators"] = [a.strip() for a in m.group(1).split("|") if a.strip()]
    else:
        return False
    return True


def _parse_summary(body: str, result: dict[str, Any]) -> bool:
    match = _SUMMARY.search(body)
    if not match:
        return False
    for part in match.group(2).split(","):
        key, _, value = part.partition(":")
        field = _SUMMARY_KEYS.get(key.strip())
        if field and re.fullmatch(_NUM, value.strip()):
            result[field] = _number(value.strip())
    return True


def _parse_litert_line(body: str, result: dict[str, Any], litert_stats: dict[str, Any]) -> None:
    match = _LITERT_LINE.match(body)
    if not match:
        return
    key, value, unit, runs = match.group(1).strip(), float(match.group(2)), match.group(3), match.group(4)
    if key in _LITERT_MS and unit == "ms":
        result[_LITERT_MS[key]] = value * 1000.0
        if key == "Inference (avg)":
            litert_stats["avg"] = value * 1000.0
            if runs is not None:
                litert_stats["count"] = int(runs)
    elif key in _LITERT_STATS and unit in ("ms", None):
        litert_stats[_LITERT_STATS[key]] = value * 1000.0  # the C++ tool prints std in ms without a unit
    elif key in _LITERT_MEM and unit == "MB":
        result["memory"][_LITERT_MEM[key]] = value


def _assign_stats(result: dict[str, Any], stats_lines: list[dict[str, Any]], litert_stats: dict[str, Any]) -> None:
    """The tool prints warm-up stats first and regular-run stats second; keep both apart."""
    if len(stats_lines) >= 2:
        result["warmup_stats"], result["stats"] = stats_lines[-2], stats_lines[-1]
    elif len(stats_lines) == 1:
        only = stats_lines[0]
        warm, infer = result["warmup_avg_us"], result["inference_avg_us"]
        # A lone line is the regular runs unless the summary says it was the warm-up.
        if infer is not None and warm is not None and only["avg"] == warm and only["avg"] != infer:
            result["warmup_stats"] = only
        else:
            result["stats"] = only
    if result["stats"] is None and litert_stats:
        stats = {k: None for k in ("count", "first", "curr", "min", "max", "avg", "std", "p5", "median", "p95")}
        stats.update(litert_stats)
        result["stats"] = stats
    if result["inference_avg_us"] is None and result["stats"] and result["stats"].get("avg") is not None:
        result["inference_avg_us"] = result["stats"]["avg"]
        result["format"] = result["format"] or "tflite"
    elif result["stats"] and result["format"] is None:
        result["format"] = "tflite"


def _note_status(delegation: dict[str, Any], delegate: str, status: str, **counts: Any) -> None:
    """One delegate's status; the run's status is the best one (a delegate that took the graph wins)."""
    key = _delegate_key(delegate) or delegate
    if _RANK.get(status, 0) >= _RANK.get(delegation["delegates"].get(key), -1):
        delegation["delegates"][key] = status
    if _RANK.get(status, 0) >= _RANK.get(delegation["status"], -1):
        delegation.update(status=status, delegate=delegate, **counts)


_RANK = {"none": 0, "partial": 1, "full": 2}


def _parse_delegation(body: str, delegation: dict[str, Any], replacing: list[dict[str, Any]]) -> None:
    if m := _PARTIAL.search(body):
        _note_status(delegation, m.group(1), "partial", kernels=int(m.group(2)))
    elif m := _FULL.search(body):
        _note_status(delegation, m.group(1), "full")
    elif m := _NONE.search(body):
        _note_status(delegation, m.group(1), "none", kernels=0)
    elif m := _FAILED_APPLY.search(body):
        _note_status(delegation, m.group(1), "none")
    elif _NNAPI_UNSUPPORTED.search(body):
        _note_status(delegation, "NNAPI", "none", kernels=0)
    elif m := _REPLACING.search(body):
        replacing.append(
            {
                "delegated": int(m.group(1)),
                "total": int(m.group(2)) if m.group(2) else None,
                "name": m.group(3),
                "partitions": int(m.group(4)) if m.group(4) else None,
            }
        )
    elif m := _GPU_SPLIT.search(body):
        on_gpu, on_cpu = int(m.group(1)), int(m.group(2))
        replacing.append({"delegated": on_gpu, "total": on_gpu + on_cpu, "name": "GPU", "partitions": None})
        delegation["_gpu_split"] = True
    elif m := _GPU_KERNELS.search(body):
        delegation["kernels"] = int(m.group(1))
        delegation["delegate"] = delegation["delegate"] or "GPU"


def _delegate_key(name: str | None) -> str | None:
    lowered = (name or "").lower()
    for key in ("xnnpack", "nnapi", "gpu", "hexagon", "coreml", "npu"):
        if key in lowered:
            return key
    return lowered or None


def _settle_delegation(delegation: dict[str, Any], replacing: list[dict[str, Any]]) -> None:
    """Fill node counts from the runtime's own lines; derive the status when only they exist."""
    gpu_split = delegation.pop("_gpu_split", False)
    if replacing:
        wanted = _delegate_key(delegation["delegate"])
        matching = [r for r in replacing if wanted is None or _delegate_key(r["name"]) == wanted]
        chosen = (matching or replacing)[-1]
        delegation["delegated_nodes"] = chosen["delegated"]
        delegation["total_nodes"] = chosen["total"]
        delegation["partitions"] = chosen["partitions"]
        if delegation["delegate"] is None:
            delegation["delegate"] = chosen["name"]
        if delegation["status"] is None and chosen["total"] is not None:
            if chosen["delegated"] == 0:
                delegation["status"] = "none"
            elif chosen["delegated"] < chosen["total"]:
                delegation["status"] = "partial"
            else:
                delegation["status"] = "full"
        if gpu_split and delegation["status"] == "full" and chosen["total"] != chosen["delegated"]:
            delegation["status"] = "partial"


def _settle_failure(result: dict[str, Any], failures: list[str], error_lines: list[str]) -> None:
    has_numbers = result["stats"] is not None or result["inference_avg_us"] is not None
    if failures:
        result["failed"] = True
        seen: list[str] = []
        for line in failures:
            if line not in seen:
                seen.append(line)
        result["error"] = "; ".join(seen[:4])
    elif not has_numbers:
        result["failed"] = True
        detail = "; ".join(dict.fromkeys(error_lines[-3:])) if error_lines else ""
        result["error"] = "no timing results in the output" + (f" ({detail})" if detail else "")


def _profile_cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.split("\t") if cell.strip()]


def _profile_value(column: str, cell: str) -> Any:
    if column in _TEXT_COLUMNS:
        return cell.strip("[]")
    cleaned = cell.rstrip("%")
    try:
        value = float(cleaned)
    except ValueError:
        return cell
    return int(value) if column in _INT_COLUMNS else value


def parse_op_profile(lines: list[str]) -> dict[str, Any]:
    """Parse the TAB-separated tables printed by ``--enable_op_profiling=true``.

    Returns ``{"ops": [...run order...], "top": [...], "by_type": [...], "timings": stats|None,
    "nodes_executed": N|None}``; each row is a dict keyed by the table's own column names.
    """
    tables: dict[str, list[dict[str, Any]]] = {}
    section: str | None = None
    columns: list[str] | None = None
    timings = None
    nodes = None
    for line in lines:
        body = line.strip()
        if not body:
            continue
        if m := _PROFILE_SECTION.match(body):
            section, columns = m.group(1), None
            tables.setdefault(section, [])
            continue
        if body.startswith("Timings (microseconds):"):
            timings = parse_stats_line(body)
            continue
        if m := re.match(r"Number of nodes executed:\s*(\d+)", body):
            nodes = int(m.group(1))
            continue
        cells = _profile_cells(line)
        if section is None or not cells:
            continue
        if all(c.startswith("[") and c.endswith("]") for c in cells):
            columns = [_PROFILE_COLUMNS.get(c.strip("[]").strip().lower(), c.strip("[]").strip().lower()) for c in cells]
            continue
        if columns and len(cells) == len(columns):
            tables[section].append({col: _profile_value(col, cell) for col, cell in zip(columns, cells)})
    return {
        "ops": tables.get("Run Order", []),
        "top": tables.get("Top by Computation Time", []),
        "by_type": tables.get("Summary by node type", []),
        "timings": timings,
        "nodes_executed": nodes,
    }
