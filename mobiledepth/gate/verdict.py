"""The gate's statistics and verdict.

A/B mode (``decide_paired``) uses the statistic every latency decision in mobiledepth uses
(``android_bench.interleave``): r = the median over rounds of new/old timed in the same round,
its 95 % order-statistic CI, and a one-sided sign test on the per-round ratios (paired: a load
that drifts over the session hits both sides of a ratio alike). Baseline mode (``decide``)
compares two sessions, so nothing pairs the samples: ratio r = median(new) / median(old)
(calibration-normalised). The result is a **regression** iff r > 1 + tolerance AND a one-sided
Mann-Whitney U test (new slower than old) gives p < alpha AND the 95 % bootstrap confidence
interval of r (``scipy.stats.bootstrap``; in baseline mode it resamples the calibration samples
too) lies above 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mobiledepth.errors import MobileDepthError, UserError

DEFAULT_TOLERANCE = 0.05
DEFAULT_ALPHA = 0.01
MIN_SAMPLES = 8
CONFIDENCE = 0.95


class Unmeasurable(MobileDepthError):
    """The run produced too few successful timings to decide anything (exit code 2)."""

    exit_code = 2


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


def parse_tolerance(text: str) -> float:
    """'5%' -> 0.05, '0.05' -> 0.05, '5' -> 0.05 (a bare number >= 1 is read as percent)."""
    raw = text.strip()
    try:
        value = float(raw.rstrip("%"))
    except ValueError:
        raise UserError(f"--tolerance '{text}' is not a number; write it like 5% or 0.05") from None
    if raw.endswith("%") or value >= 1:
        value /= 100
    if not 0 < value < 1:
        raise UserError(f"--tolerance '{text}' must be between 0 and 100 %; e.g. 5%")
    return value


def median(values: Sequence[float]) -> float:
    """The median of ``values`` as a float."""
    import numpy as np

    return float(np.median(np.asarray(values, dtype=float)))


def _samples(old, new, old_ref, new_ref):
    """The sample arrays, the ratio statistic over them, and the samples the U test compares."""
    import numpy as np

    old_a, new_a = np.asarray(old, dtype=float), np.asarray(new, dtype=float)
    if len(old_a) < MIN_SAMPLES or len(new_a) < MIN_SAMPLES:
        raise Unmeasurable(
            f"too few successful timings (old {len(old_a)}, new {len(new_a)}; need {MIN_SAMPLES}); "
            "check that both models run on this machine, or raise --runs"
        )
    if old_ref is None or new_ref is None:
        def ratio_of_medians(o, n, axis=-1):
            return np.median(n, axis=axis) / np.median(o, axis=axis)

        return (old_a, new_a), ratio_of_medians, (old_a, new_a)
    old_r, new_r = np.asarray(old_ref, dtype=float), np.asarray(new_ref, dtype=float)
    if len(old_r) < MIN_SAMPLES or len(new_r) < MIN_SAMPLES:
        raise Unmeasurable(f"too few calibration timings (need {MIN_SAMPLES}); raise --runs")

    def normalised_ratio(o, n, orf, nrf, axis=-1):
        return (np.median(n, axis=axis) / np.median(nrf, axis=axis)) / (
            np.median(o, axis=axis) / np.median(orf, axis=axis))

    return (old_a, new_a, old_r, new_r), normalised_ratio, (old_a / np.median(old_r), new_a / np.median(new_r))


def _verdict(ratio: float, ci_low: float, ci_high: float, p_slower: float, p_faster: float,
             tolerance: float, alpha: float) -> str:
    if ratio > 1 + tolerance and p_slower < alpha and ci_low > 1:
        return "regression"
    if ratio < 1 / (1 + tolerance) and p_faster < alpha and ci_high < 1:
        return "improvement"
    if 1 / (1 + tolerance) <= ratio <= 1 + tolerance:
        return "no change"
    return "within noise"  # beyond tolerance but not significant: not a failure


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

    samples, statistic, (test_old, test_new) = _samples(old, new, old_ref, new_ref)
    ratio = float(statistic(*samples))
    boot = stats.bootstrap(samples, statistic, n_resamples=2000, confidence_level=CONFIDENCE,
                           method="percentile", vectorized=True, random_state=np.random.default_rng(seed))
    p_slower = float(stats.mannwhitneyu(test_new, test_old, alternative="greater").pvalue)
    p_faster = float(stats.mannwhitneyu(test_new, test_old, alternative="less").pvalue)
    ci_low, ci_high = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    return Comparison(
        name=name, old_median_us=median(samples[0]), new_median_us=median(samples[1]), ratio=ratio,
        ci_low=ci_low, ci_high=ci_high, p_value=p_slower, n_old=len(samples[0]), n_new=len(samples[1]),
        verdict=_verdict(ratio, ci_low, ci_high, p_slower, p_faster, tolerance, alpha),
        tolerance=tolerance, alpha=alpha, normalised=len(samples) == 4,
    )


def sign_test(ratios: Sequence[float]) -> tuple[float, float]:
    """One-sided sign-test p-values (slower: ratios above 1 dominate; faster: below 1), ties dropped."""
    import math

    above, below = sum(r > 1 for r in ratios), sum(r < 1 for r in ratios)
    n = above + below
    if n == 0:
        return 1.0, 1.0

    def tail(k: int) -> float:  # P(Binomial(n, 1/2) >= k)
        return sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n

    return tail(above), tail(below)


def decide_paired(ratios: Sequence[float], old_median_us: float, new_median_us: float, n_old: int, n_new: int,
                  tolerance: float = DEFAULT_TOLERANCE, alpha: float = DEFAULT_ALPHA, name: str = "model") -> Comparison:
    """The A/B verdict on per-round ratios new/old: their median, its order-statistic CI, a sign test."""
    from android_bench.interleave import median_interval

    if len(ratios) < MIN_SAMPLES:
        raise Unmeasurable(f"too few rounds timed both models ({len(ratios)}; need {MIN_SAMPLES}); "
                           "check that both models run on this machine, or raise --runs")
    ratio, ci_low, ci_high = median_interval(ratios, CONFIDENCE)
    p_slower, p_faster = sign_test(ratios)
    return Comparison(
        name=name, old_median_us=old_median_us, new_median_us=new_median_us, ratio=ratio, ci_low=ci_low,
        ci_high=ci_high, p_value=p_slower, n_old=n_old, n_new=n_new,
        verdict=_verdict(ratio, ci_low, ci_high, p_slower, p_faster, tolerance, alpha), tolerance=tolerance, alpha=alpha)


def decided(c: Comparison) -> bool:
    """Clear enough to stop measuring: a significant change beyond tolerance, or a CI inside the tolerance band."""
    if c.verdict in ("regression", "improvement"):
        return True
    return 1 / (1 + c.tolerance) <= c.ci_low and c.ci_high <= 1 + c.tolerance
