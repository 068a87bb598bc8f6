"""Resolve what to export: a zoo name, a spec YAML, or a user's ``module:factory``.

The factory contract (docs/export.md): ``factory()`` takes no arguments and returns a
``torch.nn.Module`` whose ``forward(x)`` takes RGB float32 in [0, 1], NCHW, and returns the
depth map ``(N, 1, H, W)`` — or a tuple/list whose first element is the depth map, or a dict
whose ``"depth"`` entry is. Every other output is training-only and is dropped. A module
with a ``strip_heads()`` method has it called before export, so training-only layers are
removed from the weights as well as from the graph.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass, field

from mobiledepth.errors import UserError
from mobiledepth.io import sha256_file, sha256_json

FACTORY_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass
class ModelSource:
    """A model ready to export, with what identifies it."""

    model: object                       # torch.nn.Module, heads stripped, eval mode
    name: str
    kind: str                           # "zoo" | "yaml" | "spec" (a dict, e.g. from a checkpoint) | "factory"
    spec: dict | None
    spec_hash: str
    default_input_size: tuple[int, int] = (256, 256)
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    seed: int | None = None             # the seed of the random weights (None: weights from a checkpoint)
    notes: list[str] = field(default_factory=list)


def is_factory_ref(ref: str) -> bool:
    """True for ``package.module:callable`` (and not a Windows drive path)."""
    return bool(FACTORY_REF.match(ref)) and not os.path.exists(ref)


def load_factory(ref: str):
    """Import ``module:factory`` (the current directory is importable) and call it."""
    module_name, attr = ref.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or an error raised while importing the user's module
        raise UserError(f"cannot import '{module_name}' for --model {ref} ({type(exc).__name__}: {exc}); "
                        "check the module is on PYTHONPATH or in the current directory") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"'{module_name}' has no callable '{attr}'; --model must be module:factory")
    import torch

    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise UserError(f"{ref}() returned {type(model).__name__}, not a torch.nn.Module; see docs/export.md for the contract")
    return model


def architecture_fingerprint(model) -> str:
    """Hash of parameter names and shapes: identifies a factory model's architecture."""
    return sha256_json([(k, list(v.shape)) for k, v in model.state_dict().items()])


def load_model_source(ref: str | dict | None = None, checkpoint: str | os.PathLike | None = None,
                      seed: int = 0) -> ModelSource:
    """Build the model behind ``ref`` (default: the checkpoint's spec, else the paper's), load ``checkpoint``,
    strip the training-only heads and switch to eval mode. Without a checkpoint the random weights
    come from ``seed`` (a factory is called with torch's RNG seeded), so the same export is the same bytes."""
    from mobiledepth.arch.checkpoint import load_state_dict_strict, read_checkpoint
    from mobiledepth.arch.spec import DEFAULT_MODEL, build_model, resolve_spec, spec_from_record, spec_hash

    ckpt_data = read_checkpoint(checkpoint) if checkpoint else None
    if ref is None:  # a checkpoint knows its spec (data only, never a factory); otherwise the paper's model
        stored = (ckpt_data or {}).get("spec")
        ref = spec_from_record(stored, f"checkpoint {checkpoint}") if stored is not None else DEFAULT_MODEL
    seed_used = None if ckpt_data is not None else int(seed)
    if isinstance(ref, str) and is_factory_ref(ref):
        model = _seeded(load_factory, seed_used, ref)
        if hasattr(model, "strip_heads"):
            model.strip_heads()
        spec, kind, name = None, "factory", ref
        default_size = tuple(getattr(model, "input_size", (256, 256)))
    else:
        spec = resolve_spec(ref)
        kind = "yaml" if str(ref).endswith((".yaml", ".yml")) else ("spec" if isinstance(ref, dict) else "zoo")
        name = spec["name"]
        model = build_model(spec, with_heads=False, seed=seed_used)
        trained_size = ((ckpt_data or {}).get("meta") or {}).get("input_size")
        default_size = tuple(spec.get("input_size") or trained_size or (256, 256))
    if ckpt_data is not None:
        load_state_dict_strict(model, ckpt_data["state_dict"], str(checkpoint))
    model.eval()
    fingerprint = spec_hash(spec) if spec is not None else architecture_fingerprint(model)
    return ModelSource(
        model=model, name=name, kind=kind, spec=spec, spec_hash=fingerprint,
        default_input_size=default_size,
        checkpoint=str(checkpoint) if checkpoint else None,
        checkpoint_sha256=sha256_file(checkpoint) if checkpoint else None, seed=seed_used,
    )


def _seeded(make, seed: int | None, *args):
    """``make(*args)`` with torch's global RNG seeded (and restored afterwards); unseeded for None."""
    if seed is None:
        return make(*args)
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make(*args)


def deploy_module(model):
    """Wrap a model so that ``forward`` returns only the depth map (the factory contract)."""
    import torch

    class DepthOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            out = self.inner(x)
            if isinstance(out, dict):
                out = out["depth"]
            elif isinstance(out, (tuple, list)):
                out = out[0]
            return out

    return DepthOnly(model).eval()
