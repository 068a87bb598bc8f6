"""Where training and evaluation run: the device, mixed precision, memory layout, compilation.

``--device auto|cpu|cuda|cuda:N|mps`` is resolved once, before any work, into a
:class:`DeviceSettings`; an accelerator that is not there is a one-line :class:`UserError`.
Mixed precision follows PyTorch's recipe (SPEC §9): ``bf16`` autocast needs no scaler, ``fp16``
autocast needs ``torch.amp.GradScaler``; ``auto`` is bf16 where the GPU supports it, fp16 on other
GPUs and fp32 on the CPU. Checkpoints are saved from CPU copies of the weights, so every
checkpoint loads on a machine without an accelerator.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

import torch

from mobiledepth.errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class DeviceSettings:
    """A resolved device and how to compute on it."""

    device: torch.device
    precision: str  # fp32, bf16 or fp16 (resolved, never 'auto')
    channels_last: bool
    compile: bool

    @property
    def accelerator(self) -> bool:
        return self.device.type != "cpu"

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """The forward pass's autocast context (a no-op in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, enabled only for fp16 (bf16 and fp32 need none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def describe(self) -> dict:
        return {"device": str(self.device), "precision": self.precision, "channels_last": self.channels_last,
                "compile": self.compile}


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | None, local_rank: int | None = None) -> torch.device:
    """``auto`` -> cuda (this rank's GPU under torchrun) when present, else mps, else cpu; others are checked."""
    name = (name or "auto").strip().lower()
    count = _cuda_count()
    if name == "auto":
        if count:
            return torch.device("cuda", (local_rank or 0) % count)
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise UserError("--device mps: no Apple GPU (MPS) is available here; use --device cpu or auto")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise UserError(f"unknown --device {name!r}; use one of {', '.join(DEVICE_CHOICES)}")
    if not count:
        raise UserError(f"--device {name}: no CUDA GPU is visible (torch {torch.__version__}, "
                        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                        "use --device cpu or auto")
    index = int(match.group(1)) if match.group(1) is not None else (local_rank or 0)
    if index >= count:
        raise UserError(f"--device {name}: only {count} CUDA GPU(s) visible (cuda:0..cuda:{count - 1}); "
                        "pick one of those or use --device cuda")
    return torch.device("cuda", index)


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """``auto`` -> bf16 on GPUs that support it, fp16 on other GPUs, fp32 elsewhere; fp16/bf16 on CPU refused."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise UserError(f"unknown --precision-mode {precision!r}; use one of {', '.join(PRECISIONS)}")
    if device.type == "cpu":
        if precision in ("auto", "fp32"):
            return "fp32"
        raise UserError(f"--precision-mode {precision} needs a GPU (mixed precision on the CPU is slower here); "
                        "use fp32 or --device cuda")
    if precision != "auto":
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError(f"--precision-mode bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp16" if device.type == "mps" else "fp32"


def device_settings(device: str | None = "auto", precision: str | None = "auto", channels_last: bool | None = None,
                    compile_model: bool = False, local_rank: int | None = None) -> DeviceSettings:
    """Resolve and check the whole device choice (``channels_last`` None: on for CUDA, off elsewhere)."""
    resolved = resolve_device(device, local_rank)
    if compile_model and not hasattr(torch, "compile"):
        raise UserError(f"--compile needs torch.compile (torch {torch.__version__} lacks it); drop --compile")
    layout = resolved.type == "cuda" if channels_last is None else bool(channels_last)
    return DeviceSettings(resolved, resolve_precision(precision, resolved), layout, bool(compile_model))


def place_model(model: torch.nn.Module, settings: DeviceSettings) -> torch.nn.Module:
    """Move the model to the device (and to channels_last memory when asked); the same object is returned."""
    model.to(settings.device)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def to_device(batch: dict, settings: DeviceSettings) -> dict:
    """A collated batch on the device (images in channels_last when asked; non-blocking from pinned memory)."""
    if not settings.accelerator and not settings.channels_last:
        return batch
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(settings.device, non_blocking=settings.pin_memory)
            if key == "image" and settings.channels_last:
                value = value.contiguous(memory_format=torch.channels_last)
        moved[key] = value
    return moved


def cpu_state_dict(model: torch.nn.Module) -> dict:
    """The weights as contiguous CPU tensors (what a device-independent checkpoint holds)."""
    return {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
