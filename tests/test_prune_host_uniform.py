"""The uniform-baseline multiplier search of benchmarks/prune_host.py (pure functions, no model)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "prune_host.py"
_spec = importlib.util.spec_from_file_location("prune_host", _PATH)
prune_host = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prune_host)

# LUT estimates (µs) of the mdepth-mid table, widest first, with the dip seen there: x0.43 estimated
# above x0.62 (a group pinned at its minimum width changes the graph)
ESTIMATES = [(0.67, 1082.1), (0.66, 1082.1), (0.65, 1045.3), (0.64, 1024.8), (0.63, 1015.7), (0.62, 948.4),
             (0.61, 943.7), (0.44, 697.6), (0.43, 981.6), (0.42, 978.6), (0.41, 670.5)]


def test_candidates_bracket_the_widest_multiplier_meeting_the_target():
    # NetAdapt's seed-3 estimate: the old "closest anywhere" search took x0.43 (981.6 µs)
    assert prune_host.uniform_candidates(ESTIMATES, 985.5) == [0.63, 0.62, 0.61]
    assert prune_host.uniform_candidates(ESTIMATES, 985.5, around=0) == [0.62]


def test_candidates_skip_multipliers_with_the_same_widths():
    # x0.67 and x0.66 round to the same widths: one candidate, its neighbours are distinct models
    assert prune_host.uniform_candidates(ESTIMATES, 1050.0) == [0.67, 0.65, 0.64]


@pytest.mark.parametrize("target, expected", [(5000.0, [1.0, 0.9]), (1.0, [0.5, 0.4])])
def test_candidates_at_the_ends(target, expected):
    estimates = [(1.0, 2000.0), (0.9, 1800.0), (0.5, 900.0), (0.4, 700.0)]
    assert prune_host.uniform_candidates(estimates, target) == expected


def test_closest_measured_ratio_wins():
    assert prune_host.closest_ratio({0.63: 0.612, 0.62: 0.571, 0.61: 0.566}, 0.60) == 0.63
    assert prune_host.closest_ratio({0.63: 0.612, 0.62: 0.589, 0.61: 0.566}, 0.60) == 0.62
    assert prune_host.closest_ratio({0.7: 0.75, 0.6: 0.25}, 0.5) == 0.7  # an exact tie: the wider
