"""Geometry of the phase-split upsampling rewrite (torch-free: the latency tables use it too).

After a nearest x2 upsampling, output pixel (2i + a, 2j + b) of a KxK convolution with tap
offset (dy, dx) reads source pixel (i + floor((a + dy) / 2), j + floor((b + dx) / 2)). So the
convolution equals four convolutions of the low-resolution tensor, one per phase (a, b), with
kernels of radius ``phase_radius(K)`` whose taps are sums of the original taps.
"""

from __future__ import annotations

# (row phase, column phase) in DEPTH_TO_SPACE's DCR channel order: index = row * 2 + column
PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))


def phase_radius(kernel: int) -> int:
    """Radius of the per-phase kernel that replaces a ``kernel``-sized one after nearest x2 (3→1, 5→1, 7→2)."""
    return (kernel // 2 + 1) // 2


def phase_taps(kernel: int, phase: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(phase-kernel row, column, original-kernel row, column) for every original tap, in kernel indices."""
    p, q = kernel // 2, phase_radius(kernel)
    a, b = phase
    return [((a + dy) // 2 + q, (b + dx) // 2 + q, dy + p, dx + p)
            for dy in range(-p, p + 1) for dx in range(-p, p + 1)]
