"""The one ``--model`` resolver: every command that takes a model turns what the user named into a module here.

A reference is a zoo name, a spec YAML, a spec dict, the user's own ``module:factory``, or a
checkpoint (``.pt`` / ``.pth``, whose spec is a spec dict or a zoo name). ``export``, ``eval``,
``train`` (student and teacher) and the argument parsing of ``lut`` / ``prune`` call
:func:`resolve_model`; nothing else imports user code.

The factory contract (docs/export.md, docs/train.md): ``factory()`` takes no arguments and
returns a ``torch.nn.Module`` whose ``forward(x)`` takes RGB float32 in [0, 1], NCHW, and
returns the depth map ``(N, 1, H, W)`` — or a tuple/list whose first element is the depth map,
or a dict whose ``"depth"`` entry is. Training reads intermediate depth heads from the same
output: the further tuple/list elements that are ``(N, 1, h, w)`` tensors, or a dict's
``"heads"`` list. A module with ``strip_heads()`` has it called when heads are not wanted.

Files are data: a checkpoint trained from a factory remembers the reference *as given on the
command line* (meta ``factory``), and that reference is never imported from the file alone —
the user passes ``--model`` again (:func:`spec_from_record` refuses code named by a file).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mobiledepth.errors import UserError
from mobiledepth.io import sha256_file, sha256_json

FACTORY_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
CHECKPOINT_SUFFIXES = (".pt", ".pth")
FALLBACK_INPUT_SIZE = (256, 256)


@dataclass
class ResolvedModel:
    """A model built from what the user named, with what identifies it."""

    model: object                        # torch.nn.Module
    name: str                            # the zoo/spec name, or the factory reference as given
    kind: str                            # "zoo" | "yaml" | "spec" (a dict, e.g. from a checkpoint) | "factory"
    spec: dict | None                    # None for a factory model
    spec_hash: str                       # the spec's hash, or a factory model's parameter fingerprint
    factory: str | None = None           # the ``module:factory`` reference as given (what a checkpoint remembers)
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    seed: int | None = None              # the seed of random weights (None: from a checkpoint, or the global RNG)
    meta: dict = field(default_factory=dict)   # the checkpoint's meta (input_size, steps, ...)
    declared_size: tuple[int, int] | None = None  # the spec's input_size, or a factory model's ``input_size``
    notes: list[str] = field(default_factory=list)

    @property
    def trained_size(self) -> tuple[int, int] | None:
        """The input size the checkpoint was trained at, if it says."""
        size = self.meta.get("input_size")
        return tuple(int(v) for v in size) if size else None

    @property
    def default_input_size(self) -> tuple[int, int]:
        """Export's default: the declared size, else the trained one, else 256x256."""
        return self.declared_size or self.trained_size or FALLBACK_INPUT_SIZE

    def checkpoint_meta(self) -> dict:
        """What a checkpoint of this model must remember to be loaded again (the factory reference, as data,
        and a pruned factory model's channel-group widths)."""
        if not self.factory:
            return {}
        return {"factory": self.factory, **({"widths": self.meta["widths"]} if self.meta.get("widths") else {})}


def is_factory_ref(ref) -> bool:
    """True for ``package.module:callable`` (and not an existing path, e.g. a Windows drive path)."""
    return isinstance(ref, str) and bool(FACTORY_REF.match(ref)) and not os.path.exists(ref)


def is_checkpoint_ref(ref) -> bool:
    """True for a ``.pt`` / ``.pth`` path (existing or not: a missing one gets its own error)."""
    return isinstance(ref, (str, os.PathLike)) and Path(ref).suffix.lower() in CHECKPOINT_SUFFIXES


def load_factory(ref: str):
    """Import ``module:factory`` (the current directory is importable) and call it; the module it returns."""
    module_name, attr = ref.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or an error raised while importing the user's module
        raise UserError(f"cannot import '{module_name}' for --model {ref} ({type(exc).__name__}: {_first_line(exc)}); "
                        "check the module is on PYTHONPATH or in the current directory") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"'{module_name}' has no callable '{attr}'; --model must be module:factory")
    import torch

    try:
        model = factory()
    except Exception as exc:
        raise UserError(f"{ref}() failed ({type(exc).__name__}: {_first_line(exc)}); it must build the model "
                        "with no arguments (see docs/export.md)") from None
    if not isinstance(model, torch.nn.Module):
        raise UserError(f"{ref}() returned {type(model).__name__}, not a torch.nn.Module; see docs/export.md for the contract")
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def architecture_fingerprint(model) -> str:
    """Hash of parameter names and shapes: identifies a factory model's architecture."""
    return sha256_json([(k, list(v.shape)) for k, v in model.state_dict().items()])


def seeded(make, seed: int | None, *args):
    """``make(*args)`` with torch's global RNG seeded (and restored afterwards); unseeded for None."""
    if seed is None:
        return make(*args)
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return make(*args)


def resolve_model(ref=None, checkpoint: str | os.PathLike | None = None, *, seed: int | None = 0,
                  with_heads: bool = False, fresh_heads: bool = False, default: str | None = None,
                  option: str = "--model") -> ResolvedModel:
    """Build the model behind ``ref`` and load ``checkpoint`` into it (strictly).

    ``ref`` may itself be a checkpoint path; without ``ref`` the checkpoint's stored spec is used
    (a spec dict or a zoo name — never code), else ``default``. A checkpoint that remembers a
    factory tells the user, in one line, to pass that factory with ``option``. Without a
    checkpoint the random weights come from ``seed`` (None: the global RNG as it stands).
    ``with_heads``: keep the training-only heads (a factory's ``strip_heads()`` is called otherwise)."""
    from mobiledepth.arch.checkpoint import read_checkpoint

    ref, checkpoint = _split_checkpoint_ref(ref, checkpoint, option)
    ckpt = read_checkpoint(checkpoint) if checkpoint is not None else None
    if ref is None:
        ref = ref_from_checkpoint(ckpt, checkpoint, default, option) if ckpt is not None else default
        if ref is None:
            raise UserError(f"no model given; pass {option} (a zoo name, a spec YAML or module:factory)")
    seed_used = None if ckpt is not None else seed
    resolved = _build(ref, seed_used, with_heads)
    if ckpt is not None:
        _shape_to_widths(resolved, ckpt, checkpoint, option)
        _load_weights(resolved, ckpt, checkpoint, fresh_heads, option)
    return resolved


def _shape_to_widths(resolved: ResolvedModel, ckpt: dict, path, option: str) -> None:
    """A pruned factory checkpoint stores the factory's channel-group widths (data): the fresh ``factory()``
    model is cut to them (Torch-Pruning's graph, :func:`mobiledepth.arch.graph.rebuild`) before its weights load."""
    meta = ckpt.get("meta") or {}
    widths = meta.get("widths")
    if not widths:
        return
    trained_as = meta.get("factory") if isinstance(meta.get("factory"), str) else "its factory"
    if resolved.kind != "factory" or not isinstance(widths, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in widths.items()):
        raise UserError(f"checkpoint {path} holds a pruned model of {trained_as} (channel-group widths), which "
                        f"{resolved.name} cannot take; pass {option} {trained_as}")
    from mobiledepth.arch.graph import rebuild

    try:
        rebuild(resolved.model, widths, resolved.declared_size)
    except UserError as exc:
        raise UserError(f"checkpoint {path} was pruned from {trained_as}: its channel groups do not fit "
                        f"{resolved.name} ({str(exc).split(';')[0]}); pass {option} {trained_as}") from None


def _split_checkpoint_ref(ref, checkpoint, option: str):
    """A ``.pt`` named as the model is the checkpoint (and the model is its stored spec)."""
    if not is_checkpoint_ref(ref):
        return ref, checkpoint
    if checkpoint is not None:
        raise UserError(f"{option} {ref} is a checkpoint and {weights_option(option)} {checkpoint} another; pass the "
                        f"model with {option} and the weights with {weights_option(option)}")
    return None, ref


def weights_option(option: str) -> str:
    """The flag that gives weights for the model named by ``option`` (``--teacher`` has its own)."""
    return "--teacher-checkpoint" if option == "--teacher" else "--checkpoint"


def ref_from_checkpoint(ckpt: dict, path, default: str | None, option: str):
    """The model a checkpoint names as data: its spec dict or zoo name; a factory only as a hint to the user."""
    from mobiledepth.arch.spec import spec_from_record

    stored = ckpt.get("spec")
    if stored is not None:
        return spec_from_record(stored, f"checkpoint {path}")
    factory = (ckpt.get("meta") or {}).get("factory")
    if factory is not None:
        if isinstance(factory, str) and FACTORY_REF.match(factory):
            raise UserError(f"checkpoint {path} was trained from the factory {factory}, which a file may not run; "
                            f"pass {option} {factory} {weights_option(option)} {path} to load it")
        spec_from_record(factory, f"checkpoint {path}")  # refuses it, in the files-are-data wording
    if default is None:
        raise UserError(f"checkpoint {path} stores no spec; pass {option} with the spec it was trained with")
    return default


def _build(ref, seed: int | None, with_heads: bool) -> ResolvedModel:
    """A fresh model (random weights) from a factory, a zoo name, a spec YAML or a spec dict."""
    from mobiledepth.arch.spec import build_model, resolve_spec, spec_hash

    if is_factory_ref(ref):
        model = seeded(load_factory, seed, ref)
        if not with_heads and hasattr(model, "strip_heads"):
            model.strip_heads()
        size = getattr(model, "input_size", None)
        return ResolvedModel(model=model, name=ref, kind="factory", spec=None,
                             spec_hash=architecture_fingerprint(model), factory=ref, seed=seed,
                             declared_size=tuple(int(v) for v in size) if size else None)
    spec = resolve_spec(ref)
    kind = "spec" if isinstance(ref, dict) else ("yaml" if str(ref).endswith((".yaml", ".yml")) else "zoo")
    model = build_model(spec, with_heads=with_heads, seed=seed)
    size = spec.get("input_size")
    return ResolvedModel(model=model, name=spec["name"], kind=kind, spec=spec, spec_hash=spec_hash(spec), seed=seed,
                         declared_size=tuple(int(v) for v in size) if size else None)


def _load_weights(resolved: ResolvedModel, ckpt: dict, path, fresh_heads: bool, option: str) -> None:
    """Load the checkpoint strictly; when it does not fit, name the model it was trained as."""
    from mobiledepth.arch.checkpoint import load_state_dict_strict

    meta = ckpt.get("meta") or {}
    stored = ckpt.get("spec")
    trained_as = meta.get("factory") if isinstance(meta.get("factory"), str) else None
    if trained_as is None and isinstance(stored, (dict, str)):
        trained_as = stored.get("name") if isinstance(stored, dict) else stored
    fix = (f"it was trained as {trained_as}: pass {option} {trained_as}"
           if trained_as and trained_as != resolved.name else None)
    load_state_dict_strict(resolved.model, ckpt["state_dict"], str(path), fresh_heads=fresh_heads, fix=fix)
    resolved.checkpoint, resolved.checkpoint_sha256 = str(path), sha256_file(path)
    resolved.meta, resolved.seed = dict(meta), None


# ----------------------------------------------------------------------------- the output contract
def split_output(out):
    """``(depth, heads)`` of a model's output per the contract; ``(None, [])`` when it holds no depth map."""
    import torch

    if isinstance(out, torch.Tensor):
        return out, []
    if isinstance(out, dict):
        heads = out.get("heads") or []
        return out.get("depth"), [h for h in heads if _is_map(h)] if isinstance(heads, (list, tuple)) else []
    if isinstance(out, (tuple, list)) and out:
        return out[0], [h for h in out[1:] if _is_map(h)]
    return None, []


def _is_map(value) -> bool:
    """A one-channel 4-D tensor: an intermediate depth head."""
    import torch

    return isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[1] == 1


def depth_of(out):
    """The depth map of a model's output (tensor, tuple/list first element, or dict ``"depth"``); traceable."""
    if isinstance(out, dict):
        return out["depth"]
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def deploy_module(model):
    """Wrap a model so that ``forward`` returns only the depth map (the factory contract)."""
    import torch

    class DepthOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return depth_of(self.inner(x))

    return DepthOnly(model).eval()


def check_depth_output(model, size: tuple[int, int], name: str) -> int:
    """Run ``model`` once (eval mode, no gradients) on a ``(1, 3, H, W)`` image and check it returns a depth
    map of that size; a one-line UserError otherwise. Returns how many intermediate heads it returns."""
    import torch

    height, width = (int(v) for v in size)
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise UserError(f"{name} fails on a (1, 3, {height}, {width}) image ({type(exc).__name__}: {_first_line(exc)}); "
                        "check the input size (--input-size) and docs/export.md for the contract") from None
    finally:
        model.train(was_training)
    depth, heads = split_output(out)
    shape = tuple(depth.shape) if isinstance(depth, torch.Tensor) else None
    if shape != (1, 1, height, width):
        raise UserError(f"{name} returns {_describe(out)} for a (1, 3, {height}, {width}) image, not a depth map "
                        f"(1, 1, {height}, {width}); return the depth map, a tuple whose first element it is, or a "
                        "dict with 'depth' (docs/export.md)")
    return len(heads)


def _describe(out) -> str:
    """A short description of a model output for an error line."""
    import torch

    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, dict):
        return f"a dict with keys {sorted(map(str, out))[:5]}" + (
            f" whose 'depth' is {_describe(out['depth'])}" if "depth" in out else "")
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)}" + (f" whose first element is {_describe(out[0])}" if out else "")
    return f"a {type(out).__name__}"
