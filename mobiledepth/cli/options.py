"""Option parsing shared by commands (pure functions, no heavy imports)."""

from __future__ import annotations

import re

from mobiledepth.errors import UserError


def parse_input_size(text: str, multiple: int = 32) -> tuple[int, int]:
    """'256x256' / '224x448' / '256' -> (H, W), each a positive multiple of ``multiple``."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", text)
    if not match:
        raise UserError(f"input size '{text}' is not HxW; write it like 256x256 or 224x448")
    h = int(match.group(1))
    w = int(match.group(2) or h)
    if h <= 0 or w <= 0 or h % multiple or w % multiple:
        fix = "x".join(str(max(multiple, round(v / multiple) * multiple)) for v in (h, w))
        raise UserError(f"input size {h}x{w}: both sides must be multiples of {multiple} "
                        f"(the encoder downsamples by {multiple}); try {fix}")
    return h, w
