"""`mobiledepth check`: a CI latency gate that tells a slowdown from the noise of a shared machine.

Two modes:
- A/B in one run: the new and the old model are timed interleaved (every round runs both, in
  a random order, so that drift, order effects and the scheduler's time slices hit both), on
  the host TFLite interpreter (``android_bench.host``), in batches of 20 rounds with freshly
  loaded interpreters (so one lucky or unlucky memory placement cannot decide).
- Baseline file: the model is timed interleaved with a fixed calibration model shipped with
  mobiledepth (``calibration.tflite``); the stored and the new latencies are compared relative
  to the calibration model, so a baseline made on a fast laptop still means something on a
  slower CI box.

Decision rule (``decide``): ratio r = median(new) / median(old) (calibration-normalised in
baseline mode). The result is a **regression** iff r > 1 + tolerance AND a one-sided
Mann-Whitney U test (new slower than old) gives p < alpha (default 0.01) AND the 95 %
bootstrap confidence interval of r (``scipy.stats.bootstrap``; in baseline mode it resamples
the calibration samples too) lies above 1.

Sampling (``measure_until_decided``): ``runs`` rounds (default 40) first; while the answer is
unclear (no significant change beyond tolerance, and the CI not inside the tolerance band)
another 20 rounds, up to ``max_runs`` (default 200). Each look tests at alpha / (number of
planned looks) (Bonferroni: 0.01 / 9 with the defaults), so looking often does not inflate
the false-alarm rate. Clear cases stop early; borderline ones
get the samples they need. Exit codes: 0 pass, 1 regression, 2 usage error or a run that
could not be measured.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from mobiledepth.errors import MobileDepthError, UserError

DEFAULT_TOLERANCE = 0.05
DEFAULT_ALPHA = 0.01
DEFAULT_RUNS = 40  # timed runs per model in the first batch
DEFAULT_MAX_RUNS = 200  # while undecided, batches of STEP_RUNS more, up to this many
STEP_RUNS = 20
DEFAULT_WARMUP = 5
MIN_SAMPLES = 8
CONFIDENCE = 0.95
CALIBRATION_MODEL = Path(__file__).with_name("calibration.tflite")
BASELINE_KIND = "latency_baseline"


class Unmeasurable(MobileDepthError):
    """The run produced too few successful timings to decide anything (exit code 2)."""

    exit_code = 2


class Timer(Protocol):
    def time_once(self) -> float: ...


TimerFactory = Callable[[str, int], Timer]


def host_timer(model_path: str, threads: int) -> Timer:
    """The host TFLite interpreter from android_bench (imported lazily)."""
    from android_bench.host import HostModel

    return HostModel(model_path, threads=threads)


# --------------------------------------------------------------------------- statistics

@dataclass
class Comparison:
    """One benchstat-like line: medians, their ratio with a CI, the test, and the verdict."""

    name: str
    old_median_us: float
    new_median_us: float
    ratio: float
    ci_low: float
    ci_high: float
    p_value: float  # one-sided, H1: new is slower
    n_old: int
    n_new: int
    verdict: str  # "regression" | "improvement" | "no change" | "within noise"
    tolerance: float
    alpha: float
    normalised: bool = False

    @property
    def regression(self) -> bool:
        return self.verdict == "regression"


def _median(values: Sequence[float]) -> float:
    import numpy as np

    return float(np.median(np.asarray(values, dtype=float)))


def decide(
    old: Sequence[float],
    new: Sequence[float],
    tolerance: float = DEFAULT_TOLERANCE,
    alpha: float = DEFAULT_ALPHA,
    old_ref: Sequence[float] | None = None,
    new_ref: Sequence[float] | None = None,
    name: str = "model",
    seed: int = 0,
) -> Comparison:
    """Compare latency samples (µs) of the old and the new model and give a verdict.

    With ``old_ref`` / ``new_ref`` (calibration-model samples timed in the same sessions) the
    ratio is ``(median(new)/median(new_ref)) / (median(old)/median(old_ref))``, the test runs on
    samples divided by their session's calibration median, and the bootstrap resamples all four.
    """
    import numpy as np
    from scipy import stats

    old_a, new_a = np.asarray(old, dtype=float), np.asarray(new, dtype=float)
    if len(old_a) < MIN_SAMPLES or len(new_a) < MIN_SAMPLES:
        raise Unmeasurable(
            f"too few successful timings (old {len(old_a)}, new {len(new_a)}; need {MIN_SAMPLES}); "
            "check that both models run on this machine, or raise --runs"
        )
    normalised = old_ref is not None and new_ref is not None
    if normalised:
        old_r, new_r = np.asarray(old_ref, dtype=float), np.asarray(new_ref, dtype=float)
        if len(old_r) < MIN_SAMPLES or len(new_r) < MIN_SAMPLES:
            raise Unmeasurable(f"too few calibration timings (need {MIN_SAMPLES}); raise --runs")
        samples = (old_a, new_a, old_r, new_r)

        def statistic(o, n, orf, nrf, axis=-1):
            return (np.median(n, axis=axis) / np.median(nrf, axis=axis)) / (
                np.median(o, axis=axis) / np.median(orf, axis=axis))

        test_old, test_new = old_a / np.median(old_r), new_a / np.median(new_r)
    else:
        samples = (old_a, new_a)

        def statistic(o, n, axis=-1):
            return np.median(n, axis=axis) / np.median(o, axis=axis)

        test_old, test_new = old_a, new_a
    ratio = float(statistic(*samples))
    boot = stats.bootstrap(samples, statistic, n_resamples=2000, confidence_level=CONFIDENCE,
                           method="percentile", vectorized=True, random_state=np.random.default_rng(seed))
    p_slower = float(stats.mannwhitneyu(test_new, test_old, alternative="greater").pvalue)
    p_faster = float(stats.mannwhitneyu(test_new, test_old, alternative="less").pvalue)
    ci_low, ci_high = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    if ratio > 1 + tolerance and p_slower < alpha and ci_low > 1:
        verdict = "regression"
    elif ratio < 1 / (1 + tolerance) and p_faster < alpha and ci_high < 1:
        verdict = "improvement"
    elif 1 / (1 + tolerance) <= ratio <= 1 + tolerance:
        verdict = "no change"
    else:
        verdict = "within noise"  # beyond tolerance but not significant: not a failure
    return Comparison(
        name=name, old_median_us=_median(old_a), new_median_us=_median(new_a), ratio=ratio,
        ci_low=ci_low, ci_high=ci_high,
        p_value=p_slower, n_old=len(old_a), n_new=len(new_a), verdict=verdict,
        tolerance=tolerance, alpha=alpha, normalised=normalised,
    )


# --------------------------------------------------------------------------- timing

def _require_tflite(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} {p} does not exist; pass the path of a .tflite file")
    if p.suffix != ".tflite":
        raise UserError(f"{what} {p} is not a .tflite file; the host gate times TFLite models (export one first)")
    return p


def _load_timer(factory: TimerFactory, path: Path, threads: int) -> Timer:
    try:
        return factory(str(path), threads)
    except MobileDepthError:
        raise
    except ImportError as exc:
        raise UserError(f"host timing is unavailable ({exc}); install ai-edge-litert") from None
    except Exception as exc:  # the interpreter rejects the file
        raise UserError(f"cannot load {path} in the TFLite interpreter ({str(exc).splitlines()[0]}); "
                        "is it a valid .tflite model?") from None


class InterleavedSession:
    """Models timed interleaved (each round runs every model once, in a random order), in batches
    with freshly loaded interpreters.

    Every batch of ``batch`` rounds loads each model anew (and warms it up): where an interpreter
    instance lands in memory shifts its speed by several percent on a busy machine, so one
    instance per model would turn that luck into a "difference"; fresh instances average it out.
    A timing that raises or is not a positive finite number is dropped (counted as a failure).
    """

    def __init__(self, paths: Sequence[Path], warmup: int = DEFAULT_WARMUP, threads: int = 1,
                 timer_factory: TimerFactory = host_timer, batch: int = STEP_RUNS, seed: int = 0):
        self.paths = list(paths)
        self.warmup, self.threads, self.factory, self.batch = warmup, threads, timer_factory, batch
        self.timers: list[Timer] = []
        self._load()  # fail early (usage error) on a file the interpreter rejects
        self.samples: list[list[float]] = [[] for _ in self.paths]
        self.rounds = 0
        self._rng = random.Random(seed)

    def _load(self, reverse: bool = False) -> None:
        """Load (and warm up) every model; ``reverse`` loads the last first, so no model is always loaded last."""
        self.timers = []  # drop the old interpreters before loading new ones
        order = list(range(len(self.paths)))[::-1] if reverse else list(range(len(self.paths)))
        loaded: dict[int, Timer] = {i: _load_timer(self.factory, self.paths[i], self.threads) for i in order}
        self.timers = [loaded[i] for i in range(len(self.paths))]
        for i in order:
            for _ in range(self.warmup):
                _safe_time(self.timers[i])

    def run(self, rounds: int) -> list[list[float]]:
        """Time ``rounds`` more rounds (each model once per round); return all samples so far."""
        order = list(range(len(self.paths)))
        for _ in range(rounds):
            batch_index = self.rounds // self.batch
            if self.rounds and self.rounds % self.batch == 0:
                self._load(reverse=batch_index % 2 == 1)
            # a random order each round: a fixed pattern (A B B A ...) can fall in step with the
            # scheduler's time slices on a busy machine and hand one model all the slow slots
            self._rng.shuffle(order)
            for index in order:
                value = _safe_time(self.timers[index])
                if value is not None:
                    self.samples[index].append(value)
            self.rounds += 1
        return self.samples


def time_interleaved(
    paths: Sequence[Path], runs: int, warmup: int = DEFAULT_WARMUP, threads: int = 1,
    timer_factory: TimerFactory = host_timer,
) -> list[list[float]]:
    """Time several models ``runs`` rounds, interleaved; the successful samples (µs) per model."""
    return InterleavedSession(paths, warmup, threads, timer_factory).run(runs)


def decided(c: Comparison) -> bool:
    """Clear enough to stop measuring: a significant change beyond tolerance, or a CI inside the tolerance band."""
    if c.verdict in ("regression", "improvement"):
        return True
    return 1 / (1 + c.tolerance) <= c.ci_low and c.ci_high <= 1 + c.tolerance


def planned_looks(runs: int, max_runs: int) -> int:
    """How many times ``measure_until_decided`` may test: after ``runs`` rounds, then every STEP_RUNS."""
    return 1 + math.ceil(max(0, max_runs - runs) / STEP_RUNS)


def measure_until_decided(
    session: InterleavedSession, compare: Callable[[list[list[float]]], Comparison], runs: int, max_runs: int,
) -> Comparison:
    """Run ``runs`` rounds, then batches of STEP_RUNS while the comparison is undecided, up to ``max_runs``."""
    session.run(runs)
    while True:
        for path, samples in zip(session.paths, session.samples):
            _check_measured(samples, path, session.rounds)
        comparison = compare(session.samples)
        if decided(comparison) or session.rounds >= max_runs:
            return comparison
        session.run(min(STEP_RUNS, max_runs - session.rounds))


def _safe_time(timer: Timer) -> float | None:
    try:
        value = float(timer.time_once())
    except Exception:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _check_measured(samples: list[float], path: Path, runs: int) -> None:
    if len(samples) < MIN_SAMPLES:
        raise Unmeasurable(
            f"{path}: only {len(samples)} of {runs} timed runs succeeded (need {MIN_SAMPLES}); "
            "the model does not run reliably on this machine"
        )


# --------------------------------------------------------------------------- results

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

    @property
    def exit_code(self) -> int:
        return 1 if self.comparison is not None and self.comparison.regression else 0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["exit_code"] = self.exit_code
        return data


def check_ab(
    new_path: str | os.PathLike, old_path: str | os.PathLike, runs: int = DEFAULT_RUNS, threads: int = 1,
    tolerance: float = DEFAULT_TOLERANCE, alpha: float = DEFAULT_ALPHA, warmup: int = DEFAULT_WARMUP,
    max_runs: int | None = None, timer_factory: TimerFactory = host_timer,
) -> CheckResult:
    """A/B gate: time NEW and OLD interleaved in this process and decide on the ratio of medians.

    ``runs`` rounds first; while undecided (see ``decided``) batches of STEP_RUNS more, up to ``max_runs``.
    """
    max_runs = _validate_options(runs, threads, tolerance, max_runs)
    new_p, old_p = _require_tflite(new_path, "new model"), _require_tflite(old_path, "--against model")
    session = InterleavedSession([old_p, new_p], warmup, threads, timer_factory)
    per_look = alpha / planned_looks(runs, max_runs)  # Bonferroni over the sequential looks
    comparison = measure_until_decided(
        session, lambda s: decide(s[0], s[1], tolerance, per_look, name=new_p.name), runs, max_runs)
    return CheckResult("ab", comparison, str(old_p), str(new_p), threads, session.rounds)


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


# --------------------------------------------------------------------------- baseline files

def tflite_signature(path: str | os.PathLike) -> dict[str, Any]:
    """Input shape and dtype of a .tflite model (what a baseline must agree on)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        details = Interpreter(model_path=str(path)).get_input_details()
    except Exception as exc:
        raise UserError(f"cannot read {path} as a TFLite model ({str(exc).splitlines()[0]})") from None
    return {"input_shapes": [list(map(int, d["shape"])) for d in details],
            "input_dtypes": [getattr(d["dtype"], "__name__", str(d["dtype"])) for d in details]}


class RepeatTimer:
    """Times ``repeat`` back-to-back invocations and returns the mean (µs per invocation).

    The calibration model is small; timed in blocks as long as one run of the model under test,
    it meets the same preemptions and cache pressure on a busy machine, so the ratio of the two
    does not drift with the load.
    """

    def __init__(self, timer: Timer, repeat: int):
        self.timer, self.repeat = timer, repeat

    def time_once(self) -> float:
        return sum(float(self.timer.time_once()) for _ in range(self.repeat)) / self.repeat


def calibration_repeat(model: Path, calib: Path, threads: int, timer_factory: TimerFactory, probes: int = 7) -> int:
    """How many calibration invocations last about as long as one invocation of ``model`` (1..1000)."""
    def typical(path: Path) -> float:
        timer = _load_timer(timer_factory, path, threads)
        values = [v for v in (_safe_time(timer) for _ in range(probes + 2)) if v is not None][2:]
        if not values:
            raise Unmeasurable(f"{path}: no timed run succeeded; the model does not run on this machine")
        return _median(values)

    return int(min(1000, max(1, round(typical(model) / typical(calib)))))


def _with_calibration_blocks(timer_factory: TimerFactory, calib: Path, repeat: int) -> TimerFactory:
    def factory(path: str, threads: int) -> Timer:
        timer = timer_factory(path, threads)
        return RepeatTimer(timer, repeat) if Path(path) == calib else timer

    return factory


def calibration_model() -> Path:
    """The fixed calibration model shipped with mobiledepth."""
    if not CALIBRATION_MODEL.is_file():
        raise UserError(f"calibration model {CALIBRATION_MODEL} is missing; reinstall mobiledepth "
                        "(or run 'python -m mobiledepth.report.build_calibration')")
    return CALIBRATION_MODEL


def model_name_for(path: Path, explicit: str | None, store_path: str | os.PathLike | None) -> str:
    """The model's name: ``--model-name``, else the store's record for its sha256, else the file name."""
    if explicit:
        return explicit
    from mobiledepth.io import sha256_file
    from mobiledepth.report.store import default_store_path, open_store

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


def update_baseline(
    model_path: str | os.PathLike, baseline_path: str | os.PathLike, runs: int = DEFAULT_MAX_RUNS, threads: int = 1,
    warmup: int = DEFAULT_WARMUP, model_name: str | None = None, store_path: str | os.PathLike | None = None,
    timer_factory: TimerFactory = host_timer,
) -> CheckResult:
    """Time the model interleaved with the calibration model and write a baseline file (atomically).

    The baseline's samples are fixed once written, so it takes many runs (default DEFAULT_MAX_RUNS).
    """
    from mobiledepth.io import sha256_file, write_json_atomic

    _validate_options(runs, threads, DEFAULT_TOLERANCE)
    model = _require_tflite(model_path, "model")
    calib = calibration_model()
    repeat = calibration_repeat(model, calib, threads, timer_factory)
    model_s, calib_s = time_interleaved([model, calib], runs, warmup, threads,
                                        _with_calibration_blocks(timer_factory, calib, repeat))
    _check_measured(model_s, model, runs)
    _check_measured(calib_s, calib, runs)
    baseline = {
        "kind": BASELINE_KIND, "schema": 1,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": model_name_for(model, model_name, store_path), "sha256": sha256_file(model),
                  "file": model.name, **tflite_signature(model)},
        "calibration": {"sha256": sha256_file(calib), "median_us": _median(calib_s), "repeat": repeat},
        "threads": threads, "runs": runs, "warmup": warmup, "host": _host_info(),
        "median_us": _median(model_s), "relative_to_calibration": _median(model_s) / _median(calib_s),
        "samples_us": model_s, "calibration_samples_us": calib_s,
    }
    write_json_atomic(baseline_path, baseline)
    return CheckResult("update-baseline", None, str(baseline_path), str(model), threads, runs,
                       calibration={"new_us": _median(calib_s)}, baseline_path=str(baseline_path))


def read_baseline(path: str | os.PathLike) -> dict:
    """Load and validate a baseline file."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"baseline {file} does not exist; create it with --update-baseline")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"baseline {file} is not JSON ({exc}); recreate it with --update-baseline") from None
    if not isinstance(data, dict) or data.get("kind") != BASELINE_KIND:
        raise UserError(f"{file} is not a latency baseline (kind {data.get('kind') if isinstance(data, dict) else None!r}); "
                        "create one with --update-baseline")
    if data.get("schema") != 1:
        raise UserError(f"baseline {file} has schema {data.get('schema')!r}; this mobiledepth reads schema 1")
    return data


def check_baseline(
    model_path: str | os.PathLike, baseline_path: str | os.PathLike, runs: int = DEFAULT_RUNS,
    threads: int | None = None, tolerance: float = DEFAULT_TOLERANCE, alpha: float = DEFAULT_ALPHA,
    warmup: int = DEFAULT_WARMUP, model_name: str | None = None, store_path: str | os.PathLike | None = None,
    max_runs: int | None = None, timer_factory: TimerFactory = host_timer,
) -> CheckResult:
    """Baseline gate: compare the model's calibration-relative latency with the stored baseline's."""
    from mobiledepth.io import sha256_file

    baseline = read_baseline(baseline_path)
    threads = baseline.get("threads", 1) if threads is None else threads
    max_runs = _validate_options(runs, threads, tolerance, max_runs)
    model = _require_tflite(model_path, "model")
    fix = "pass the matching baseline or recreate it with --update-baseline"
    if threads != baseline.get("threads"):
        raise UserError(f"baseline {baseline_path} was timed with {baseline.get('threads')} thread(s), not {threads}; {fix}")
    name = model_name_for(model, model_name, store_path)
    if name != baseline["model"]["name"]:
        raise UserError(f"baseline {baseline_path} is for model '{baseline['model']['name']}', not '{name}'; {fix}")
    signature = tflite_signature(model)
    if signature["input_shapes"] != baseline["model"]["input_shapes"]:
        raise UserError(f"baseline {baseline_path} was made at input shape {baseline['model']['input_shapes']}, "
                        f"this model takes {signature['input_shapes']}; {fix}")
    if signature["input_dtypes"] != baseline["model"]["input_dtypes"]:
        raise UserError(f"baseline {baseline_path} was made with input type {baseline['model']['input_dtypes']}, "
                        f"this model takes {signature['input_dtypes']}; {fix}")
    calib = calibration_model()
    if sha256_file(calib) != baseline["calibration"]["sha256"]:
        raise UserError(f"baseline {baseline_path} used another calibration model (another mobiledepth version); "
                        "recreate it with --update-baseline")
    repeat = int(baseline["calibration"].get("repeat", 1))
    session = InterleavedSession([model, calib], warmup, threads, _with_calibration_blocks(timer_factory, calib, repeat))
    per_look = alpha / planned_looks(runs, max_runs)  # Bonferroni over the sequential looks
    comparison = measure_until_decided(
        session,
        lambda s: decide(baseline["samples_us"], s[0], tolerance, per_look, old_ref=baseline["calibration_samples_us"],
                         new_ref=s[1], name=model.name),
        runs, max_runs)
    calib_s = session.samples[1]
    speed = _median(calib_s) / _median(baseline["calibration_samples_us"])
    return CheckResult(
        "baseline", comparison, f"baseline {baseline_path}", str(model), threads, session.rounds,
        calibration={"baseline_us": _median(baseline["calibration_samples_us"]), "new_us": _median(calib_s)},
        baseline_path=str(baseline_path),
        notes=[f"calibration model runs {speed:.2f}x as long here as when the baseline was made "
               f"({baseline.get('created_at')})"],
    )
