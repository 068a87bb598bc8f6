"""WHDR, the Weighted Human Disagreement Rate of DIW (SPEC §3), and exact point sampling.

A pair (A, B, r) is correct iff ``(z_A - z_B) * r > 0`` for a depth-like prediction
(larger = farther); strict, so a tie is an error. For a disparity-like prediction
(larger = nearer) the sign flips. WHDR = 1 - correct / pairs (every pair weighs 1 on DIW).

Where z is read: the prediction (at the model's input resolution) is brought to the
original image size (the annotation's ``width x height``) by bilinear interpolation with
``align_corners=False`` — exactly ``torch.nn.functional.interpolate(pred, (height, width),
mode='bilinear', align_corners=False)`` — and read at the 0-based annotated pixel.
:func:`sample_bilinear` computes only the needed values of that resize, so no full-size map
is ever materialised; the tests check it against torch's interpolate, borders included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from mobiledepth.errors import UserError
from mobiledepth.progress import Progress, ProgressFn


@dataclass(frozen=True)
class WhdrResult:
    correct: int
    pairs: int

    @property
    def value(self) -> float:
        """1 - correct / pairs (nan for no pairs)."""
        return 1.0 - self.correct / self.pairs if self.pairs else float("nan")

    def __add__(self, other: "WhdrResult") -> "WhdrResult":
        return WhdrResult(self.correct + other.correct, self.pairs + other.pairs)


def pair_correct(z_a, z_b, rel, depth_like: bool = True, equal_tolerance: float | None = None) -> np.ndarray:
    """Per-pair correctness: ``(z_A - z_B) * rel * sign > 0`` (strict).

    ``rel`` is +1 (A farther), -1 (A closer) or 0 (equal). By SPEC §3's formula an ``=`` pair
    can never be correct; pass ``equal_tolerance`` to count it correct when
    ``|z_A - z_B| <= equal_tolerance`` instead.
    """
    z_a, z_b = np.asarray(z_a, dtype=np.float64), np.asarray(z_b, dtype=np.float64)
    rel = np.asarray(rel, dtype=np.float64)
    sign = 1.0 if depth_like else -1.0
    correct = (z_a - z_b) * rel * sign > 0
    if equal_tolerance is not None:
        correct = np.where(rel == 0, np.abs(z_a - z_b) <= equal_tolerance, correct)
    return correct


def whdr(z_a, z_b, rel, depth_like: bool = True, equal_tolerance: float | None = None) -> WhdrResult:
    """WHDR counts of predicted values at A and B against relations ``rel``."""
    correct = pair_correct(z_a, z_b, rel, depth_like, equal_tolerance)
    return WhdrResult(int(correct.sum()), int(correct.size))


def _source_index(dst: np.ndarray, in_size: int, out_size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's bilinear (align_corners=False) source indices and weight along one axis."""
    scale = np.float32(in_size) / np.asarray(out_size, dtype=np.float32)
    src = (dst.astype(np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam = (src - i0).astype(np.float32)
    return i0, i1, lam


def sample_bilinear(pred: np.ndarray, ys, xs, out_size) -> np.ndarray:
    """Values at 0-based ``(ys, xs)`` of ``pred`` (h x w) bilinearly resized to ``out_size = (H, W)``.

    ``out_size`` may also be a pair of per-point arrays (heights, widths).
    """
    pred = np.asarray(pred, dtype=np.float32)
    h, w = pred.shape
    ys, xs = np.asarray(ys), np.asarray(xs)
    y0, y1, ly = _source_index(ys, h, out_size[0])
    x0, x1, lx = _source_index(xs, w, out_size[1])
    top = (1 - lx) * pred[y0, x0] + lx * pred[y0, x1]
    bottom = (1 - lx) * pred[y1, x0] + lx * pred[y1, x1]
    return (1 - ly) * top + ly * bottom


def whdr_of_prediction(pred: np.ndarray, pairs, depth_like: bool = True, equal_tolerance: float | None = None) -> WhdrResult:
    """WHDR of one prediction map (h x w, any resolution) against the image's annotated pairs."""
    if not pairs:
        return WhdrResult(0, 0)
    ys = np.array([[p.ya, p.yb] for p in pairs]).ravel()
    xs = np.array([[p.xa, p.xb] for p in pairs]).ravel()
    heights = np.repeat([p.height for p in pairs], 2)
    widths = np.repeat([p.width for p in pairs], 2)
    values = sample_bilinear(pred, ys, xs, (heights, widths)).reshape(-1, 2)
    rel = np.array([p.rel for p in pairs])
    return whdr(values[:, 0], values[:, 1], rel, depth_like, equal_tolerance)


def shard(data, rank: int, size: int):
    """Every ``size``-th sample of ``data`` from ``rank`` (a view with ``samples``); the whole data for one process.

    The shards of all ranks partition the samples, so summed WHDR counts equal one process's."""
    if size <= 1:
        return data
    from types import SimpleNamespace

    return SimpleNamespace(samples=data.samples[rank::size])


def prefetched_batches(samples, input_size: tuple[int, int], batch_size: int, workers: int = 2, ahead: int = 2):
    """``(batch samples, N x 3 x H x W images)`` in order, decoded by ``workers`` threads at most ``ahead``
    batches in front of the caller: a bounded queue, so a 74K-image split never sits in memory."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from mobiledepth.data.diw import prepare_image

    def decode(batch):
        return np.stack([prepare_image(s.image, input_size) for s in batch])

    starts = iter(range(0, len(samples), batch_size))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL releases the GIL while decoding
        pending: deque = deque()
        for start in starts:
            batch = samples[start : start + batch_size]
            pending.append((batch, pool.submit(decode, batch)))
            if len(pending) > ahead:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def evaluate_runtime(
    runtime: Callable[[np.ndarray], np.ndarray],
    data,
    input_size: tuple[int, int],
    batch_size: int = 8,
    depth_like: bool = True,
    progress: ProgressFn | None = None,
    workers: int = 2,
) -> tuple[WhdrResult, list[int]]:
    """WHDR of ``runtime`` over every sample of ``data``; also the correct count per image.

    Images are decoded by ``workers`` threads a bounded number of batches ahead of the runtime."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    total = WhdrResult(0, 0)
    per_image: list[int] = []
    samples = data.samples
    done = 0
    for batch, images in prefetched_batches(samples, input_size, batch_size, workers):
        pred = np.asarray(runtime(images), dtype=np.float32)
        if pred.ndim != 4 or pred.shape[0] != len(batch) or pred.shape[1] != 1:
            raise UserError(f"model output has shape {pred.shape}, expected (N, 1, H, W); is it a depth model?")
        for sample, depth in zip(batch, pred[:, 0]):
            result = whdr_of_prediction(depth, sample.pairs, depth_like=depth_like)
            per_image.append(result.correct)
            total = total + result
        done += len(batch)
        if progress is not None:
            progress(Progress("eval", "batch", done=done, total=len(samples)))
    return total, per_image
