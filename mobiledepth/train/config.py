"""Training configuration: the paper's DIW recipe as defaults, overridable by YAML and flags.

A config is a plain nested dict (what is saved as ``config.yaml`` in the run directory);
:func:`resolve_config` merges a user YAML over :data:`DEFAULTS` and rejects unknown keys
with the closest valid name.
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any

from mobiledepth.errors import UserError

# SPEC §5, DIW: batch 4, Adam, lr 1e-4 halved every epoch, 5 epochs, input 224x448.
DEFAULTS: dict[str, Any] = {
    "model": "mdepth-mnv2-fbnet",  # zoo name, spec YAML, checkpoint, or your own module:factory (docs/train.md)
    "init_checkpoint": None,  # weights to start from, for the model named by 'model' (e.g. a factory's checkpoint)
    "teacher": None,  # zoo name, spec YAML, checkpoint or module:factory; enables the distillation terms
    "teacher_checkpoint": None,  # the teacher's weights, for the 'teacher' named (e.g. a checkpoint of your factory's model)
    "seed": 0,
    "input_size": [224, 448],
    "batch_size": 4,
    "epochs": 5,
    "max_steps": None,  # stop after this many optimizer steps in total (None: run all epochs)
    "max_minutes": None,  # stop (with a checkpoint) after this much training time
    "optimizer": {"name": "adam", "lr": 1.0e-4, "weight_decay": 0.0, "momentum": 0.9},
    "scheduler": {"name": "step", "step_epochs": 1, "gamma": 0.5},
    "data": {"train_split": "train", "val_split": "test", "skip_bad": False, "cache_images": True,
             "val_limit": 500,
             "workers": None,  # DataLoader workers (None: from the CPU count on accelerators, 0 on the CPU)
             "prefetch": 2},  # batches each worker decodes ahead
    # where it runs (docs/train.md): auto = this rank's CUDA GPU when present, else mps, else cpu
    "device": "auto",
    "precision": "auto",  # fp32 | bf16 | fp16 (GradScaler) | auto: bf16/fp16 on GPUs, fp32 on the CPU
    "channels_last": None,  # None: on for CUDA
    "compile": False,  # torch.compile the student
    "accumulate": 1,  # parts each process splits its share of a global batch into (gradients accumulated)
    "loss": {
        "ranking": True,
        "intermediate": True,  # 0.5 final + 0.25 + 0.25 intermediate heads
        "head_weights": [0.5, 0.25, 0.25],
        "rmse": True,  # to the teacher's depth (only with a teacher)
        "pairwise": True,  # structured KD on features (only with a teacher)
        "pool_scale": 0.5,
        "student_tap": "features",  # 'features' (penultimate decoder map) or a submodule name
        "teacher_tap": "features",
        "weights": None,  # fixed weights per term; None = equal (1/K), as the rebalancer starts
    },
    "rebalance": {"enabled": False, "per_epoch": 5, "order": "fast-first", "lambda_start": 3.0,
                  "lambda_step": -1.5},
    "checkpoint": {"every_steps": 500},
    "log_every": 10,
    "threads": None,  # torch.set_num_threads (None: torch's default)
    # `train --qat` (mobiledepth.train.qat): int8 quantisation-aware fine-tuning of a trained checkpoint
    "qat": {"enabled": False, "min_images": 16, "calibration_images": 32, "freeze_observers": 0.5, "distill": True},
}


def _merge(base: dict, override: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key not in base:
            close = difflib.get_close_matches(key, list(base), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"unknown config key '{where}{key}'{hint} (see docs/train.md)")
        if isinstance(base[key], dict) and isinstance(value, dict):
            out[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping, with a one-line error for a missing or malformed file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"config {path} does not exist; pass a YAML file (see docs/train.md)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config {path} is not valid YAML ({str(exc).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of settings, not {type(data).__name__}")
    return data


def resolve_config(config: str | os.PathLike | dict | None = None, **overrides) -> dict:
    """DEFAULTS <- YAML file or dict <- non-None keyword overrides (dotted keys allowed: 'loss.rmse')."""
    user = load_yaml(config) if isinstance(config, (str, os.PathLike)) else (config or {})
    merged = _merge(DEFAULTS, user)
    for key, value in overrides.items():
        if value is None:
            continue
        parts = key.replace("__", ".").split(".")
        patch: dict = value
        for part in reversed(parts):
            patch = {part: patch}
        merged = _merge(merged, patch)
    check_config(merged)
    return merged


def check_config(cfg: dict) -> None:
    """Reject impossible values before any work starts."""
    size = cfg["input_size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(int(v) % 32 == 0 and int(v) > 0 for v in size)):
        raise UserError(f"input_size {size} must be [H, W], both positive multiples of 32 (e.g. [224, 448])")
    for key in ("batch_size", "epochs"):
        if int(cfg[key]) < 1:
            raise UserError(f"{key} must be at least 1, got {cfg[key]}")
    if cfg["optimizer"]["name"] not in ("adam", "sgd"):
        raise UserError(f"optimizer.name {cfg['optimizer']['name']!r} is not supported; use adam or sgd")
    if cfg["scheduler"]["name"] not in ("step", "none"):
        raise UserError(f"scheduler.name {cfg['scheduler']['name']!r} is not supported; use step or none")
    if cfg["rebalance"]["order"] not in ("fast-first", "slow-first"):
        raise UserError(f"rebalance.order must be fast-first or slow-first, got {cfg['rebalance']['order']!r}")
    if int(cfg["accumulate"]) < 1:
        raise UserError(f"accumulate must be at least 1, got {cfg['accumulate']}")
    if cfg["data"]["workers"] is not None and int(cfg["data"]["workers"]) < 0:
        raise UserError(f"--workers must be 0 or more, got {cfg['data']['workers']}")
    if cfg["max_steps"] is not None and int(cfg["max_steps"]) < 1:
        raise UserError(f"max_steps must be at least 1, got {cfg['max_steps']}")
    if not cfg["loss"]["ranking"] and not (cfg["teacher"] and (cfg["loss"]["rmse"] or cfg["loss"]["pairwise"])):
        raise UserError("no loss term is enabled; enable loss.ranking or give a teacher for distillation")


def loss_terms(cfg: dict) -> list[str]:
    """The active loss terms, in the order they are logged."""
    loss = cfg["loss"]
    terms = []
    if cfg["teacher_checkpoint"] and not cfg["teacher"]:
        raise UserError("--teacher-checkpoint needs --teacher naming the model it holds weights for")
    if cfg["teacher"] and loss["pairwise"]:
        terms.append("pairwise")
    if cfg["teacher"] and loss["rmse"]:
        terms.append("rmse")
    if loss["ranking"]:
        terms.append("ranking")
    return terms


def dump_yaml(cfg: dict) -> str:
    import yaml

    return yaml.safe_dump(cfg, sort_keys=False)
