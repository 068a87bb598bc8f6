"""Training losses of the paper (SPEC §4): ranking, RMSE to a teacher, pair-wise KD, heads.

All functions take batched tensors and return a scalar tensor; pairs come padded with a
boolean mask (see :func:`mobiledepth.data.dataset.collate`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

HEAD_WEIGHTS = (0.5, 0.25, 0.25)  # final, intermediate 1, intermediate 2 (paper §3.1)


def gather_pairs(depth: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z_A, z_B of shape (N, K) read from ``depth`` (N, 1, H, W) at ``points`` (N, K, 4) = (ya, xa, yb, xb)."""
    n, _, height, width = depth.shape
    flat = depth.reshape(n, height * width)
    index_a = points[..., 0] * width + points[..., 1]
    index_b = points[..., 2] * width + points[..., 3]
    return flat.gather(1, index_a), flat.gather(1, index_b)


def ranking_loss(depth: torch.Tensor, points: torch.Tensor, rel: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Chen et al. 2016: ``|r| softplus(-r d) + (1 - |r|) d^2`` with ``d = z_A - z_B``, mean over valid pairs.

    ``r`` = +1 when A is farther (depth-like output, larger = farther), -1 closer, 0 equal.
    """
    z_a, z_b = gather_pairs(depth, points)
    d = z_a - z_b
    r = rel.to(d.dtype)
    per_pair = r.abs() * F.softplus(-r * d) + (1 - r.abs()) * d * d
    if mask is None:
        return per_pair.mean()
    mask = mask.to(d.dtype)
    return (per_pair * mask).sum() / mask.sum().clamp_min(1.0)


def rmse_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Root mean squared difference to the teacher's depth (student resized to the teacher's size)."""
    student = upsample_to(student, teacher.shape[-2:])
    return torch.sqrt(F.mse_loss(student, teacher.detach()) + 1e-12)


def upsample_to(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize (align_corners=False) to ``size`` = (H, W); identity when already there."""
    size = tuple(int(v) for v in size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def pool_for_pairwise(feat: torch.Tensor, scale: float = 0.5) -> torch.Tensor:
    """Max-pool with kernel = stride = ``int(H * scale), int(W * scale)`` and ceil mode (structured KD)."""
    height, width = feat.shape[-2:]
    kernel = (max(int(height * scale), 1), max(int(width * scale), 1))
    return F.max_pool2d(feat, kernel_size=kernel, stride=kernel, padding=0, ceil_mode=True)


def affinity(feat: torch.Tensor, detach_norm: bool = True) -> torch.Tensor:
    """(N, M, M) cosine affinities between the M spatial nodes of ``feat`` (N, C, h, w).

    Nodes are L2-normalised over channels; as in the reference code (Liu et al.,
    structure_knowledge_distillation ``L2``), the norm itself is detached by default.
    """
    feat = feat.float()
    norm = feat.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-8
    if detach_norm:
        norm = norm.detach()
    nodes = (feat / norm).flatten(2)  # N, C, M
    return torch.einsum("bcm,bcn->bmn", nodes, nodes)


def pairwise_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, pool_scale: float = 0.5, detach_norm: bool = True) -> torch.Tensor:
    """Structured KD pair-wise loss: mean over images of ``sum_ij (a^T_ij - a^S_ij)^2 / N^2``.

    Both maps are max-pooled to a small grid first (``pool_scale`` 0.5 -> 2 x 2 nodes); channel
    counts may differ, the node grids must match.
    """
    pooled_s = pool_for_pairwise(student_feat, pool_scale)
    pooled_t = pool_for_pairwise(teacher_feat.detach(), pool_scale)
    if pooled_s.shape[-2:] != pooled_t.shape[-2:]:
        pooled_s = F.adaptive_max_pool2d(pooled_s, pooled_t.shape[-2:])
    a_s = affinity(pooled_s, detach_norm)
    a_t = affinity(pooled_t, detach_norm)
    nodes = a_t.shape[-1]
    return ((a_t - a_s) ** 2).sum(dim=(1, 2)).mean() / (nodes * nodes)


def with_heads(
    loss: Callable[[torch.Tensor], torch.Tensor],
    depth: torch.Tensor,
    intermediates: Sequence[torch.Tensor],
    weights: Sequence[float] = HEAD_WEIGHTS,
) -> torch.Tensor:
    """``w0 L(final) + w1 L(ip1) + w2 L(ip2)``, each head upsampled to the final size first.

    A model without heads (or with heads disabled) gets ``L(final)`` alone.
    """
    if not intermediates:
        return loss(depth)
    if len(weights) != len(intermediates) + 1:
        raise ValueError(f"{len(intermediates)} heads need {len(intermediates) + 1} weights, got {len(weights)}")
    size = depth.shape[-2:]
    total = weights[0] * loss(depth)
    for weight, head in zip(weights[1:], intermediates):
        total = total + weight * loss(upsample_to(head, size))
    return total
