"""Checkpoints: a dict of tensors and plain values, loaded with ``weights_only=True``."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch

from mobiledepth.errors import UserError
from mobiledepth.io import atomic_path

CHECKPOINT_FORMAT = "mobiledepth-checkpoint/1"
QAT_FORMAT = "mobiledepth-qat/1"  # meta["qat"] of a `mobiledepth train --qat` checkpoint (mobiledepth.train.qat)


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, spec: dict | None = None, **meta) -> Path:
    """Write ``{format, spec, state_dict, meta}`` atomically; ``meta`` holds plain values/tensors."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "spec": spec if spec is not None else getattr(model, "spec", None),
        "state_dict": model.state_dict(),
        "meta": meta,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw checkpoint dict; a bare state_dict is wrapped as ``{state_dict: ...}``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; check the path")
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol warnings are noise here
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle of arbitrary objects
        raise UserError(_unloadable_message(path, exc)) from None
    if isinstance(data, dict) and "state_dict" in data:
        return data
    if isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()):
        return {"format": "state_dict", "spec": None, "state_dict": data, "meta": {}}
    raise UserError(f"checkpoint {path} holds no state_dict; save model.state_dict() or use save_checkpoint")


def _unloadable_message(path: Path, exc: Exception) -> str:
    """One readable sentence for a checkpoint torch.load refused (torch's own text is pages long)."""
    text = str(exc)
    fix = "save the weights again with torch.save(model.state_dict(), ...) or use 'mobiledepth train'"
    blocked = re.search(r"GLOBAL ([\w.]+)", text)
    if blocked:
        reason = f"it holds Python objects that could run code ({blocked.group(1)})"
    elif isinstance(exc, EOFError) or "zip archive" in text or "central directory" in text:
        reason, fix = "it is empty, truncated or damaged", f"copy it again or {fix}"
    else:
        reason = "it is not a PyTorch checkpoint of tensors (corrupt, or other pickled data)"
    return f"checkpoint {path} cannot be loaded safely: {reason}; {fix}"


def load_state_dict_strict(model: torch.nn.Module, state_dict: dict, source: str, fresh_heads: bool = False,
                           fix: str | None = None) -> None:
    """Load weights, naming the first mismatching tensors when they do not fit the model.

    Weights of training-only heads present in the checkpoint are ignored when the model
    has no heads (an export); with ``fresh_heads``, a checkpoint without any head weights
    leaves the model's freshly initialised heads in place. ``fix`` replaces the generic advice
    of the error line (e.g. the model the checkpoint was trained as)."""
    own = model.state_dict()
    state_dict = {k: v for k, v in state_dict.items() if k in own or not k.startswith("heads.")}
    if fresh_heads and not any(k.startswith("heads.") for k in state_dict):
        own = {k: v for k, v in own.items() if not k.startswith("heads.")}
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    problems = []
    if wrong:
        problems.append("shape mismatch: " + "; ".join(wrong[:3]))
    if missing:
        problems.append("missing: " + ", ".join(missing[:3]))
    if unexpected:
        problems.append("unexpected: " + ", ".join(unexpected[:3]))
    if problems:
        total = len(wrong) + len(missing) + len(unexpected)
        raise UserError(f"checkpoint {source} does not fit the model ({total} tensors differ; "
                        + " | ".join(problems) + "); " + (fix or "pass the spec it was trained with (--model)"))
    model.load_state_dict(state_dict, strict=False)


def load_checkpoint(path: str | os.PathLike, spec: str | dict | None = None, with_heads: bool = True,
                    fresh_heads: bool = False):
    """Build the model of ``spec`` (or the one stored in the checkpoint) and load its weights.

    ``fresh_heads``: a checkpoint saved without heads (an export) still loads into a model with
    heads, which keep their fresh initialisation. Returns ``(model, spec, meta)``."""
    from mobiledepth.arch.resolve import ref_from_checkpoint
    from mobiledepth.arch.spec import build_model

    data = read_checkpoint(path)
    if spec is None:  # the stored spec (data only); a remembered factory is named in the error, never run
        spec = ref_from_checkpoint(data, path, None, "--model")
    model = build_model(spec, with_heads=with_heads)
    load_state_dict_strict(model, data["state_dict"], str(path), fresh_heads=fresh_heads)
    return model, model.spec, data.get("meta", {})


def read_qat(data: dict, source: str) -> tuple[dict, bytes] | None:
    """The QAT block and the quantised program's bytes (``torch.export`` format) of a checkpoint read with
    :func:`read_checkpoint`; None for an fp32 checkpoint. The program is tensors and an op graph, no pickle."""
    meta = data.get("meta") or {}
    qat, program = meta.get("qat"), meta.get("qat_program")
    if not qat:
        return None
    if qat.get("format") != QAT_FORMAT or not isinstance(program, torch.Tensor) or program.dtype != torch.uint8:
        raise UserError(f"checkpoint {source} has a damaged QAT block (not {QAT_FORMAT}, or no program); "
                        "run 'mobiledepth train --qat' again")
    return qat, program.numpy().tobytes()
