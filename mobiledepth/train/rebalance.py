"""Multi-loss rebalancing (Lee & Kim, ECCV 2020) with the paper's choices (SPEC §4).

Every interval, with ``Lbar_k`` the mean of loss k over the interval and
``T = sum_k w_k Lbar_k``::

    adjust_k = clip(1 + lam * ((T / T_prev) * (Lbar_prev_k / Lbar_k) - 1), 0.5, 2.0)
    w_k *= adjust_k

then ``T_prev, Lbar_prev`` are stored (the first interval only stores). ``lam > 0`` raises the
weight of losses that decay faster than the total (easy ones), ``lam < 0`` of slower ones
(hard ones). ``lam`` follows a schedule over epochs: the official code's ``3, 1.5, 0, -1.5, -3``
(``lambda_start=3, lambda_step=-1.5``) first favours the losses that decay fastest:
``order='fast-first'``; ``order='slow-first'`` negates it (``-3, -1.5, 0, 1.5, 3``). The paper
says "hard losses first" without the sign; on our data ``fast-first`` reproduces the weight
movement it reports (pair-wise 0.33 -> 0.1, pixel-wise -> 0.285, ranking -> 0.9, because the
ranking loss decays fastest and the tiny pair-wise term slowest), so it is the default
(docs/train.md has the measured trajectories of both orders).
All weights start equal (``1/K``, no initial scaling); the intermediate heads are wrapped
inside each term by the trainer, so they count as one term.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ORDERS = ("fast-first", "slow-first")


@dataclass
class Rebalancer:
    names: list[str]
    order: str = "fast-first"
    lambda_start: float = 3.0
    lambda_step: float = -1.5
    clip: tuple[float, float] = (0.5, 2.0)
    weights: dict[str, float] = field(default_factory=dict)
    prev_total: float | None = None
    prev_means: dict[str, float] | None = None
    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0
    history: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"rebalance order must be one of {ORDERS}, got {self.order!r}")
        if not self.weights:
            self.weights = {name: 1.0 / len(self.names) for name in self.names}
        if not self.sums:
            self.sums = {name: 0.0 for name in self.names}

    def lam(self, epoch: int) -> float:
        """λ of a (0-based) epoch for the chosen order."""
        base = self.lambda_start + self.lambda_step * epoch
        return base if self.order == "fast-first" else -base

    def accumulate(self, losses: dict[str, float]) -> None:
        """Add one step's (unweighted) loss values to the running interval means."""
        for name in self.names:
            self.sums[name] += float(losses[name])
        self.count += 1

    def rebalance(self, epoch: int, step: int | None = None) -> dict[str, float]:
        """Close the interval: update the weights by the rule above and return them."""
        if self.count == 0:
            return dict(self.weights)
        means = {name: self.sums[name] / self.count for name in self.names}
        total = sum(self.weights[name] * means[name] for name in self.names)
        lam = self.lam(epoch)
        adjust = {name: 1.0 for name in self.names}
        if self.prev_total is not None and self.prev_means is not None:
            low, high = self.clip
            for name in self.names:
                ratio = (total / self.prev_total) * (self.prev_means[name] / max(means[name], 1e-12))
                adjust[name] = min(max(1.0 + lam * (ratio - 1.0), low), high)
                self.weights[name] *= adjust[name]
        self.prev_total, self.prev_means = total, means
        self.sums = {name: 0.0 for name in self.names}
        self.count = 0
        self.history.append({"epoch": epoch, "step": step, "lambda": lam, "means": means, "adjust": adjust,
                             "weights": dict(self.weights)})
        return dict(self.weights)

    def state_dict(self) -> dict:
        """Plain values only (loadable with torch.load(weights_only=True))."""
        return {
            "names": list(self.names), "order": self.order, "lambda_start": self.lambda_start,
            "lambda_step": self.lambda_step, "clip": list(self.clip), "weights": dict(self.weights),
            "prev_total": self.prev_total, "prev_means": self.prev_means, "sums": dict(self.sums),
            "count": self.count, "history": list(self.history),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "Rebalancer":
        state = dict(state)
        state["clip"] = tuple(state["clip"])
        return cls(**state)
