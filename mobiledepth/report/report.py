"""`mobiledepth report`: the store rendered as the paper's tables and figure, for your models and phones.

One row per model x device x delegate (the latest result for each artifact / device / delegate /
thread count), with p50, p90, the spread (p95 - p5), parameters, MACs and the WHDR measured for
the same artifact (or, failing that, for the checkpoint it was exported from). The paper's
reported figures (model cards in ``models/*.yaml``, key ``card.reported``) are added as
reference rows, marked "reported, not measured". Flags: silent delegate fallback, partial
delegation, failed run, stale artifact (its spec changed since export). NetAdapt runs in the
store are drawn as trajectories on the plot and listed step by step ("Pruning runs").
Every row shows the artifact's input size; rows of random (untrained) weights and artifacts with
poor parity with PyTorch (e.g. int8) are flagged.

Formats: Markdown, a single self-contained HTML page (the latency-vs-WHDR plot embedded as a
base64 PNG), JSON and CSV.
"""

from __future__ import annotations

import base64
import csv
import fnmatch
import html
import io
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from mobiledepth.errors import UserError
from mobiledepth.store import ArtifactRow, BenchRow, EvalRow, PruneStepRow, Store

FORMATS = ("md", "html", "json", "csv")
REPORTED = "reported, not measured"
FLAG_TEXT = {
    "fallback": "silent delegate fallback: ran on CPU",
    "partial": "partial delegation: some ops on CPU",
    "failed": "FAILED run",
    "stale": "stale: the model's spec changed since this artifact was exported",
    "reported": REPORTED,
    "random": "random weights: untrained, the WHDR says nothing about a trained model",
    "parity": "poor parity with PyTorch",
}
POOR_ORDINAL_AGREEMENT = 0.98  # below this an artifact orders depth pairs visibly unlike PyTorch (int8: ~0.93-0.95)


@dataclass
class Row:
    """One line of the latency / accuracy table (measured or reported)."""

    source: str  # "measured" | "reported"
    model: str
    device: str
    delegate: str | None
    precision: str | None = None
    input_size: str | None = None  # "HxW" of the artifact, as --input-size takes it
    threads: int | None = None
    n: int | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    spread_ms: float | None = None  # p95 - p5
    mean_ms: float | None = None
    std_ms: float | None = None
    params: int | None = None
    macs: int | None = None
    whdr: float | None = None
    whdr_from: str | None = None  # "artifact" | "checkpoint" | "reported"
    whdr_dataset: str | None = None
    artifact_sha256: str | None = None
    spec_status: str | None = None  # "current" | "stale" | "unknown"
    flags: list[str] = field(default_factory=list)
    error: str | None = None
    tool: str | None = None
    started_at: str | None = None
    random_weights: bool | None = None  # None: the records do not say (written before the field existed)
    seed: int | None = None
    ordinal_agreement: float | None = None  # the artifact's parity with PyTorch


@dataclass
class PruneRun:
    """One NetAdapt run from the store: its steps in order, the final model (if any) last."""

    run_id: str
    model: str
    device: str
    delegate: str | None
    target_ms: float | None
    choose: str | None
    status: str | None
    run_dir: str | None
    created_at: str | None
    steps: list[PruneStepRow]

    @property
    def label(self) -> str:
        target = f", target {self.target_ms:.4g} ms" if self.target_ms is not None else ""
        return f"{self.model} on {self.device}/{self.delegate}{target}"


def step_latency(step: PruneStepRow) -> tuple[float, str]:
    """The latency a step is drawn at: measured on the device if it was, else the LUT estimate."""
    if step.measured_ms is not None:
        return step.measured_ms, "measured"
    return step.estimated_ms, "estimate"


@dataclass
class Report:
    """Everything a renderer needs."""

    rows: list[Row]
    generated_at: str
    store_path: str
    filters: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)
    prune_runs: list[PruneRun] = field(default_factory=list)

    @property
    def measured(self) -> list[Row]:
        return [r for r in self.rows if r.source == "measured"]


# --------------------------------------------------------------------------- building

def _norm(text: str) -> str:
    """Case- and punctuation-insensitive form: 'Galaxy S21' ~ 'galaxy_s21' ~ 'galaxy-s21'."""
    return re.sub(r"[^a-z0-9*?\[\]]", "", text.lower())


def _matches(value: str | None, patterns: Sequence[str]) -> bool:
    if not patterns:
        return True
    return value is not None and any(fnmatch.fnmatchcase(_norm(value), _norm(p)) for p in patterns)


def _ms(us: Any) -> float | None:
    return None if us is None else float(us) / 1000.0


def spec_hash_checker() -> Callable[[str, str | None], str]:
    """A cached ``(model_name, recorded_spec_hash) -> "current" | "stale" | "unknown"`` function.

    The current hash comes from the model registry (``mobiledepth.arch``), imported lazily;
    an unknown model or an unreadable spec gives "unknown", never an error.
    """
    cache: dict[str, set[str] | None] = {}

    def current_hashes(name: str) -> set[str] | None:
        if name not in cache:
            try:
                from mobiledepth.arch import spec_from_record, spec_hash
                from mobiledepth.io import sha256_json

                spec = spec_from_record(name, "the store")  # a zoo name only: a record names no code
                cache[name] = {spec_hash(spec), sha256_json(spec)}
            except Exception:  # unknown model, broken YAML, arch not importable: we cannot tell
                cache[name] = None
        return cache[name]

    def status(name: str, recorded: str | None) -> str:
        if not name or not recorded:
            return "unknown"
        hashes = current_hashes(name)
        if hashes is None:
            return "unknown"
        return "current" if recorded in hashes else "stale"

    return status


def model_card_paths() -> list[Path]:
    """The model YAML files (the registry's directories; ``models/`` of the repository by default)."""
    try:
        from mobiledepth.arch.spec import registry

        return list(registry().values())
    except Exception:
        repo_models = Path(__file__).resolve().parents[2] / "models"
        return sorted(repo_models.glob("*.y*ml"))


def _card_rows(model: str, reported: dict) -> list[Row]:
    """Rows of one ``reported`` mapping: params_m, whdr, latency_ms {device: {delegate: ms}}."""
    params_m = reported.get("params_m")
    params = int(round(float(params_m) * 1e6)) if params_m is not None else None
    whdr = reported.get("whdr")
    common = dict(source="reported", model=model, params=params, whdr=whdr,
                  whdr_from="reported" if whdr is not None else None, flags=["reported"])
    latency = reported.get("latency_ms") or {}
    if not latency:
        return [Row(device="-", delegate=None, **common)]
    return [
        Row(device=str(device), delegate=str(delegate), p50_ms=float(ms), **common)
        for device, per_delegate in latency.items()
        for delegate, ms in (per_delegate or {}).items()
    ]


def reported_rows(card_paths: Iterable[Path], notes: list[str] | None = None) -> list[Row]:
    """Reference rows from each model YAML's ``card.reported`` (and ``card.reported_variants``).

    A model without a card is skipped; a variant row is named ``<model> / <variant name>``.
    """
    import yaml

    rows: list[Row] = []
    for path in card_paths:
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            if notes is not None:
                notes.append(f"model card {path} skipped: {str(exc).splitlines()[0]}")
            continue
        card = doc.get("card") if isinstance(doc, dict) else None
        if not isinstance(card, dict):
            continue
        name = str(doc.get("name") or Path(path).stem)
        if isinstance(card.get("reported"), dict):
            rows += _card_rows(name, card["reported"])
        for variant in card.get("reported_variants") or []:
            if isinstance(variant, dict) and variant.get("name"):
                rows += _card_rows(f"{name} / {variant['name']}", variant)
    return rows


def _latest_per_combo(results: list[BenchRow]) -> list[BenchRow]:
    """The newest result per artifact x device x delegate x threads (results come oldest first)."""
    latest: dict[tuple, BenchRow] = {}
    for r in results:
        key = (r.artifact_sha256, r.device_profile, r.device_serial, r.delegate, r.threads, r.precision)
        latest[key] = r
    return list(latest.values())


def _accuracy(artifact: ArtifactRow | None, sha: str | None, evals: list[EvalRow]) -> tuple[EvalRow | None, str | None]:
    """The WHDR eval of the artifact itself, else of the checkpoint it was exported from (newest wins),
    and which of the two it is."""
    whdr = [e for e in evals if (e.metric or "").lower() == "whdr"]
    for key, origin in ((sha, "artifact"), (artifact.checkpoint_sha256 if artifact else None, "checkpoint")):
        if key:
            hits = [e for e in whdr if e.artifact_sha256 == key]
            if hits:
                return hits[-1], origin
    return None, None


def _weights_origin(artifact: ArtifactRow | None, accuracy: EvalRow | None) -> tuple[bool | None, int | None]:
    """Random weights if the artifact or the eval behind the WHDR says so; False if one says trained;
    None when neither record says (older records: shown as before, unflagged)."""
    said = [x for x in (artifact, accuracy) if x is not None and x.random_weights is not None]
    for x in said:
        if x.random_weights:
            return True, x.seed
    return (False, None) if said else (None, None)


def poor_parity(parity: dict | None) -> bool:
    """Published below its parity bar (fp16 of random weights), or, without a bar (int8), ordinal
    agreement with PyTorch under POOR_ORDINAL_AGREEMENT."""
    if not parity:
        return False
    if parity.get("passed") is False:
        return True
    ordinal = parity.get("ordinal_agreement")
    return isinstance(ordinal, (int, float)) and ordinal < POOR_ORDINAL_AGREEMENT


def _size_text(artifact: ArtifactRow | None) -> str | None:
    if artifact is None or None in artifact.input_size:
        return None
    return "x".join(str(v) for v in artifact.input_size)


def _device_label(r: BenchRow, multi_serial: set[str]) -> str:
    name = r.device_profile or r.device_model_code or "unknown device"
    if r.device_profile in multi_serial and r.device_serial:
        name = f"{name} #{r.device_serial}"
    return name


def _measured_row(r: BenchRow, artifact: ArtifactRow | None, evals: list[EvalRow], device: str,
                  spec_status: Callable[[str, str | None], str]) -> Row:
    model = (artifact.model_name if artifact else None) or r.model_name
    if not model:
        model = Path(r.raw.get("model_path") or "").name or (r.artifact_sha256 or "?")[:12]
    stats = r.stats or {}
    spread = None
    if stats.get("p95") is not None and stats.get("p5") is not None:
        spread = _ms(stats["p95"] - stats["p5"])
    accuracy, whdr_from = _accuracy(artifact, r.artifact_sha256, evals)
    status = spec_status(model, artifact.spec_hash if artifact else None)
    random_weights, seed = _weights_origin(artifact, accuracy)
    parity = artifact.parity if artifact else None
    flags = [flag for flag, on in (
        ("failed", r.failed), ("fallback", r.fallback), ("partial", not r.fallback and r.delegation_status == "partial"),
        ("stale", status == "stale"), ("random", random_weights), ("parity", poor_parity(parity))) if on]
    return Row(
        source="measured", model=model, device=device, delegate=r.delegate,
        precision=r.precision or (artifact.precision if artifact else None), input_size=_size_text(artifact),
        threads=r.threads,
        n=stats.get("count") if not r.failed else 0,
        p50_ms=None if r.failed else _ms(stats.get("median")),
        p90_ms=None if r.failed else _ms(stats.get("p90")),
        spread_ms=None if r.failed else spread,
        mean_ms=None if r.failed else _ms(stats.get("mean")),
        std_ms=None if r.failed else _ms(stats.get("std")),
        params=artifact.params if artifact else None, macs=artifact.macs if artifact else None,
        whdr=accuracy.value if accuracy else None, whdr_from=whdr_from,
        whdr_dataset=accuracy.dataset_name if accuracy else None, artifact_sha256=r.artifact_sha256,
        spec_status=status, flags=flags, error=r.error, tool=r.tool, started_at=r.started_at,
        random_weights=random_weights, seed=seed, ordinal_agreement=(parity or {}).get("ordinal_agreement"),
    )


def prune_runs(steps: Iterable[PruneStepRow]) -> list[PruneRun]:
    """Group stored steps (already in run order) into runs."""
    runs: dict[str, PruneRun] = {}
    for step in steps:
        if step.run_id not in runs:
            runs[step.run_id] = PruneRun(
                run_id=step.run_id, model=step.model_name or "?", device=step.device or "?", delegate=step.delegate,
                target_ms=step.target_ms, choose=step.choose, status=step.status, run_dir=step.run_dir,
                created_at=step.created_at, steps=[])
        runs[step.run_id].steps.append(step)
    return list(runs.values())


def _size_key(size: str | None) -> tuple[int, ...]:
    """ "128x128" before "256x256" (numerically); unknown first."""
    return tuple(int(v) for v in size.split("x")) if size else ()


def build_report(
    store: Store,
    devices: Sequence[str] = (),
    models: Sequence[str] = (),
    card_paths: Iterable[Path] | None = None,
    spec_status: Callable[[str, str | None], str] | None = None,
) -> Report:
    """Collect the rows of the report from ``store``, filtered by device / model globs.

    A filter that matches nothing (measured or reported) is a UserError listing what exists.
    """
    spec_status = spec_status or spec_hash_checker()
    notes: list[str] = []
    if not Path(store.path).exists():
        notes.append(f"there is no store at {store.path} yet (nothing measured): run export / bench / eval, "
                     "or 'mobiledepth store import'; or pass another with --store PATH")
    artifacts = store.artifacts()
    evals = store.evals()
    results = _latest_per_combo(store.bench_results())
    serials: dict[str, set] = {}
    for r in results:
        serials.setdefault(r.device_profile, set()).add(r.device_serial)
    multi_serial = {p for p, s in serials.items() if len(s) > 1}
    measured = [
        _measured_row(r, artifacts.get(r.artifact_sha256), evals, _device_label(r, multi_serial), spec_status)
        for r in results
    ]
    reported = reported_rows(model_card_paths() if card_paths is None else card_paths, notes)
    runs = prune_runs(store.prune_steps())
    everything = measured + reported
    for label, patterns, attr in (("device", devices, "device"), ("model", models, "model")):
        for pattern in patterns:
            if not any(_matches(getattr(row, attr), [pattern]) for row in everything + runs):
                known = sorted({getattr(row, attr) for row in everything + runs if getattr(row, attr) != "-"})
                listing = ", ".join(known) if known else "none (the store is empty: run bench or 'store import')"
                raise UserError(f"no {label} matches '{pattern}'; known {label}s: {listing}")
    rows = [
        row for row in everything
        if _matches(row.model, models) and _matches(row.device, devices)
    ]
    rows.sort(key=lambda r: (r.source != "measured", r.model, _size_key(r.input_size), r.device, r.delegate or "",
                             r.precision or "", r.threads or 0))
    return Report(
        rows=rows,
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        store_path=str(store.path),
        filters={"device": list(devices), "model": list(models)},
        notes=notes,
        prune_runs=[run for run in runs if _matches(run.model, models) and _matches(run.device, devices)],
    )


# --------------------------------------------------------------------------- the picture

def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated in (latency, error) — lower is better on both — sorted by latency."""
    front: list[tuple[float, float]] = []
    best_error = float("inf")
    for latency, error in sorted(points):
        if error < best_error:
            front.append((latency, error))
            best_error = error
    return front


def plot_points(report: Report) -> list[dict]:
    """One point per model x input size x device (its fastest successful delegate) having both p50 and WHDR."""
    best: dict[tuple, Row] = {}
    for row in report.rows:
        if row.p50_ms is None or row.whdr is None or "failed" in row.flags:
            continue
        key = (row.source, row.model, row.input_size, row.device)
        if key not in best or row.p50_ms < best[key].p50_ms:
            best[key] = row
    # a reported 'Galaxy S21' and a measured 'galaxy_s21' are one device: one colour, one name
    labels: dict[str, str] = {}
    for r in sorted(best.values(), key=lambda r: r.source != "measured"):
        labels.setdefault(_norm(r.device), r.device)
    return [
        {"source": r.source, "model": r.model, "input_size": r.input_size, "device": labels[_norm(r.device)],
         "delegate": r.delegate, "latency_ms": r.p50_ms, "whdr": r.whdr, "params": r.params,
         "random_weights": r.random_weights}
        for r in best.values()
    ]


def _draw_prune_runs(ax, runs: Sequence[PruneRun]) -> None:
    """Each run: its steps joined in order (filled: measured, hollow: LUT estimate), a star for the final
    model, and its target latency as a dashed vertical line, all in the run's colour."""
    import matplotlib.pyplot as plt

    for n, run in enumerate(runs):
        color = plt.cm.Dark2(n % 8)
        steps = [s for s in run.steps if s.whdr is not None]
        latencies = [step_latency(s) for s in steps]
        ax.plot([x for x, _ in latencies], [s.whdr for s in steps], "-", color=color, linewidth=1.2, alpha=0.8,
                zorder=2, label=run.label)
        for step, (x, source) in zip(steps, latencies):
            ax.scatter(x, step.whdr, s=170 if step.final else 30, marker="*" if step.final else "o",
                       color=color if source == "measured" else "white", edgecolors=color, linewidths=1.2, zorder=4)
        if run.target_ms is not None:
            ax.axvline(run.target_ms, color=color, linestyle="--", linewidth=1, zorder=1)
    for marker, face, text in (("o", "gray", "pruning step, measured on the device"),
                               ("o", "white", "pruning step, LUT estimate"),
                               ("*", "gray", "final model (long fine-tune)")):
        ax.scatter([], [], marker=marker, color=face, edgecolors="gray", s=60 if marker == "*" else 30, label=text)
    ax.plot([], [], "--", color="gray", linewidth=1, label="target latency of the run")


def render_plot_png(report: Report, dpi: int = 110) -> bytes:
    """Latency (p50) vs WHDR, a point per model per device, area by parameters, Pareto front per device,
    and each NetAdapt run as a line of steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = plot_points(report)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=dpi)
    try:
        devices = sorted({p["device"] for p in points})
        colors = {d: plt.cm.tab10(i % 10) for i, d in enumerate(devices)}
        max_latency = max((p["latency_ms"] for p in points), default=1.0)
        for p in points:
            size = 40 + 120 * (p["params"] / 1e6) if p["params"] else 60
            measured = p["source"] == "measured"
            ax.scatter(p["latency_ms"], p["whdr"], s=size, color=colors[p["device"]] if measured else "none",
                       edgecolors=colors[p["device"]], linewidths=1.5, marker="o" if measured else "D", zorder=3)
            label = p["model"].split(" / ")[-1]  # a card variant: its own name is enough
            label += f" {p['input_size']}" if p["input_size"] else ""
            label += " [random weights]" if p["random_weights"] else ""
            right = p["latency_ms"] > 0.7 * max_latency  # near the right edge: label on the left
            ax.annotate(f"{label} ({p['delegate']})", (p["latency_ms"], p["whdr"]), fontsize=7,
                        xytext=(-6 if right else 6, 5), textcoords="offset points", ha="right" if right else "left")
        for device in devices:
            for source, style in (("measured", "-"), ("reported", ":")):
                front = pareto_front([(p["latency_ms"], p["whdr"]) for p in points
                                      if p["device"] == device and p["source"] == source])
                if len(front) > 1:
                    xs, ys = zip(*front)
                    ax.plot(xs, ys, style, color=colors[device], linewidth=1.2, zorder=2)
            ax.scatter([], [], color=colors[device], label=device)
        if any(p["source"] == "reported" for p in points):
            ax.scatter([], [], color="none", edgecolors="gray", marker="D", label=REPORTED)
        runs = report.prune_runs
        if runs:
            _draw_prune_runs(ax, runs)
        if not points and not runs:
            ax.text(0.5, 0.5, "no model has both a latency and a WHDR yet\n(run bench and eval, or store import)",
                    ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      title="device / pruning run" if runs else "device", title_fontsize=7)
            ax.margins(x=0.15, y=0.12)
        title = "lines: Pareto front per device"
        if runs:
            title += "; connected steps: NetAdapt runs"
            ax.set_xlabel("latency (ms): p50 of the fastest delegate per device; pruning steps: as measured "
                          "by the run, else its LUT estimate", fontsize=8)
        else:
            ax.set_xlabel("latency p50 (ms, fastest delegate per device)")
        ax.set_ylabel("WHDR (lower is better)")
        ax.set_title(f"Latency vs accuracy (marker area ~ parameters; {title})", fontsize=9)
        ax.grid(True, alpha=0.3)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return buffer.getvalue()


# --------------------------------------------------------------------------- renderers

COLUMNS = (
    ("model", "model"), ("precision", "precision"), ("input_size", "input"), ("device", "device"), ("delegate", "delegate"),
    ("threads", "threads"), ("n", "n"), ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"),
    ("spread_ms", "spread ms (p95-p5)"), ("params", "params M"), ("macs", "MACs G"), ("whdr", "WHDR"),
    ("flags", "flags"),
)


def flag_text(row: Row, flag: str) -> str:
    """A flag in words, with its detail: the error of a failed run, the seed of random weights, the
    ordinal agreement of poor parity."""
    text = FLAG_TEXT[flag]
    if flag == "failed" and row.error:
        return f"{text}: {row.error}"
    if flag == "random" and row.seed is not None:
        return f"{text} (seed {row.seed})"
    if flag == "parity" and row.ordinal_agreement is not None:
        return f"{text}: ordinal agreement {row.ordinal_agreement:.3f} (under {POOR_ORDINAL_AGREEMENT})"
    return text


def _cell(row: Row, key: str) -> str:
    value = getattr(row, key)
    if key == "flags":
        return "; ".join(flag_text(row, f) for f in row.flags)
    if value is None:
        return "-"
    if key == "params":
        return f"{value / 1e6:.2f}"
    if key == "macs":
        return f"{value / 1e9:.2f}"
    if key == "whdr":
        suffix = " (ckpt)" if row.whdr_from == "checkpoint" else ""
        return f"{value:.4f}{suffix}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _legend() -> list[str]:
    return [
        "p50 / p90: median and 90th percentile of the raw timed runs; spread: p95 - p5 (the width of the middle 90 %).",
        "WHDR: of the same artifact (sha256); '(ckpt)' = measured on the checkpoint it was exported from.",
        f"Rows marked '{REPORTED}' are the paper's figures from the model cards in models/*.yaml.",
        "input: the artifact's input size (HxW); 'random weights': exported or evaluated without a checkpoint; "
        f"'poor parity': the artifact orders depth pairs unlike PyTorch (ordinal agreement under "
        f"{POOR_ORDINAL_AGREEMENT}, typical of int8) or was published below its parity bar.",
    ]


PRUNE_COLUMNS = ("iteration", "target ms", "estimated ms", "measured ms", "WHDR", "chosen group")


def _ms3(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _prune_cells(step: PruneStepRow) -> list[str]:
    """One line of a run's table, in PRUNE_COLUMNS order."""
    if step.final:
        chosen = "final model (long-term fine-tune)"
    elif step.chosen_group:
        chosen = f"{step.chosen_group} -> {step.chosen_width}"
    else:
        chosen = "(start)"
    return ["final" if step.final else str(step.iteration), _ms3(step.step_target_ms), _ms3(step.estimated_ms),
            _ms3(step.measured_ms), "-" if step.whdr is None else f"{step.whdr:.4f}", chosen]


def _prune_caption(run: PruneRun) -> str:
    iterations = max(0, sum(not s.final for s in run.steps) - 1)
    where = f" in {run.run_dir}" if run.run_dir else ""
    return (f"Run {run.run_id}{where}, started {run.created_at or '?'}: {iterations} iterations, proposals chosen "
            f"by {run.choose or 'accuracy'}, status {run.status or 'unknown'}.")


PRUNE_LEGEND = ("One table per NetAdapt run. 'estimated ms': the lookup table's estimate; 'measured ms': the run's "
                "own measurement on the device ('-': not measured, so the plot draws the estimate, hollow).")


def _markdown_prune(runs: Sequence[PruneRun]) -> list[str]:
    """The "Pruning runs" section: one table per run (nothing when there are no runs)."""
    if not runs:
        return []
    lines = ["", "## Pruning runs", "", PRUNE_LEGEND]
    for run in runs:
        lines += ["", f"### {run.label}", "", _prune_caption(run), "",
                  "| " + " | ".join(PRUNE_COLUMNS) + " |", "|" + "---|" * len(PRUNE_COLUMNS)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _prune_cells(s)) + " |" for s in run.steps]
    return lines


def render_markdown(report: Report) -> str:
    """The report as a GitHub-flavoured Markdown table."""
    lines = ["# mobiledepth report", "",
             f"Generated {report.generated_at} from `{report.store_path}`."]
    active = {k: v for k, v in report.filters.items() if v}
    if active:
        lines.append("Filters: " + ", ".join(f"{k} = {', '.join(v)}" for k, v in active.items()) + ".")
    lines += ["", "| " + " | ".join(t for _, t in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in report.rows:
        lines.append("| " + " | ".join(_cell(row, k).replace("|", "\\|") for k, _ in COLUMNS) + " |")
    if not report.rows:
        lines.append("| " + " | ".join(["(no results)"] + [""] * (len(COLUMNS) - 1)) + " |")
    lines += [""] + [f"- {text}" for text in _legend()] + [f"- note: {n}" for n in report.notes]
    lines += _markdown_prune(report.prune_runs)
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#eef}td.l{text-align:left}tr.reported td{background:#f6f6f6;color:#555;font-style:italic}
.flag{display:inline-block;border-radius:3px;padding:0 4px;margin:1px;font-size:11px;font-style:normal}
.failed{background:#d33;color:#fff}.fallback{background:#f90}.partial{background:#fd6}
.stale{background:#96f;color:#fff}.reported{background:#ccc}img{max-width:100%;margin-top:16px}
.random{background:#36c;color:#fff}.parity{background:#c60;color:#fff}
"""


def _html_prune_row(step: PruneStepRow) -> str:
    cells = _prune_cells(step)
    tds = [f"<td>{html.escape(c)}</td>" for c in cells[:-1]] + [f'<td class="l">{html.escape(cells[-1])}</td>']
    style = ' style="font-weight:bold"' if step.final else ""
    return f"<tr{style}>{''.join(tds)}</tr>"


def _html_prune(runs: Sequence[PruneRun]) -> str:
    """The "Pruning runs" section as HTML tables (empty when there are no runs)."""
    if not runs:
        return ""
    head = "".join(f"<th>{html.escape(t)}</th>" for t in PRUNE_COLUMNS)
    parts = [f"<h2>Pruning runs</h2><p>{html.escape(PRUNE_LEGEND)}</p>"]
    for run in runs:
        body = "".join(_html_prune_row(step) for step in run.steps)
        parts.append(f"<h3>{html.escape(run.label)}</h3><p>{html.escape(_prune_caption(run))}</p>"
                     f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "".join(parts)


def render_html(report: Report, png: bytes | None = None) -> str:
    """One self-contained HTML page: the table, the flags, and the plot as an inline PNG."""
    png = render_plot_png(report) if png is None else png
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in COLUMNS)
    body = []
    for row in report.rows:
        cells = []
        for key, _ in COLUMNS:
            if key == "flags":
                spans = []
                for flag in row.flags:
                    spans.append(f'<span class="flag {flag}">{html.escape(flag_text(row, flag))}</span>')
                cells.append(f'<td class="l">{"".join(spans)}</td>')
            else:
                cls = ' class="l"' if key in ("model", "precision", "input_size", "device", "delegate") else ""
                cells.append(f"<td{cls}>{html.escape(_cell(row, key))}</td>")
        body.append(f'<tr class="{row.source}">{"".join(cells)}</tr>')
    if not report.rows:
        body.append(f'<tr><td class="l" colspan="{len(COLUMNS)}">(no results)</td></tr>')
    legend = "".join(f"<li>{html.escape(t)}</li>" for t in _legend() + [f"note: {n}" for n in report.notes])
    image = base64.b64encode(png).decode()
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>mobiledepth report</title>"
        f"<style>{_CSS}</style></head><body><h1>mobiledepth report</h1>"
        f"<p>Generated {html.escape(report.generated_at)} from <code>{html.escape(report.store_path)}</code></p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table><ul>{legend}</ul>"
        f'<img alt="latency vs WHDR" src="data:image/png;base64,{image}">{_html_prune(report.prune_runs)}'
        "</body></html>\n"
    )


_RUN_LEVEL = ("run_id", "model_name", "device", "delegate", "target_ms", "choose", "status", "run_dir", "created_at")


def prune_run_dict(run: PruneRun) -> dict:
    """A run as JSON: its settings once, then every step with the latency it is drawn at."""
    steps = []
    for step in run.steps:
        latency, source = step_latency(step)
        steps.append({**{k: v for k, v in asdict(step).items() if k not in _RUN_LEVEL},
                      "latency_ms": latency, "latency_from": source})
    return {**{k: v for k, v in asdict(run).items() if k != "steps"}, "label": run.label, "steps": steps}


def _round_number(key: str, value: Any) -> Any:
    """Digits that mean something: milliseconds to the microsecond, WHDR and agreements to 4 decimals,
    any other float to 6 significant digits (no 0.30000000000000004)."""
    if not isinstance(value, float):
        return value
    if key.endswith("_ms"):
        return round(value, 3)
    if key in ("whdr", "ordinal_agreement"):
        return round(value, 4)
    return float(f"{value:.6g}")


def rounded(data: Any, key: str = "") -> Any:
    """``data`` (dicts / lists / numbers) with every float rounded by its key (see ``_round_number``)."""
    if isinstance(data, dict):
        return {k: rounded(v, k) for k, v in data.items()}
    if isinstance(data, list):
        return [rounded(v, key) for v in data]
    return _round_number(key, data)


def report_dict(report: Report) -> dict:
    """The report as plain JSON-able data (``prune_runs`` only when the store has pruning runs)."""
    data = {
        "kind": "report", "schema": 1, "generated_at": report.generated_at, "store": report.store_path,
        "filters": report.filters, "notes": report.notes,
        "rows": [{**asdict(r), "flag_text": [flag_text(r, f) for f in r.flags]} for r in report.rows],
        "plot_points": plot_points(report),
    }
    if report.prune_runs:
        data["prune_runs"] = [prune_run_dict(run) for run in report.prune_runs]
    return rounded(data)


CSV_FIELDS = [f for f in Row.__dataclass_fields__]
PRUNE_CSV_FIELDS = ["run_id", "iteration", "final", "target_ms", "step_target_ms", "estimated_ms", "measured_ms",
                    "chosen_group", "chosen_width"]


def _prune_csv_rows(runs: Sequence[PruneRun]) -> Iterable[dict]:
    """Pruning steps as CSV lines with ``source`` = "prune" (the measured / reported columns stay empty)."""
    for run in runs:
        for step in run.steps:
            yield {"source": "prune", "model": run.model, "device": run.device, "delegate": run.delegate,
                   "params": step.params, "whdr": step.whdr, "artifact_sha256": step.artifact_sha256,
                   "target_ms": run.target_ms, **{k: getattr(step, k) for k in PRUNE_CSV_FIELDS if k != "target_ms"}}


def render_csv(report: Report) -> str:
    """One CSV line per row; flags joined with ';', numbers rounded as in JSON. Pruning steps follow, with
    their own columns at the end."""
    buffer = io.StringIO()
    extra = PRUNE_CSV_FIELDS if report.prune_runs else []
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS + extra, lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        data = asdict(row)
        data["flags"] = ";".join(flag_text(row, f) for f in row.flags)
        writer.writerow(rounded(data))
    writer.writerows(rounded(list(_prune_csv_rows(report.prune_runs))))
    return buffer.getvalue()


def render(report: Report, fmt: str) -> str:
    """Render ``report`` in one of FORMATS."""
    if fmt == "md":
        return render_markdown(report)
    if fmt == "html":
        return render_html(report)
    if fmt == "json":
        return json.dumps(report_dict(report), indent=2) + "\n"
    if fmt == "csv":
        return render_csv(report)
    raise UserError(f"unknown report format '{fmt}'; use one of {', '.join(FORMATS)}")
