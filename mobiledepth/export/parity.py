"""Numerical parity of an artifact against the PyTorch fp32 output on the same images."""

from __future__ import annotations

import numpy as np

# Bars per precision: max |error| relative to the output range, and ordinal agreement.
PARITY_BARS: dict[str, dict] = {
    "fp32": {"max_abs_err_rel": 1e-4},
    "fp16": {"max_abs_err_rel": 1e-2, "ordinal_agreement": 0.999},
    "int8": {},      # reported, no bar yet
    "int16x8": {},   # reported, no bar yet
}

# Precisions without a bar get a warning line below this ordinal agreement: 1 pixel pair in 100
# ordered differently from PyTorch is visible in a relative-depth map (int8 measures ~0.93-0.95).
WARNING_BARS: dict[str, dict] = {
    "int8": {"ordinal_agreement": 0.99},
    "int16x8": {"ordinal_agreement": 0.99},
}


# Pairs closer than this fraction of the output range are ties at any reduced precision
# (fp16 weights alone move a trained model's output by ~5e-4 of its range on average); the
# bar counts the pairs PyTorch resolves, and the all-pairs figure is recorded beside it.
MIN_SEPARATION = 1e-3


def ordinal_agreement(reference: np.ndarray, candidate: np.ndarray, pairs: int = 20000, seed: int = 0,
                      min_separation: float = MIN_SEPARATION) -> float:
    """Fraction of random pixel pairs (per image) ordered the same way as the reference,
    among pairs whose reference depths differ by at least ``min_separation`` of the image's
    output range. A pair the candidate ties while the reference does not is a disagreement."""
    rng = np.random.default_rng(seed)
    agree = total = 0
    for ref, cand in zip(reference.reshape(len(reference), -1), candidate.reshape(len(candidate), -1)):
        a = rng.integers(0, ref.size, pairs)
        b = rng.integers(0, ref.size, pairs)
        diff = ref[a] - ref[b]
        keep = (diff != 0) & (np.abs(diff) >= min_separation * (ref.max() - ref.min()))
        agree += int(np.sum(np.sign(cand[a] - cand[b])[keep] == np.sign(diff)[keep]))
        total += int(keep.sum())
    return agree / total if total else 1.0


def measure_parity(reference: np.ndarray, candidate: np.ndarray, precision: str) -> dict:
    """Errors relative to each image's output range (worst image for max), ordinal agreement,
    and whether the precision's bar is met (None when the precision has no bar)."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"output shapes differ: reference {reference.shape}, candidate {candidate.shape}")
    flat_ref = reference.reshape(len(reference), -1)
    err = np.abs(candidate.reshape(len(candidate), -1) - flat_ref)
    ranges = np.maximum(flat_ref.max(axis=1) - flat_ref.min(axis=1), 1e-12)
    max_rel = float(np.max(err.max(axis=1) / ranges))
    mean_rel = float(np.mean(err.mean(axis=1) / ranges))
    ordinal = ordinal_agreement(reference, candidate)
    ordinal_all = ordinal_agreement(reference, candidate, min_separation=0.0)
    bar = PARITY_BARS.get(precision, {})
    passed = None
    if bar:
        passed = max_rel <= bar["max_abs_err_rel"] and ordinal >= bar.get("ordinal_agreement", 0.0)
    return {"max_abs_err_rel": max_rel, "mean_abs_err_rel": mean_rel, "ordinal_agreement": ordinal,
            "ordinal_agreement_all": ordinal_all, "ordinal_min_separation": MIN_SEPARATION,
            "output_range": float(np.mean(ranges)), "images": len(reference), "passed": passed, "bar": bar}


def parity_warning(precision: str, parity: dict) -> str | None:
    """A one-line warning when a precision without a bar orders pixels worse than its warning bar."""
    floor = WARNING_BARS.get(precision, {}).get("ordinal_agreement")
    if floor is None or parity["ordinal_agreement"] >= floor:
        return None
    flipped = 1.0 - parity["ordinal_agreement"]
    return (f"{precision} orders {flipped:.1%} of pixel pairs differently from PyTorch (ordinal agreement "
            f"{parity['ordinal_agreement']:.4f} < {floor}; max error {parity['max_abs_err_rel']:.2e} of the range); "
            "measure its accuracy with `mobiledepth eval` on your data, or deploy fp16")
