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
