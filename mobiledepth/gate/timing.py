"""The gate's timing: models timed interleaved with android_bench's harness, a calibration reference,
and sampling until the answer is clear.

Sampling (``measure_until_decided``): ``runs`` rounds (default 40) first; while the answer is
unclear (no significant change beyond tolerance, and the CI not inside the tolerance band)
another STEP_RUNS rounds, up to ``max_runs`` (default 200). Each look tests at alpha / (number
of planned looks) (Bonferroni: 0.01 / 9 with the defaults), so looking often does not inflate
the false-alarm rate.
"""

from __future__ import annotations

import math
import os
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

from android_bench.interleave import Interleaved, Timer, safe_time
from mobiledepth.errors import MobileDepthError, UserError
from mobiledepth.gate.verdict import MIN_SAMPLES, Comparison, Unmeasurable, decided, median

DEFAULT_RUNS = 40  # timed runs per model in the first batch
DEFAULT_MAX_RUNS = 200  # while undecided, batches of STEP_RUNS more, up to this many
STEP_RUNS = 20
DEFAULT_WARMUP = 5
# the fixed calibration model, shipped as package data beside the gate (pyproject.toml)
CALIBRATION_MODEL = Path(__file__).with_name("calibration.tflite")

TimerFactory = Callable[[str, int], Timer]


def host_timer(model_path: str, threads: int) -> Timer:
    """The host TFLite interpreter from android_bench (imported lazily)."""
    from android_bench.host import HostModel

    return HostModel(model_path, threads=threads)


def require_tflite(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path when it is an existing .tflite file, else a UserError naming ``what``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} {p} does not exist; pass the path of a .tflite file")
    if p.suffix != ".tflite":
        raise UserError(f"{what} {p} is not a .tflite file; the host gate times TFLite models (export one first)")
    return p


def load_timer(factory: TimerFactory, path: Path, threads: int) -> Timer:
    """A timer for ``path``; a file the interpreter rejects is a UserError."""
    try:
        return factory(str(path), threads)
    except MobileDepthError:
        raise
    except ImportError as exc:
        raise UserError(f"host timing is unavailable ({exc}); install ai-edge-litert") from None
    except Exception as exc:  # the interpreter rejects the file
        raise UserError(f"cannot load {path} in the TFLite interpreter ({str(exc).splitlines()[0]}); "
                        "is it a valid .tflite model?") from None


class InterleavedSession(Interleaved):
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
        super().__init__([partial(load_timer, timer_factory, path, threads) for path in self.paths],
                         warmup=warmup, reload_every=batch, order="shuffle", seed=seed)


def time_interleaved(
    paths: Sequence[Path], runs: int, warmup: int = DEFAULT_WARMUP, threads: int = 1,
    timer_factory: TimerFactory = host_timer,
) -> list[list[float]]:
    """Time several models ``runs`` rounds, interleaved; the successful samples (µs) per model."""
    return InterleavedSession(paths, warmup, threads, timer_factory).run(runs)


def planned_looks(runs: int, max_runs: int) -> int:
    """How many times ``measure_until_decided`` may test: after ``runs`` rounds, then every STEP_RUNS."""
    return 1 + math.ceil(max(0, max_runs - runs) / STEP_RUNS)


def measure_until_decided(
    session: InterleavedSession, compare: Callable[[InterleavedSession], Comparison], runs: int, max_runs: int,
) -> Comparison:
    """Run ``runs`` rounds, then batches of STEP_RUNS while ``compare(session)`` is undecided, up to ``max_runs``."""
    session.run(runs)
    while True:
        for path, samples in zip(session.paths, session.samples):
            check_measured(samples, path, session.rounds)
        comparison = compare(session)
        if decided(comparison) or session.rounds >= max_runs:
            return comparison
        session.run(min(STEP_RUNS, max_runs - session.rounds))


def check_measured(samples: list[float], path: Path, runs: int) -> None:
    """Unmeasurable when fewer than MIN_SAMPLES of ``runs`` timed runs of ``path`` succeeded."""
    if len(samples) < MIN_SAMPLES:
        raise Unmeasurable(
            f"{path}: only {len(samples)} of {runs} timed runs succeeded (need {MIN_SAMPLES}); "
            "the model does not run reliably on this machine"
        )


# --------------------------------------------------------------------------- the calibration reference

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
        timer = load_timer(timer_factory, path, threads)
        values = [v for v in (safe_time(timer) for _ in range(probes + 2)) if v is not None][2:]
        if not values:
            raise Unmeasurable(f"{path}: no timed run succeeded; the model does not run on this machine")
        return median(values)

    return int(min(1000, max(1, round(typical(model) / typical(calib)))))


def with_calibration_blocks(timer_factory: TimerFactory, calib: Path, repeat: int) -> TimerFactory:
    """``timer_factory`` whose calibration-model timers time blocks of ``repeat`` invocations."""
    def factory(path: str, threads: int) -> Timer:
        timer = timer_factory(path, threads)
        return RepeatTimer(timer, repeat) if Path(path) == calib else timer

    return factory


def calibration_model() -> Path:
    """The fixed calibration model shipped with mobiledepth."""
    if not CALIBRATION_MODEL.is_file():
        raise UserError(f"calibration model {CALIBRATION_MODEL} is missing; reinstall mobiledepth "
                        "(or run 'python -m mobiledepth.gate.build_calibration')")
    return CALIBRATION_MODEL


def paired_comparison(session: InterleavedSession, tolerance: float, alpha: float, name: str,
                      old_scale: float = 1.0) -> Comparison:
    """The A/B comparison of a two-model session (old first): per-round ratios new/old (the shared statistic).

    ``old_scale``: how much slower the old model is than the one timed in its place (a baseline's reference
    network: the recorded model / reference ratio); ratios are divided by it, the old median multiplied."""
    from android_bench.interleave import round_ratios

    from mobiledepth.gate.verdict import decide_paired

    old, new = session.samples
    ratios = [r / old_scale for r in round_ratios(session.blocks[1], session.blocks[0])]
    return decide_paired(ratios, median(old) * old_scale, median(new), len(old), len(new), tolerance, alpha, name)
