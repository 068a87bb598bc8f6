"""Whole-model width variants of a table's model: uniform and random per-group widths (a spec's by its
channel groups, a factory model's cut by Torch-Pruning), each exported once through the route the table's
layers mirror, timed side by side with the unpruned model; the graph correction is fitted on them
(``calibrate``) and the table is checked against held-out ones (``validate_lut``).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from mobiledepth.errors import MobileDepthError, StageFailed, UserError
from mobiledepth.io import sha256_json, write_json_atomic
from mobiledepth.progress import Progress, ProgressFn
from mobiledepth.prune.layers import Layer, network_layers
from mobiledepth.prune.lut import GraphCorrection, LatencyTable, fit_correction, load_table
from mobiledepth.prune.timing import SessionTiming, statistic_of, time_against, time_models
from mobiledepth.records import new_record, read_export_record


def variant_specs(spec: dict, multipliers=(1.0, 0.75, 0.5, 0.35), random_count: int = 3, multiple: int = 8,
                  seed: int = 0) -> list[tuple[str, dict]]:
    """Width variants of a spec: uniform multipliers and random per-group widths (structure kept)."""
    from mobiledepth.prune.groups import channel_groups, set_group_widths, structure

    groups = [g for g in channel_groups(spec) if g.prunable]
    base = structure(spec)
    rng = random.Random(seed)
    out = []

    def fit(widths: dict[str, int]) -> dict:
        """Nudge widths (down, then up) until the structure equals the original's."""
        widths = dict(widths)
        for g in groups:
            for step in range(0, 64):
                trial = set_group_widths(spec, widths)
                if structure(trial) == base:
                    break
                delta = multiple * ((step // 2) + 1) * (-1 if step % 2 == 0 else 1)
                widths[g.name] = min(g.width, max(multiple, widths[g.name] + delta))
        spec_out = set_group_widths(spec, widths)
        if structure(spec_out) != base:
            raise UserError("could not find widths keeping the network structure; use fewer constraints")
        return spec_out

    for m in multipliers:
        widths = {g.name: min(g.width, max(multiple, int(round(g.width * m / multiple)) * multiple)) for g in groups}
        out.append((f"uniform x{m:g}", fit(widths)))
    for i in range(random_count):
        widths = {g.name: rng.choice(range(multiple, g.width + 1, multiple)) if g.width >= multiple else g.width
                  for g in groups}
        out.append((f"random #{i + 1}", fit(widths)))
    return out


def export_spec(spec: dict, input_size: tuple[int, int], out_dir: str | os.PathLike,
                checkpoint: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Export ``spec`` to fp32 TFLite with the project's export chain; returns (tflite, run_dir)."""
    import yaml

    from mobiledepth.io import write_text_atomic

    out_dir = Path(out_dir)
    spec_file = out_dir.with_name(out_dir.name + ".spec.yaml")  # export takes names and YAML paths
    write_text_atomic(spec_file, yaml.safe_dump(spec, sort_keys=False))
    return export_fp32(str(spec_file), input_size, out_dir, checkpoint)


def export_fp32(model: str, input_size: tuple[int, int], out_dir: str | os.PathLike,
                checkpoint: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """``model`` (a spec YAML, zoo name or ``module:factory``) exported to fp32 TFLite through the route the
    table's layers mirror (:data:`VARIANT_ROUTE`, not every route); returns (tflite, run_dir)."""
    from mobiledepth.export import export_model

    result = export_model(model=model, checkpoint=checkpoint, input_size=tuple(input_size), precisions="fp32",
                          out=out_dir, converter=VARIANT_ROUTE)
    return Path(result.run_dir) / route_tflite(result.record["artifacts"])["path"], Path(result.run_dir)


def measure_spec(spec: dict, input_size: tuple[int, int], device: str, delegate: str, threads: int,
                 out_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                 runs: int = 50, warmup: int = 5, statistic: str = "median") -> dict:
    """Export ``spec`` (fp32 TFLite, the project's export chain) and time it end to end on the device.

    ``latency_us`` is the chosen statistic of the timed runs (``median_us`` is always there too)."""
    tflite, run_dir = export_spec(spec, input_size, out_dir, checkpoint)
    bench = time_models([tflite], device, delegate, threads, runs, warmup)[0]
    if bench["failed"]:
        raise StageFailed(f"timing {tflite} on {device} failed: {bench['error']}")
    samples = bench["samples_us"] or [bench["stats"]["median"]]
    return {"tflite": str(tflite), "run_dir": str(run_dir), "bench": bench, "median_us": bench["stats"]["median"],
            "latency_us": statistic_of(samples, statistic), "statistic": statistic}


# the route whose graph the table's layers mirror (onnx2tf's PAD + VALID stride-2 convs, the phase-split
# form); variants are always exported and timed through it, whatever route export would recommend
VARIANT_ROUTE = "onnx2tf"


def route_tflite(artifacts: list[dict]) -> dict | None:
    """The fp32 TFLite artifact of :data:`VARIANT_ROUTE` (records without routes: the first TFLite)."""
    tflites = [a for a in artifacts if a.get("format") == "tflite"]
    return next((a for a in tflites if a.get("route", VARIANT_ROUTE) == VARIANT_ROUTE), None)


def _reused_export(out_dir: Path) -> Path | None:
    """The fp32 TFLite file of a complete export in ``out_dir``, if there is one."""
    try:
        artifact = route_tflite(read_export_record(out_dir).data["artifacts"])
    except MobileDepthError:
        return None  # no complete export there yet
    return out_dir / artifact["path"] if artifact and (out_dir / artifact["path"]).is_file() else None


def exported_variant(variant: dict, size: tuple[int, int], work: Path) -> Path:
    """The variant's fp32 TFLite file: reused when this spec and size were exported into ``work``
    before (the folder is named by their hash), exported now otherwise."""
    out_dir = work / f"v-{variant_key(variant, size)}"
    return _reused_export(out_dir) or export_spec(variant, size, out_dir)[0]


def exported_factory(ref: str, model_hash: str, size: tuple[int, int], work: Path,
                     widths: dict | None = None, model=None) -> tuple[str, Path]:
    """A factory model's fp32 TFLite file, exported once into ``work`` (reused later); returns (key, file).
    With ``widths``, ``model`` is the factory's model cut to them, exported from a pruned checkpoint."""
    key = sha256_json({"factory": ref, "model": model_hash, "size": list(size), **({"widths": widths} if widths else {})})[:16]
    out_dir = work / f"v-{key}"
    found = _reused_export(out_dir)
    if found is None:
        checkpoint = None
        if widths:
            from mobiledepth.prune.graph import save_pruned

            checkpoint = save_pruned(work / f"v-{key}.pt", model, ref, tuple(size))
        found = export_fp32(ref, size, out_dir, checkpoint)[0]
    return key, found


def random_group_widths(graph, count: int, multiple: int, seed: int = 0) -> list[dict[str, int]]:
    """``count`` random width choices for a channel graph (``arch.graph.ChannelGraph``), seeded: every prunable
    group at a multiple of ``multiple`` up to its width, drawn uniformly (a group narrower than ``multiple`` stays)."""
    rng = random.Random(seed)
    return [{g.name: rng.choice(range(multiple, g.width + 1, multiple)) if g.width >= multiple else g.width
             for g in graph.prunable()} for _ in range(count)]


def factory_variants(ref: str, size: tuple[int, int], multipliers, multiple: int, work: Path,
                     progress: ProgressFn | None = None, random_count: int = 0, seed: int = 0) -> list[TimedVariant]:
    """A factory model (the reference, "uniform x1"), its uniform width variants (every prunable channel group cut
    by Torch-Pruning's magnitude pruner, ``prune.graph.uniform_prune``) and ``random_count`` random per-group
    width variants (:func:`random_group_widths`, seeded by ``seed``; cut keeping the channels of highest
    magnitude), each exported once."""
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.prune.graph import build_graph, group_widths, prune_to_widths, uniform_prune

    def uniform(m: float):
        return lambda model: uniform_prune(model, 1.0 - m, multiple, size) if m < 1.0 else None

    def cut_to(widths: dict[str, int]):
        return lambda model: group_widths(prune_to_widths(model, widths, size), size)

    cuts = [(f"uniform x{m:g}", uniform(m)) for m in (1.0,) + tuple(m for m in multipliers if m != 1.0)]
    if random_count:
        graph = build_graph(resolve_model(ref).model, size)
        cuts += [(f"random #{i + 1}", cut_to(widths))
                 for i, widths in enumerate(random_group_widths(graph, random_count, multiple, seed))]
    return [_factory_variant(ref, size, name, cut, work, progress) for name, cut in cuts]


def _factory_variant(ref: str, size: tuple[int, int], name: str, cut, work: Path, progress) -> TimedVariant:
    """One factory variant: a fresh model, ``cut(model)`` in place (returns its group widths, or None for the
    uncut model), exported once into ``work``, with its traced layers."""
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.prune.subject import deployed_layers

    resolved = resolve_model(ref)
    widths = cut(resolved.model)
    if progress:
        progress(Progress("export", "start", detail=f"exporting {ref} {name} (or reusing its export)"))
    key, tflite = exported_factory(ref, resolved.spec_hash, size, work, widths, resolved.model)
    return TimedVariant(name, key, widths or {}, deployed_layers(resolved.model, size), tflite)


def variants_dir(table_path: str | os.PathLike) -> Path:
    """Where a table's exported width variants live (calibration and validation share them)."""
    table_path = Path(table_path)
    return table_path.with_name(table_path.stem + "-variants")


def variant_key(variant: dict, size: tuple[int, int]) -> str:
    """A variant's identity (its spec and input size), as its export folder is named."""
    return sha256_json({"spec": variant, "size": list(size)})[:16]


@dataclass
class TimedVariant:
    """A width variant ready to time: its layers (what the table estimates) and its exported TFLite file."""

    name: str
    key: str
    widths: dict
    layers: list[Layer]
    tflite: Path


def spec_variants(spec: dict, size: tuple[int, int], multipliers, random_count: int, multiple: int, seed: int,
                  work: Path, progress: ProgressFn | None = None) -> list[TimedVariant]:
    """The unpruned spec first ("uniform x1", the reference), then uniform and random width variants,
    each exported once into ``work`` (reused later)."""
    from mobiledepth.prune.groups import group_widths

    multipliers = (1.0,) + tuple(m for m in multipliers if m != 1.0)
    out = []
    for name, variant in variant_specs(spec, multipliers, random_count, multiple, seed):
        if progress:
            progress(Progress("export", "start", detail=f"exporting {name} (or reusing its export)"))
        out.append(TimedVariant(name, variant_key(variant, size), group_widths(variant), network_layers(variant, size),
                                exported_variant(variant, size, work)))
    return out


def time_variants(variants: list[TimedVariant], table: "LatencyTable", rounds: int) -> SessionTiming:
    """Every variant timed side by side with the first (the unpruned reference) in one session of the
    shared harness: per turn the table's statistic; ``rounds`` first, up to 4x while a ratio's CI is
    wider than ±1 %."""
    meta = table.meta
    reference = variants[0]
    return time_against({v.name: v.tflite for v in variants[1:]}, reference.tflite, meta["device"], meta["delegate"],
                        meta["threads"], rounds=rounds, max_rounds=rounds * 4, precision=0.01,
                        reduce=lambda block: statistic_of(block, table.statistic), reference_name=reference.name)


def calibrate(table_path: str | os.PathLike, variants: list[TimedVariant], rounds: int = 30) -> GraphCorrection:
    """Fit the table's graph correction on ``variants`` (the first is the reference) timed in one session,
    and store it in the table; returns it."""
    table = load_table(table_path)
    timing = time_variants(variants, table, rounds)
    null = table.null_us
    points = []
    for v in variants:
        plain = table.estimate_layers(v.layers, corrected=False)
        ratio = timing.ratios[v.name].ratio if v is not variants[0] else 1.0
        points.append({"name": v.name, "variant": v.key, "layers": len(v.layers), "layer_sum_us": plain.total_us - null,
                       "ratio": ratio, "measured_us": ratio * timing.reference_us})
    factor, per_op = fit_correction([p["layer_sum_us"] for p in points], [p["layers"] for p in points],
                                    [p["measured_us"] for p in points], null)
    correction = GraphCorrection(factor, per_op, points, timing.reference_us)
    data = json.loads(Path(table_path).read_text())
    data["correction"] = correction.to_dict()
    write_json_atomic(table_path, data)
    return correction


@dataclass
class ValidationRow:
    """One variant: the table's estimate, and its latency measured side by side with the reference.

    ``ratio`` is the measured ratio to the reference (None for the reference itself); the ms values are
    that ratio times the reference's latency in the same session (the reference: its own turns)."""

    name: str
    widths: dict
    estimate_us: float
    estimate_ratio: float                  # estimate / the reference's estimate
    ratio: object | None                   # RatioInterval, model / reference
    measured_us: tuple[float, float, float]  # (median, low, high)
    held_out: bool                         # not one of the variants the correction was fitted on

    @property
    def ratio_error(self) -> float | None:
        """(estimated ratio) / (measured ratio) - 1: the error NetAdapt's decisions see."""
        return None if self.ratio is None else self.estimate_ratio / self.ratio.ratio - 1

    @property
    def ratio_error_interval(self) -> tuple[float, float] | None:
        if self.ratio is None:
            return None
        return self.estimate_ratio / self.ratio.high - 1, self.estimate_ratio / self.ratio.low - 1

    @property
    def ms_error(self) -> float:
        """The table's ms vs the ms measured in this session (includes the session's drift)."""
        return self.estimate_us / self.measured_us[0] - 1

    @property
    def ms_error_interval(self) -> tuple[float, float]:
        return self.estimate_us / self.measured_us[2] - 1, self.estimate_us / self.measured_us[1] - 1

    def to_dict(self) -> dict:
        return {"name": self.name, "held_out": self.held_out, "estimate_us": self.estimate_us,
                "estimate_ratio": self.estimate_ratio, "measured_ratio": None if self.ratio is None else self.ratio.ratio,
                "measured_ratio_interval": None if self.ratio is None else [self.ratio.low, self.ratio.high],
                "ratio_error": self.ratio_error, "ratio_error_interval": self.ratio_error_interval,
                "measured_us": self.measured_us[0], "measured_interval_us": list(self.measured_us[1:]),
                "ms_error": self.ms_error, "ms_error_interval": list(self.ms_error_interval), "widths": self.widths}


def validation_rows(variants: list[TimedVariant], table: "LatencyTable", timing: SessionTiming) -> list[ValidationRow]:
    """Estimate vs measurement for every timed variant (the first is the reference)."""
    fitted = {p.get("variant") for p in table.correction.points}
    reference_us = table.estimate_layers(variants[0].layers).total_us
    rows = []
    for v in variants:
        estimate = table.estimate_layers(v.layers).total_us
        if v is variants[0]:
            ratio, measured = None, tuple(timing.absolute[v.name])
        else:
            ratio = timing.ratios[v.name]
            scaled = ratio.scaled(timing.reference_us)
            measured = (scaled.ratio, scaled.low, scaled.high)
        rows.append(ValidationRow(v.name, v.widths, estimate, estimate / reference_us, ratio, measured,
                                  v.key not in fitted))
    return rows


def validate_lut(table_path: str | os.PathLike, model: str | dict | None = None, random_count: int = 3,
                 multipliers=(1.0, 0.75, 0.5, 0.35), runs: int = 300, work_dir: str | os.PathLike | None = None,
                 seed: int = 0, progress: ProgressFn | None = None) -> dict:
    """LUT estimate vs end-to-end measurement for width variants timed side by side with the unpruned
    model in one session; writes ``validation.json`` in the work folder and returns the report dict.

    The headline error is the ratio error (estimated vs measured ratio to the unpruned model): the
    unit NetAdapt decides in, free of the whole machine's drift between sessions; the ms error (the
    table's ms vs ms measured in this session) is reported beside it."""
    from android_bench.result import percentile

    from mobiledepth.arch import resolve_spec, spec_from_record

    from mobiledepth.arch.resolve import is_factory_ref

    table = load_table(table_path)
    meta = table.meta
    size = tuple(meta["input_size"])
    work = Path(work_dir) if work_dir else variants_dir(table_path)
    work.mkdir(parents=True, exist_ok=True)
    if is_factory_ref(model):
        variants = factory_variants(model, size, multipliers, meta["multiple"], work, progress, random_count, seed)
    else:
        spec = resolve_spec(model) if model else spec_from_record(meta["model"], f"lookup table {table_path}")
        variants = spec_variants(spec, size, multipliers, random_count, meta["multiple"], seed, work, progress)
    if progress:
        progress(Progress("time", "start", detail=f"timing {len(variants)} models on {meta['device']}, interleaved"))
    timing = time_variants(variants, table, max(10, runs // 9))
    rows = validation_rows(variants, table, timing)
    ratio_errors = sorted(abs(r.ratio_error) for r in rows if r.ratio_error is not None) or [0.0]
    ms_errors = sorted(abs(r.ms_error) for r in rows)
    correction = table.correction
    report = {
        **new_record("lut_validation"),
        "table": str(table_path), "device": meta["device"], "delegate": meta["delegate"], "input_size": list(size),
        "statistic": table.statistic, "reference": variants[0].name, "rounds": timing.rounds,
        "rows": [r.to_dict() for r in rows],
        "timing": "every variant side by side with the unpruned reference in one session: interleaved rotated turns "
                  "of 10 invokes (1 untimed), per turn the table's statistic; median per-round ratio to the "
                  "reference with a 95 % order-statistic CI; ms = ratio x the reference's median in this session",
        "correction": {"factor": correction.factor, "per_op_us": correction.per_op_us},
        "reference_us": timing.reference_us,
        "session_drift": (timing.reference_us / correction.reference_us - 1) if correction.reference_us else None,
        "max_abs_error": ratio_errors[-1], "median_abs_error": percentile(ratio_errors, 50),
        "max_abs_ms_error": ms_errors[-1], "median_abs_ms_error": percentile(ms_errors, 50),
    }
    write_json_atomic(work / "validation.json", report)
    return report

