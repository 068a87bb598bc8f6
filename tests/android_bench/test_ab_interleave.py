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


# ----------------------------------------------------------------------------- the shared ratio statistic
def test_median_interval_order_statistics_by_hand():
    from android_bench.interleave import median_interval

    # n = 100: the 95 % distribution-free interval of the median is [x_(40), x_(61)] (binomial tables)
    assert median_interval(range(1, 101)) == (50.5, 40.0, 61.0)
    # n = 6: P(Bin(6, 1/2) = 0) = 1/64 <= 2.5 %, so [x_(1), x_(6)]; n = 5: no k, the whole range
    assert median_interval([3, 1, 2, 6, 5, 4]) == (3.5, 1.0, 6.0)
    assert median_interval([5, 1, 4, 2, 3]) == (3.0, 1.0, 5.0)
    with pytest.raises(ValueError):
        median_interval([])


def test_median_interval_covers_the_true_median_about_95_percent():
    import random

    from android_bench.interleave import median_interval

    rng = random.Random(3)
    hits = sum(lo <= 1.0 <= hi for _, lo, hi in
               (median_interval([rng.lognormvariate(0, 0.3) for _ in range(40)]) for _ in range(400)))
    assert 0.92 * 400 <= hits <= 0.995 * 400  # the median of lognormal(0, s) is exactly 1


def test_ratio_interval_cancels_a_load_that_hits_both_models_alike():
    """Load drifts 3x over the session; per-round ratios stay at 0.5, the absolute samples do not."""
    from android_bench.interleave import ratio_interval

    load = [1 + 2 * r / 49 for r in range(50)]
    model = [[500.0 * f, 510.0 * f] for f in load]
    reference = [[1000.0 * f, 1020.0 * f] for f in load]
    r = ratio_interval(model, reference)
    assert r.ratio == pytest.approx(0.5) and r.low == pytest.approx(0.5) and r.high == pytest.approx(0.5)
    assert r.rounds == 50 and r.half_width == pytest.approx(0.0, abs=1e-12)
    assert ratio_interval(model, reference, reduce=min).ratio == pytest.approx(0.5)
    assert r.scaled(2.0).high == pytest.approx(1.0)


def test_measure_ratios_stops_when_settled_or_at_the_cap():
    from android_bench.interleave import measure_ratios

    log: list[str] = []
    noisy = iter([1.0, 1.5, 0.7, 1.2] * 1000)
    loaders = [lambda: Scripted("m", log, noisy), lambda: Scripted("r", log, iter(lambda: 2.0, None))]
    harness = Interleaved(loaders, order="rotate")
    found = measure_ratios(harness, 1, rounds=10, max_rounds=40, step=10, precision=0.001)
    assert harness.rounds == 40 and found[1] is None  # never within 0.1 %: stops at the cap
    harness = Interleaved(loaders, order="rotate")
    found = measure_ratios(harness, 1, rounds=10, max_rounds=40, settled=lambda f: f[0].high < 1.0)
    assert harness.rounds == 10 and found[0].high < 1.0  # clearly under: stops at the first look


def test_the_phone_harness_alternates_benchmark_model_invocations(fake_phones, arm64_binary, phone_model, tmp_path,
                                                                   monkeypatch):
    """On a phone a turn is one benchmark_model invocation; the models alternate, rotating each round."""
    from mobiledepth.prune.timing import time_against

    monkeypatch.setenv("ANDROID_BENCH_BINARY", str(arm64_binary))
    fake_phones.set([fake_phones.phone("R5CR10AAA", "SM-G991B")])
    reference = tmp_path / "reference.tflite"
    reference.write_bytes(phone_model.read_bytes() + b"reference")
    timing = time_against({"model": phone_model}, reference, device="S21", delegate="cpu", rounds=6, max_rounds=6,
                          cooldown_s=0.0)
    graphs = [next(a for a in argv if a.startswith("--graph=")).rsplit("/", 1)[-1] for argv in fake_phones.bench_argv(0)]
    assert graphs == ["model_fp16.tflite", "reference.tflite", "reference.tflite", "model_fp16.tflite"] * 3
    assert timing.rounds == 6 and timing.ratios["model"].rounds == 6 and timing.reference_us > 0
