"""Numerical parity of an artifact against the PyTorch fp32 output on the same images."""

from __future__ import annotations

import numpy as np

# The input noise of the fp16 bar's noise floor (below), in grey levels of an 8-bit image.
NOISE_GREY_LEVELS = 0.5

# Bars per precision: max |error| relative to the output range, and ordinal agreement. ``noise_grey_levels``: a
# trained checkpoint's bar is relative to its own noise floor under that input noise (:func:`fp16_verdict`).
PARITY_BARS: dict[str, dict] = {
    "fp32": {"max_abs_err_rel": 1e-4},
    "fp16": {"max_abs_err_rel": 1e-2, "ordinal_agreement": 0.999, "noise_grey_levels": NOISE_GREY_LEVELS},
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


# The fp16 bar of a trained checkpoint is relative to the model's own noise floor (issue 16): a CPU fp16 artifact
# is fp32 arithmetic on fp16-rounded weights, and a briefly trained model exported above its training size can move
# more under that rounding than the fixed bar allows while moving ten times more under half a grey level of input
# noise (docs/export.md, "Parity"). The floor: the fp32 model's own output change under uniform input noise of
# ±``noise_grey_levels``/255 (below what an 8-bit camera image resolves), on the parity images, median of
# NOISE_DRAWS seeded draws. Random weights keep the fixed bar (the fp32 artifact proves the converter; fp16 warns).
NOISE_DRAWS = 3
NOISE_SEED = 0
FP16_RULES = {
    "fixed": "max error <= 1e-2 of the range and ordinal agreement >= 0.999 (PARITY_BARS['fp16'])",
    "noise_floor": "max error <= max(1e-2, the fp32 model's median max change under ±0.5/255 input noise) and "
                   "ordinal agreement >= min(0.999, its median ordinal agreement under that noise)",
}


def input_noise_response(run, images: np.ndarray, reference: np.ndarray, grey_levels: float = NOISE_GREY_LEVELS,
                         draws: int = NOISE_DRAWS, seed: int = NOISE_SEED) -> dict:
    """How far the fp32 model's own output moves when its input gets uniform noise of ±``grey_levels``/255:
    ``run`` (NCHW float images in [0, 1] -> outputs) on ``draws`` seeded noisy copies of ``images``, each measured
    against ``reference`` like an artifact (:func:`measure_parity`); the median of each figure over the draws,
    and the draws themselves."""
    rng = np.random.default_rng(seed)
    per_draw = []
    for _ in range(draws):
        noisy = np.clip(images + rng.uniform(-grey_levels / 255, grey_levels / 255, images.shape), 0, 1)
        per_draw.append(measure_parity(reference, run(noisy.astype(np.float32)), "noise"))
    keys = ("max_abs_err_rel", "mean_abs_err_rel", "ordinal_agreement")
    return {"grey_levels": grey_levels, "draws": draws, "seed": seed,
            **{k: float(np.median([d[k] for d in per_draw])) for k in keys},
            "per_draw": [{k: d[k] for k in keys} for d in per_draw]}


def fp16_verdict(parity: dict, floor: dict | None) -> dict:
    """The fp16 bar's verdict: with a noise ``floor`` (:func:`input_noise_response`, a trained checkpoint) the rule
    ``noise_floor``, else ``fixed``; returns ``parity`` with ``rule``, ``limit``, ``noise_floor`` and ``passed`` set
    (the fixed ``bar`` stays beside them). The relative limits are never stricter than the fixed bar."""
    fixed = PARITY_BARS["fp16"]
    limit = {"max_abs_err_rel": fixed["max_abs_err_rel"], "ordinal_agreement": fixed.get("ordinal_agreement", 0.0)}
    if floor is not None:
        limit = {"max_abs_err_rel": max(limit["max_abs_err_rel"], floor["max_abs_err_rel"]),
                 "ordinal_agreement": min(limit["ordinal_agreement"], floor["ordinal_agreement"])}
    passed = (parity["max_abs_err_rel"] <= limit["max_abs_err_rel"]
              and parity["ordinal_agreement"] >= limit["ordinal_agreement"])
    return {**parity, "rule": "fixed" if floor is None else "noise_floor", "limit": limit, "noise_floor": floor,
            "passed": passed}


# The int8 bars (issue 16), checked by the export on the recommended int8 artifact and reported in
# ``export.json`` (``int8_bars``); a miss is a ``warning:`` line saying by how much, not a failure
# (post-training int8 misses them on the paper model; ``mobiledepth train --qat`` is the way to meet them).
INT8_BARS = {
    "ordinal_agreement": 0.99,  # >= : pairs PyTorch fp32 separates by >= MIN_SEPARATION of the range
    "whdr_delta": 0.005,        # <= : WHDR(int8) - WHDR(fp32 TFLite) on held-out DIW-format data
    "latency_ratio": 0.6,       # <= : int8 / fp32 median latency on this host (XNNPACK), same rounds
}
# Threads of the latency bar's timing: one. Quiet, on this 2-core host, int8/fp32 at 1 thread read 0.49-0.54 for
# every file measured; at 2 threads the same files wandered 0.54-0.76 between passes (docs/benchmarks.md, "int8/fp32
# latency re-timed quietly"), so a 2-thread bar flipped with whatever else the machine ran.
INT8_LATENCY_THREADS = 1


def int8_bars(ordinal: float, latency_ratio: float | None, whdr_fp32: float | None,
              whdr_int8: float | None) -> dict:
    """Each int8 bar with its value, limit, margin (positive = met with room) and verdict; a bar not
    measured (no fp32 artifact to time, no held-out data) is ``passed: None``."""
    delta = None if whdr_fp32 is None or whdr_int8 is None else whdr_int8 - whdr_fp32
    measured = {"ordinal_agreement": (ordinal, 1), "whdr_delta": (delta, -1), "latency_ratio": (latency_ratio, -1)}
    bars = {}
    for name, (value, sense) in measured.items():
        limit = INT8_BARS[name]
        margin = None if value is None else sense * (value - limit)
        bars[name] = {"value": value, "limit": limit, "margin": margin,
                      "passed": None if margin is None else margin >= 0}
    bars["whdr_delta"].update(whdr_fp32_tflite=whdr_fp32, whdr_int8=whdr_int8)
    return bars


def int8_bar_warnings(path: str, bars: dict) -> list[str]:
    """One line per missed (or unmeasured) int8 bar, saying by how much (ordinal agreement has its line from
    :func:`parity_warning` already, for every int8 artifact)."""
    words = {"ordinal_agreement": ("ordinal agreement", ">="), "whdr_delta": ("WHDR - fp32 TFLite WHDR", "<="),
             "latency_ratio": ("int8/fp32 latency", "<=")}
    lines = []
    for name, bar in bars.items():
        what, sense = words[name]
        if bar["passed"] is False and name != "ordinal_agreement":
            lines.append(f"{path}: int8 misses its bar: {what} {bar['value']:.4f} (bar {sense} {bar['limit']}; "
                         f"short by {-bar['margin']:.4f}); see docs/export.md (int8 bars and QAT)")
        elif bar["passed"] is None and name == "whdr_delta":
            lines.append(f"{path}: int8 WHDR bar not measured (it needs held-out DIW-format data and the fp32 "
                         "artifact: pass --eval-data DIR and --precision fp32,int8; a 'train --qat' checkpoint "
                         "brings its own data)")
    return lines


def parity_warning(precision: str, parity: dict) -> str | None:
    """A one-line warning when a precision without a bar orders pixels worse than its warning bar."""
    floor = WARNING_BARS.get(precision, {}).get("ordinal_agreement")
    if floor is None or parity["ordinal_agreement"] >= floor:
        return None
    flipped = 1.0 - parity["ordinal_agreement"]
    return (f"{precision} orders {flipped:.1%} of pixel pairs differently from PyTorch (ordinal agreement "
            f"{parity['ordinal_agreement']:.4f} < {floor}; max error {parity['max_abs_err_rel']:.2e} of the range); "
            "measure its accuracy with `mobiledepth eval` on your data, or deploy fp16")


def integer_warning(path: str, report: dict) -> str | None:
    """One line when an int8 artifact is not full-integer (``mobiledepth.export.tflite_passes.float_ops``):
    which ops stay float, and the fix."""
    if report["full_integer"]:
        return None
    ops = ", ".join(f"{count} {name}" for name, count in report["float_ops"].items()) or "none"
    return (f"{path} is not full-integer: float ops {ops} ({report['dequantize_inside']} DEQUANTIZE inside the "
            "graph), which an integer-only NPU cannot run and which cost time on the CPU; a 'train --qat' "
            "checkpoint converts LEAKY_RELU and ConvTranspose2d to integer ops, other ops need replacing "
            "(docs/export.md, int8 bars and QAT)")
