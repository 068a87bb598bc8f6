"""Image sizes as (H, W): one parser and one check for every stage and command."""

from __future__ import annotations

import re

from mobiledepth.errors import UserError

_HW = re.compile(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*")


def check_input_size(h: int, w: int, multiple: int = 32, minimum: int = 1) -> tuple[int, int]:
    """(H, W) when both sides are at least ``minimum`` and multiples of ``multiple``; else a UserError
    that names the closest valid size."""
    h, w = int(h), int(w)
    if h < minimum or w < minimum:
        raise UserError(f"size {h}x{w} is too small (at least {minimum}x{minimum})")
    if h <= 0 or w <= 0 or h % multiple or w % multiple:
        fix = "x".join(str(max(multiple, round(v / multiple) * multiple)) for v in (h, w))
        raise UserError(f"input size {h}x{w}: both sides must be multiples of {multiple} "
                        f"(the encoder downsamples by {multiple}); try {fix}")
    return h, w


def parse_input_size(text: str, multiple: int = 32, minimum: int = 1) -> tuple[int, int]:
    """'256x256' / '224x448' / '256' -> (H, W), checked by :func:`check_input_size`."""
    match = _HW.fullmatch(text)
    if not match:
        raise UserError(f"input size '{text}' is not HxW; write it like 256x256 or 224x448")
    return check_input_size(int(match.group(1)), int(match.group(2) or match.group(1)), multiple, minimum)
