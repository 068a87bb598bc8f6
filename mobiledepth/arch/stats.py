"""Parameter and MAC counts (MACs from torch's own FlopCounterMode: FLOPs / 2).

``model_stats`` caches both per spec hash and input size, so listing the zoo does not have
to import torch once the numbers are known.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def count_parameters(model, include_heads: bool = False) -> int:
    """Trainable parameters; the training-only heads are excluded unless asked for."""
    return sum(p.numel() for name, p in model.named_parameters()
               if include_heads or not name.startswith("heads."))


def count_macs(model, input_size: tuple[int, int]) -> int:
    """Multiply-accumulates of one deployed forward pass (no heads) at ``input_size`` (H, W)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, *input_size))
    model.train(was_training)
    return counter.get_total_flops() // 2


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mobiledepth" / "model_stats.json"


def model_stats(spec: dict, input_size: tuple[int, int]) -> dict:
    """``{"params", "params_with_heads", "macs"}`` for a spec at an input size (cached)."""
    from mobiledepth.arch.spec import build_model, spec_hash
    from mobiledepth.io import write_json_atomic

    key = f"{spec_hash(spec)}:{len(spec['architecture'].get('heads', []))}:{input_size[0]}x{input_size[1]}"
    path = _cache_file()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        model = build_model(spec)
        cache[key] = {"params": count_parameters(model),
                      "params_with_heads": count_parameters(model, include_heads=True),
                      "macs": count_macs(model, input_size)}
        try:
            write_json_atomic(path, cache)
        except OSError:
            pass  # a read-only home only costs speed
    return cache[key]
