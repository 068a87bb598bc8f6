"""The interleaved timing harness shared by the CI gate, LUT validation and the benchmark scripts."""

from __future__ import annotations

import pytest

from android_bench.interleave import CallTimer, Interleaved, safe_time


class Scripted:
    """A fake model: logs every run under its name and returns the next scripted value."""

    def __init__(self, name, log, values):
        self.name, self.log, self.values = name, log, iter(values)

    def time_once(self):
        self.log.append(self.name)
        value = next(self.values)
        if isinstance(value, Exception):
            raise value
        return value


def _loaders(log, names, value=1.0):
    return [lambda name=name: Scripted(name, log, iter(lambda: value, None)) for name in names]


def test_rotated_blocks_with_an_untimed_run_per_turn():
    log: list[str] = []
    harness = Interleaved(_loaders(log, "abc"), block=2, untimed=1, order="rotate", drop_failures=False)
    samples = harness.run(3)
    turns = ["".join(log[i:i + 3]) for i in range(0, len(log), 3)]
    assert turns == ["aaa", "bbb", "ccc", "bbb", "ccc", "aaa", "ccc", "aaa", "bbb"]  # round r starts with model r
    assert [len(s) for s in samples] == [6, 6, 6]
    assert [len(b) for b in harness.blocks[0]] == [2, 2, 2]


def test_failures_are_dropped_or_raised():
    log: list[str] = []
    values = [5.0, RuntimeError("boom"), float("nan"), -1.0, 7.0]
    dropping = Interleaved([lambda: Scripted("a", log, values)], block=5)
    assert dropping.run(1) == [[5.0, 7.0]]
    raising = Interleaved([lambda: Scripted("a", log, values)], block=5, drop_failures=False)
    with pytest.raises(RuntimeError, match="boom"):
        raising.run(1)


def test_reloads_alternate_the_load_order_and_warm_up():
    loads: list[str] = []

    def loader(name):
        def load():
            loads.append(name)
            return Scripted(name, [], iter(lambda: 1.0, None))
        return load

    harness = Interleaved([loader("a"), loader("b")], warmup=2, reload_every=3)
    harness.run(7)
    assert loads == ["a", "b", "b", "a", "a", "b"]  # at rounds 0, 3, 6
    assert [len(s) for s in harness.samples] == [7, 7]


def test_shuffled_rounds_have_no_fixed_pattern():
    log: list[str] = []
    Interleaved(_loaders(log, "ab"), seed=1).run(200)
    firsts = log[0::2]
    assert 70 < firsts.count("a") < 130
    assert len({"".join(firsts[i:i + 2]) for i in range(0, 200, 2)}) == 4


def test_call_timer_and_safe_time():
    assert CallTimer(lambda: 0.002).time_once() == pytest.approx(2000.0)  # seconds -> µs
    assert safe_time(CallTimer(lambda: 0.0)) is None
    with pytest.raises(ValueError, match="order 'fixed'"):
        Interleaved([], order="fixed")
