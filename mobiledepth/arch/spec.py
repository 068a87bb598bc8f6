"""Model specs as data: the registry of named variants in ``models/*.yaml`` and the factory.

A spec is a plain dict (YAML): ``name``, ``architecture`` (encoder, decoder, heads — with
per-layer widths, so a pruned model is just another spec), optional ``input_size`` and a
model ``card`` with the paper's reported figures.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from mobiledepth.errors import UserError
from mobiledepth.io import sha256_json

DEFAULT_MODEL = "mdepth-mnv2-fbnet"
_REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


def model_dirs() -> list[Path]:
    """Where named specs are looked up: ``$MOBILEDEPTH_MODELS`` (os.pathsep-separated) then ``models/``."""
    extra = [Path(p) for p in os.environ.get("MOBILEDEPTH_MODELS", "").split(os.pathsep) if p]
    return [*extra, _REPO_MODELS]


@lru_cache(maxsize=None)
def _load_yaml(path: str, mtime: float) -> dict:
    import yaml

    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise UserError(f"spec {path} is not valid YAML ({str(exc).splitlines()[0]}); fix the file") from None
    except UnicodeDecodeError:
        raise UserError(f"spec {path} is not UTF-8 text; fix the file or move it out of the models folder") from None
    if not isinstance(data, dict) or "architecture" not in data:
        raise UserError(f"spec {path} has no 'architecture' section; see docs/models.md for the format")
    data.setdefault("name", Path(path).stem)
    return data


def load_spec_file(path: str | os.PathLike) -> dict:
    """Read one spec YAML file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"spec file {path} does not exist; pass a model name (see 'mobiledepth models') or a YAML path")
    return copy.deepcopy(_load_yaml(str(path), path.stat().st_mtime))


def registry() -> dict[str, Path]:
    """Named variants: spec name -> YAML path (earlier directories win)."""
    found: dict[str, Path] = {}
    for directory in model_dirs():
        for path in sorted(directory.glob("*.y*ml")):
            if path.is_file():
                found.setdefault(path.stem, path)
    return found


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered variants matching a glob pattern, e.g. ``*pruned*``."""
    return [name for name in registry() if fnmatch.fnmatch(name, pattern)]


def resolve_spec(ref: str | os.PathLike | dict) -> dict:
    """A spec from a registry name, a YAML path or a dict (validated, deep-copied)."""
    if isinstance(ref, dict):
        spec = copy.deepcopy(ref)
    elif str(ref).endswith((".yaml", ".yml")) or os.sep in str(ref):
        spec = load_spec_file(ref)
    else:
        names = registry()
        if str(ref) not in names:
            close = difflib.get_close_matches(str(ref), list(names), n=1, cutoff=0.4)
            hint = f"did you mean '{close[0]}'?" if close else "see 'mobiledepth models' for the list"
            raise UserError(f"unknown model '{ref}': {hint}")
        spec = load_spec_file(names[str(ref)])
    validate_spec(spec)
    return spec


def spec_from_record(value: Any, source: str) -> dict:
    """The spec stored in a file (checkpoint, run config, lookup table, store record).

    A file is data, never code: only a spec dict or a zoo name is accepted. A ``module:factory``
    reference or a path found in a file is refused; only the user's own ``--model`` may name one."""
    if isinstance(value, dict):
        spec = copy.deepcopy(value)
        validate_spec(spec)
        return spec
    if isinstance(value, str) and value in registry():
        return resolve_spec(value)
    shown = repr(value)[:80]
    raise UserError(f"{source} names its model as {shown}, which is neither a spec nor a zoo model; a file may not "
                    "name code to run: pass the model yourself with --model")


def validate_spec(spec: dict) -> None:
    """Reject a spec whose architecture section is malformed, with the field named."""
    arch = spec.get("architecture")
    if not isinstance(arch, dict):
        raise UserError(f"spec '{spec.get('name')}' needs an 'architecture' mapping")
    for part, kinds in (("encoder", ("mobilenetv2", "mobilenetv1")), ("decoder", ("fbnet", "nnconv5"))):
        kind = (arch.get(part) or {}).get("type")
        if kind not in kinds:
            raise UserError(f"spec '{spec.get('name')}': architecture.{part}.type must be one of {', '.join(kinds)}, got {kind!r}")


def spec_hash(spec: dict) -> str:
    """Hash of what determines the deployed network (encoder + decoder; not heads or card)."""
    arch = spec["architecture"]
    return sha256_json({"encoder": arch["encoder"], "decoder": arch["decoder"]})


def build_model(ref: str | os.PathLike | dict, with_heads: bool = True, seed: int | None = None):
    """Build a DepthNet from a registry name, YAML path or spec dict (random init).

    ``seed`` makes the random weights reproducible (the same seed, the same weights) without
    touching the caller's global torch RNG; ``None`` draws from the global RNG as it stands."""
    if seed is not None:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return build_model(ref, with_heads)
    from mobiledepth.arch.decoders import build_decoder
    from mobiledepth.arch.depthnet import DepthNet
    from mobiledepth.arch.encoders import build_encoder
    from mobiledepth.arch.init import init_weights
    from mobiledepth.arch.plan import network_plan

    spec = resolve_spec(ref)
    plan = network_plan(spec)
    try:
        encoder, decoder = build_encoder(plan.encoder), build_decoder(plan.decoder)
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"spec '{spec.get('name')}' is inconsistent: {exc}") from None
    model = DepthNet(encoder, decoder, plan.head_stages if with_heads else [])
    init_weights(model)
    model.spec = spec
    return model
