"""Interleaved timing: several models timed turn by turn, so a busy machine slows them all alike.

One harness serves the CI latency gate (a model and a reference, one run per turn, a random
order each round, fresh interpreters every batch), LUT validation (runs in bursts, caches warm)
and the benchmark scripts (blocks of runs, the order rotating from pass to pass). A *round* gives
every model one *turn*; a turn is ``untimed`` runs and then ``block`` timed ones.
"""

from __future__ import annotations

import math
import random
import time
from typing import Callable, Protocol, Sequence

ORDERS = ("shuffle", "rotate")


class Timer(Protocol):
    def time_once(self) -> float: ...


class CallTimer:
    """A timer over a plain function that returns the seconds of one run (µs from ``time_once``)."""

    def __init__(self, run: Callable[[], float]):
        self.run = run

    def time_once(self) -> float:
        return float(self.run()) * 1e6


def safe_time(timer: Timer) -> float | None:
    """One timing, or None when it raises or is not a positive finite number."""
    try:
        value = float(timer.time_once())
    except Exception:
        return None
    return value if math.isfinite(value) and value > 0 else None


class Interleaved:
    """Models timed interleaved in rounds; ``samples[i]`` holds model i's timings, ``blocks[i]`` them per turn.

    ``loaders`` make each model's timer (called again every ``reload_every`` rounds, the load
    order reversed every other time, so no model is always loaded last); ``warmup`` untimed
    runs follow each load. ``order``: ``shuffle`` (a random order each round: a fixed pattern
    can fall in step with the scheduler's time slices and hand one model all the slow slots) or
    ``rotate`` (round r starts with model r mod n). With ``drop_failures`` a timing that raises
    or is not a positive finite number is dropped; otherwise the error propagates.
    """

    def __init__(self, loaders: Sequence[Callable[[], Timer]], *, block: int = 1, untimed: int = 0,
                 warmup: int = 0, reload_every: int | None = None, order: str = "shuffle", seed: int = 0,
                 pause_s: float = 0.0, drop_failures: bool = True):
        if order not in ORDERS:
            raise ValueError(f"order '{order}' is not one of {', '.join(ORDERS)}")
        self.loaders = list(loaders)
        self.block, self.untimed, self.warmup, self.reload_every = max(1, block), untimed, warmup, reload_every
        self.order, self.pause_s, self.drop_failures = order, pause_s, drop_failures
        self.timers: list[Timer] = []
        self._load()  # fail early on a model that does not load
        self.samples: list[list[float]] = [[] for _ in self.loaders]
        self.blocks: list[list[list[float]]] = [[] for _ in self.loaders]
        self.rounds = 0
        self._rng = random.Random(seed)
        self._order: list[int] = []

    def _time(self, timer: Timer) -> float | None:
        return safe_time(timer) if self.drop_failures else float(timer.time_once())

    def _load(self, reverse: bool = False) -> None:
        self.timers = []  # drop the old timers (interpreters) before loading new ones
        order = list(range(len(self.loaders)))[::-1] if reverse else list(range(len(self.loaders)))
        loaded = {i: self.loaders[i]() for i in order}
        self.timers = [loaded[i] for i in range(len(self.loaders))]
        for i in order:
            for _ in range(self.warmup):
                self._time(self.timers[i])

    def _round_order(self) -> list[int]:
        if self.order == "shuffle":
            self._rng.shuffle(self._order)
            return self._order
        shift = self.rounds % len(self._order)
        return self._order[shift:] + self._order[:shift]

    def _turn(self, index: int) -> None:
        if self.pause_s:
            time.sleep(self.pause_s)  # let the previous model's spinning worker threads go to sleep
        timer = self.timers[index]
        for _ in range(self.untimed):
            self._time(timer)
        values = [v for v in (self._time(timer) for _ in range(self.block)) if v is not None]
        self.samples[index].extend(values)
        self.blocks[index].append(values)

    def run(self, rounds: int) -> list[list[float]]:
        """Time ``rounds`` more rounds (every model one turn each); return all samples so far."""
        self._order = list(range(len(self.loaders)))
        for _ in range(rounds):
            if self.reload_every and self.rounds and self.rounds % self.reload_every == 0:
                self._load(reverse=(self.rounds // self.reload_every) % 2 == 1)
            for index in self._round_order():
                self._turn(index)
            self.rounds += 1
        return self.samples


# ----------------------------------------------------------------------------- the ratio statistic
# Every latency decision (prune's "target met", LUT validation, the CI gate) uses ONE statistic:
# the median over rounds of (model's block median / reference's block median in the same round),
# with a distribution-free order-statistic confidence interval on that median. Why: a round times
# the model and the reference seconds apart, so a load that drifts over minutes cancels in the
# ratio; the median ignores the odd round a preemption ruined; the interval needs no assumption
# about the distribution and no resampling RNG, so the same samples always give the same answer.
CONFIDENCE = 0.95


class RatioInterval:
    """The median per-round ratio and its order-statistic confidence interval (``low`` .. ``high``)."""

    def __init__(self, ratio: float, low: float, high: float, rounds: int, confidence: float = CONFIDENCE):
        self.ratio, self.low, self.high, self.rounds, self.confidence = ratio, low, high, rounds, confidence

    @property
    def half_width(self) -> float:
        """The interval's relative half-width (0.02 = ±2 %)."""
        return (self.high - self.low) / 2 / self.ratio if self.ratio > 0 else math.inf

    def scaled(self, factor: float) -> "RatioInterval":
        """The interval times ``factor`` (a ratio turned into ms by the reference's latency)."""
        return RatioInterval(self.ratio * factor, self.low * factor, self.high * factor, self.rounds, self.confidence)

    def to_dict(self) -> dict:
        return {"ratio": self.ratio, "low": self.low, "high": self.high, "rounds": self.rounds,
                "confidence": self.confidence, "statistic": "median of per-round ratios, order-statistic CI"}

    def __repr__(self) -> str:
        return f"RatioInterval({self.ratio:.4f} [{self.low:.4f}, {self.high:.4f}], rounds={self.rounds})"


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(median, low, high): the sample median and the distribution-free CI from order statistics.

    The interval is [x_(k), x_(n+1-k)] for the largest k with P(Binomial(n, 1/2) < k) <= (1-confidence)/2;
    with fewer than 6 values no such k exists and the interval is the whole range."""
    ordered = sorted(float(v) for v in values)
    n = len(ordered)
    if n == 0:
        raise ValueError("no values")
    alpha_half = (1 - confidence) / 2
    k, tail = 0, 0.0
    while k < n // 2:
        nxt = tail + math.comb(n, k) / 2 ** n  # P(Bin < k+1)
        if nxt > alpha_half:
            break
        tail, k = nxt, k + 1
    low, high = (ordered[k - 1], ordered[n - k]) if k >= 1 else (ordered[0], ordered[-1])
    return _median(ordered), low, high


Reduce = Callable[[Sequence[float]], float]


def round_ratios(model_blocks: Sequence[Sequence[float]], reference_blocks: Sequence[Sequence[float]],
                 reduce: Reduce | None = None) -> list[float]:
    """Per round: the model's block value / the reference's (``reduce``, default the block median),
    for the rounds where both were timed."""
    reduce = reduce or _median
    return [reduce(m) / reduce(r) for m, r in zip(model_blocks, reference_blocks) if m and r]


def ratio_interval(model_blocks: Sequence[Sequence[float]], reference_blocks: Sequence[Sequence[float]],
                   confidence: float = CONFIDENCE, reduce: Reduce | None = None) -> RatioInterval:
    """The shared statistic: median per-round ratio of model to reference, with its CI."""
    ratios = round_ratios(model_blocks, reference_blocks, reduce)
    if not ratios:
        raise ValueError("no round timed both the model and the reference")
    mid, low, high = median_interval(ratios, confidence)
    return RatioInterval(mid, low, high, len(ratios), confidence)


def block_values(blocks: Sequence[Sequence[float]], reduce: Reduce | None = None) -> list[float]:
    """One value per turn (``reduce`` of its timed block, default the median), the unit ratios are made of."""
    return [(reduce or _median)(b) for b in blocks if b]


def measure_ratios(harness: Interleaved, reference: int, rounds: int, max_rounds: int, step: int = 10,
                   settled: Callable[[list[RatioInterval | None]], bool] | None = None,
                   precision: float = 0.02, reduce: Reduce | None = None) -> list[RatioInterval | None]:
    """Rounds of ``harness`` until the ratio intervals (every model to model ``reference``) are settled.

    ``rounds`` first, then ``step`` more at a time up to ``max_rounds``, while ``settled`` (default:
    every interval's half-width <= ``precision``) says no. The reference's own entry is None."""
    harness.run(rounds)
    while True:
        ref_blocks = harness.blocks[reference]
        found = [None if i == reference else ratio_interval(blocks, ref_blocks, reduce=reduce)
                 for i, blocks in enumerate(harness.blocks)]
        done = settled(found) if settled else all(r is None or r.half_width <= precision for r in found)
        if done or harness.rounds >= max_rounds:
            return found
        harness.run(min(step, max_rounds - harness.rounds))
