"""`mobiledepth check`: a CI latency gate that tells a slowdown from the noise of a shared machine.

Two modes:
- A/B in one run: the new and the old model are timed interleaved (every round runs both, in
  a random order, so that drift, order effects and the scheduler's time slices hit both), on
  the host TFLite interpreter (``android_bench.host``), in batches of 20 rounds with freshly
  loaded interpreters (so one lucky or unlucky memory placement cannot decide).
- Baseline file: the model is timed interleaved with the baseline's own network (its reference
  network, stored in the baseline: the model the baseline was made from, weights refilled,
  ``reference``), round by round as in A/B, and the per-round ratios are scaled by the model /
  reference ratio recorded with the baseline. A baseline made on a fast laptop still means
  something on a slower CI box, and a busy box slows both sides alike (cache pressure included).
  Older baselines, without a reference network, are compared relative to a fixed calibration
  model shipped with mobiledepth (``calibration.tflite``).

The rooms: ``timing`` (the interleaved sessions, the calibration reference, sampling until
decided), ``verdict`` (statistics and decision rule), ``baseline`` (baseline files, model
identity), ``reference`` (a baseline's reference network). Exit codes: 0 pass, 1 regression,
2 usage error or a run that could not be measured.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mobiledepth.errors import UserError
from mobiledepth.gate.baseline import (  # noqa: F401 - the gate's public names
    BASELINE_KIND, baseline_record, match_ab_models, match_baseline_model, model_identity, model_name_for,
    read_baseline,
)
from mobiledepth.gate.reference import make_reference, reference_model  # noqa: F401
from mobiledepth.gate.timing import (  # noqa: F401
    DEFAULT_MAX_RUNS, DEFAULT_RUNS, DEFAULT_WARMUP, STEP_RUNS, InterleavedSession, RepeatTimer, TimerFactory,
    calibration_model, calibration_repeat, check_measured, host_timer, measure_until_decided, paired_comparison,
    planned_looks,
    require_tflite, time_interleaved, with_calibration_blocks,
)
from mobiledepth.gate.verdict import (  # noqa: F401
    DEFAULT_ALPHA, DEFAULT_TOLERANCE, MIN_SAMPLES, Comparison, Unmeasurable, decide, decide_paired, median,
    parse_tolerance, sign_test,
)


@dataclass
class CheckResult:
    """What the gate measured and decided."""

    mode: str  # "ab" | "baseline" | "update-baseline"
    comparison: Comparison | None
    old_label: str
    new_label: str
    threads: int
    runs: int
    calibration: dict[str, float] | None = None  # baseline/new calibration medians (µs)
    baseline_path: str | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. a baseline without model identity

    @property
    def exit_code(self) -> int:
        return 1 if self.comparison is not None and self.comparison.regression else 0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["exit_code"] = self.exit_code
        return data


def _validate_options(runs: int, threads: int, tolerance: float, max_runs: int | None = None) -> int:
    """Reject impossible options; return the effective max_runs."""
    if runs < MIN_SAMPLES:
        raise UserError(f"--runs {runs} is too few to decide anything; use at least {MIN_SAMPLES} (default {DEFAULT_RUNS})")
    if threads < 1:
        raise UserError(f"--threads {threads} must be at least 1")
    if not 0 < tolerance < 1:
        raise UserError(f"--tolerance {tolerance} must be a fraction between 0 and 1 (0.05 = 5 %)")
    max_runs = max(DEFAULT_MAX_RUNS, runs) if max_runs is None else max_runs
    if max_runs < runs:
        raise UserError(f"--max-runs {max_runs} is below --runs {runs}; use --max-runs >= --runs")
    return max_runs


def check_ab(
    new_path: str | os.PathLike, old_path: str | os.PathLike, runs: int = DEFAULT_RUNS, threads: int = 1,
    tolerance: float = DEFAULT_TOLERANCE, alpha: float = DEFAULT_ALPHA, warmup: int = DEFAULT_WARMUP,
    max_runs: int | None = None, timer_factory: TimerFactory = host_timer, allow_different_model: bool = False,
) -> CheckResult:
    """A/B gate: time NEW and OLD interleaved in this process and decide on the median per-round ratio
    (``decide_paired``: its order-statistic CI and a sign test).

    ``runs`` rounds first; while undecided (see ``decided``) batches of STEP_RUNS more, up to ``max_runs``.
    Models of another precision or input size are refused first (``match_ab_models``).
    """
    max_runs = _validate_options(runs, threads, tolerance, max_runs)
    new_p, old_p = require_tflite(new_path, "new model"), require_tflite(old_path, "--against model")
    warnings = match_ab_models(new_p, old_p, allow_different_model)
    session = InterleavedSession([old_p, new_p], warmup, threads, timer_factory)
    per_look = alpha / planned_looks(runs, max_runs)  # Bonferroni over the sequential looks
    comparison = measure_until_decided(
        session, lambda s: paired_comparison(s, tolerance, per_look, new_p.name), runs, max_runs)
    return CheckResult("ab", comparison, str(old_p), str(new_p), threads, session.rounds, warnings=warnings)


def update_baseline(
    model_path: str | os.PathLike, baseline_path: str | os.PathLike, runs: int = DEFAULT_MAX_RUNS, threads: int = 1,
    warmup: int = DEFAULT_WARMUP, model_name: str | None = None, store_path: str | os.PathLike | None = None,
    timer_factory: TimerFactory = host_timer,
) -> CheckResult:
    """Time the model interleaved with its reference network and the calibration model; write a baseline (atomically).

    The baseline records the model's identity (``model_identity``), its reference network (``make_reference``),
    and the samples of all three, which are fixed once written, so it takes many runs (default DEFAULT_MAX_RUNS)."""
    from android_bench.interleave import round_ratios

    from mobiledepth.io import check_writable, write_json_atomic

    _validate_options(runs, threads, DEFAULT_TOLERANCE)
    model = require_tflite(model_path, "model")
    check_writable(baseline_path, what="--baseline")
    identity = model_identity(model)
    name = model_name_for(model, model_name, store_path)
    reference = make_reference(model)
    calib = calibration_model()
    with tempfile.TemporaryDirectory(prefix="mobiledepth-gate-") as tmp:
        network = reference_model(reference, tmp, baseline_path)
        repeat = calibration_repeat(model, calib, threads, timer_factory)
        session = InterleavedSession([model, calib, network], warmup, threads,
                                     with_calibration_blocks(timer_factory, calib, repeat))
        session.run(runs)
    for path, samples in zip((model, calib, Path(f"{model} (its reference network)")), session.samples):
        check_measured(samples, path, runs)
    model_s, calib_s, reference_s = session.samples
    reference.update(samples_us=reference_s, model_ratio=median(round_ratios(session.blocks[0], session.blocks[2])))
    write_json_atomic(baseline_path, baseline_record(model, name, identity, calib, repeat, threads, runs, warmup,
                                                     model_s, calib_s, reference))
    return CheckResult("update-baseline", None, str(baseline_path), str(model), threads, runs,
                       calibration={"new_us": median(calib_s)}, baseline_path=str(baseline_path))


def _refuse_unmatched_baseline(baseline: dict, baseline_path, model, threads: int, model_name: str | None,
                               store_path, allow_different_model: bool) -> list[str]:
    """Everything that refuses a baseline comparison before timing: threads, model, calibration model."""
    from mobiledepth.io import sha256_file

    if threads != baseline["threads"]:
        raise UserError(f"baseline {baseline_path} was timed with {baseline['threads']} thread(s), not {threads}; "
                        "pass the matching baseline or recreate it with --update-baseline")
    warnings = match_baseline_model(baseline, baseline_path, model_identity(model),
                                    model_name_for(model, model_name, store_path), allow_different_model)
    if "reference" not in baseline and sha256_file(calibration_model()) != baseline["calibration"]["sha256"]:
        raise UserError(f"baseline {baseline_path} used another calibration model (another mobiledepth version); "
                        "recreate it with --update-baseline")
    return warnings


def check_baseline(
    model_path: str | os.PathLike, baseline_path: str | os.PathLike, runs: int = DEFAULT_RUNS,
    threads: int | None = None, tolerance: float = DEFAULT_TOLERANCE, alpha: float = DEFAULT_ALPHA,
    warmup: int = DEFAULT_WARMUP, model_name: str | None = None, store_path: str | os.PathLike | None = None,
    max_runs: int | None = None, timer_factory: TimerFactory = host_timer, allow_different_model: bool = False,
) -> CheckResult:
    """Baseline gate: time the model interleaved with the baseline's reference network and decide on the
    per-round ratios (paired, as A/B), scaled by the model / reference ratio the baseline recorded.
    A baseline without a reference network (older mobiledepth) is compared relative to the calibration model.

    Everything that can refuse the comparison (the file, the options, the model's identity, the reference
    network) is checked before the first timed run."""
    baseline = read_baseline(baseline_path)
    threads = baseline["threads"] if threads is None else threads
    max_runs = _validate_options(runs, threads, tolerance, max_runs)
    model = require_tflite(model_path, "model")
    warnings = _refuse_unmatched_baseline(baseline, baseline_path, model, threads, model_name, store_path,
                                          allow_different_model)
    per_look = alpha / planned_looks(runs, max_runs)  # Bonferroni over the sequential looks
    if "reference" not in baseline:
        return _check_calibrated(baseline, baseline_path, model, threads, tolerance, per_look, warmup, runs,
                                 max_runs, timer_factory, warnings)
    reference = baseline["reference"]
    with tempfile.TemporaryDirectory(prefix="mobiledepth-gate-") as tmp:
        network = reference_model(reference, tmp, baseline_path)
        session = InterleavedSession([network, model], warmup, threads, timer_factory)
        comparison = measure_until_decided(
            session, lambda s: paired_comparison(s, tolerance, per_look, model.name, reference["model_ratio"]),
            runs, max_runs)
    then, now = median(reference["samples_us"]), median(session.samples[0])
    return CheckResult(
        "baseline", comparison, f"baseline {baseline_path}", str(model), threads, session.rounds,
        baseline_path=str(baseline_path), warnings=warnings,
        notes=[f"the baseline's network runs {now / then:.2f}x as long here as when the baseline was made "
               f"({baseline.get('created_at')}): {then / 1000:.3f} ms then, {now / 1000:.3f} ms now"],
    )


def _check_calibrated(baseline: dict, baseline_path, model, threads: int, tolerance: float, per_look: float,
                      warmup: int, runs: int, max_runs: int, timer_factory: TimerFactory,
                      warnings: list[str]) -> CheckResult:
    """The comparison with a baseline that has no reference network: relative to the calibration model."""
    calib = calibration_model()
    repeat = baseline["calibration"].get("repeat", 1)
    session = InterleavedSession([model, calib], warmup, threads, with_calibration_blocks(timer_factory, calib, repeat))
    comparison = measure_until_decided(
        session,
        lambda s: decide(baseline["samples_us"], s.samples[0], tolerance, per_look,
                         old_ref=baseline["calibration_samples_us"], new_ref=s.samples[1], name=model.name),
        runs, max_runs)
    calib_s, baseline_calib = session.samples[1], baseline["calibration_samples_us"]
    return CheckResult(
        "baseline", comparison, f"baseline {baseline_path}", str(model), threads, session.rounds,
        calibration={"baseline_us": median(baseline_calib), "new_us": median(calib_s)},
        baseline_path=str(baseline_path),
        warnings=warnings + [f"baseline {baseline_path} has no reference network (an older mobiledepth made it), so "
                             "it is compared relative to the calibration model, which a busy machine slows less than "
                             "a large model; recreate it with --update-baseline"],
        notes=[f"calibration model runs {median(calib_s) / median(baseline_calib):.2f}x as long here as when the "
               f"baseline was made ({baseline.get('created_at')})"],
    )
