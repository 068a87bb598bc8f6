"""The Lee & Kim rebalancing rule against hand-computed numbers, and its direction per order."""

import math

import pytest

from mobiledepth.train.rebalance import Rebalancer
from mobiledepth.train.trainer import rebalance_points


def _interval(rb, means, steps=2):
    for _ in range(steps):
        rb.accumulate(means)


def test_update_rule_hand_computed():
    rb = Rebalancer(["a", "b"], order="fast-first", lambda_start=0.5, lambda_step=-1.5)
    assert rb.weights == {"a": 0.5, "b": 0.5}  # equal, no initial scaling
    _interval(rb, {"a": 2.0, "b": 1.0})
    assert rb.rebalance(epoch=0) == {"a": 0.5, "b": 0.5}  # first interval only stores
    assert rb.prev_total == pytest.approx(1.5)  # T = 0.5*2 + 0.5*1
    rb.accumulate({"a": 1.5, "b": 1.0})
    rb.accumulate({"a": 0.5, "b": 1.0})  # means a = 1, b = 1
    weights = rb.rebalance(epoch=0)
    # T = 0.5*1 + 0.5*1 = 1; lam = 0.5
    # a: ratio = (1/1.5)*(2/1) = 4/3 -> adjust = 1 + 0.5*(1/3) = 7/6
    # b: ratio = (1/1.5)*(1/1) = 2/3 -> adjust = 1 - 0.5*(1/3) = 5/6
    assert weights["a"] == pytest.approx(0.5 * 7 / 6)
    assert weights["b"] == pytest.approx(0.5 * 5 / 6)
    assert rb.history[-1]["adjust"] == pytest.approx({"a": 7 / 6, "b": 5 / 6})
    assert rb.prev_total == pytest.approx(1.0) and rb.count == 0


def test_adjustment_is_clipped_and_lambda_schedule_follows_the_order():
    rb = Rebalancer(["a", "b"], order="fast-first")  # lam = 3 in epoch 0
    _interval(rb, {"a": 2.0, "b": 1.0})
    rb.rebalance(0)
    _interval(rb, {"a": 1.0, "b": 1.0})
    # a: 1 + 3*(1/3) = 2 (at the clip); b: 1 + 3*(-1/3) = 0 -> clipped to 0.5
    assert rb.rebalance(0) == pytest.approx({"a": 1.0, "b": 0.25})
    assert [rb.lam(e) for e in range(5)] == [3.0, 1.5, 0.0, -1.5, -3.0]  # the official schedule
    slow = Rebalancer(["a"], order="slow-first")
    assert [slow.lam(e) for e in range(5)] == [-3.0, -1.5, 0.0, 1.5, 3.0]


def _trajectory(order):
    """One epoch, 5 rebalances, shaped like our measured runs: ranking decays fast, rmse medium,
    the tiny pair-wise term slowly."""
    rb = Rebalancer(["pairwise", "rmse", "ranking"], order=order)
    for interval in range(5):
        for step in range(10):
            t = interval * 10 + step
            rb.accumulate({"pairwise": math.exp(-0.005 * t), "rmse": math.exp(-0.03 * t), "ranking": math.exp(-0.08 * t)})
        rb.rebalance(epoch=0)
    return rb.weights


def test_fast_first_moves_weights_the_papers_way():
    # the paper: pairwise 0.33 -> 0.1, pixelwise 0.33 -> 0.285, ranking 0.33 -> 0.9
    w = _trajectory("fast-first")
    assert w["pairwise"] < 1 / 3 and w["ranking"] > 1 / 3
    assert w["pairwise"] < w["rmse"] < w["ranking"]
    w = _trajectory("slow-first")  # the negated schedule moves them the other way
    assert w["pairwise"] > w["rmse"] > w["ranking"]


def test_state_round_trip():
    rb = Rebalancer(["a", "b"])
    _interval(rb, {"a": 2.0, "b": 1.0})
    rb.rebalance(0)
    rb.accumulate({"a": 1.0, "b": 3.0})
    clone = Rebalancer.from_state_dict(rb.state_dict())
    assert clone == rb


def test_rebalance_points_spread_per_epoch():
    assert rebalance_points(10, 5) == {1, 3, 5, 7, 9}
    assert rebalance_points(7, 5) == {0, 2, 3, 5, 6}
    assert rebalance_points(3, 5) == {0, 1, 2}  # never more than once per step
