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


def visible_gpus(env: dict | None = None) -> list[str]:
    """The ids of the CUDA GPUs this process sees, as ``CUDA_VISIBLE_DEVICES`` names them (0, 1, ... without it).

    A child process given one of them in its own ``CUDA_VISIBLE_DEVICES`` sees that GPU as ``cuda:0``."""
    env = os.environ if env is None else env
    count = _cuda_count()
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(index) for index in range(count)]
    return [gpu.strip() for gpu in listed.split(",") if gpu.strip()][:count]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | None, local_rank: int | None = None, flag: str = "--device") -> torch.device:
    """``auto`` -> cuda (this rank's GPU under torchrun) when present, else mps, else cpu; others are checked
    (``flag``: the option named in the error line, e.g. prune's ``--train-device``)."""
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
            raise UserError(f"{flag} mps: no Apple GPU (MPS) is available here; use {flag} cpu or auto")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise UserError(f"unknown {flag} {name!r}; use one of {', '.join(DEVICE_CHOICES)}")
    if not count:
        raise UserError(f"{flag} {name}: no CUDA GPU is visible (torch {torch.__version__}, "
                        f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                        f"use {flag} cpu or auto")
    index = int(match.group(1)) if match.group(1) is not None else (local_rank or 0)
    if index >= count:
        raise UserError(f"{flag} {name}: only {count} CUDA GPU(s) visible (cuda:0..cuda:{count - 1}); "
                        f"pick one of those or use {flag} cuda")
    return torch.device("cuda", index)


def resolve_precision(precision: str | None, device: torch.device, flag: str = "--device") -> str:
    """``auto`` -> bf16 on GPUs that support it, fp16 on other GPUs, fp32 elsewhere; fp16/bf16 on CPU refused."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise UserError(f"unknown --precision-mode {precision!r}; use one of {', '.join(PRECISIONS)}")
    if device.type == "cpu":
        if precision in ("auto", "fp32"):
            return "fp32"
        raise UserError(f"--precision-mode {precision} needs a GPU (mixed precision on the CPU is slower here); "
                        f"use fp32 or {flag} cuda")
    if precision != "auto":
        if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError(f"--precision-mode bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp16" if device.type == "mps" else "fp32"


def device_settings(device: str | None = "auto", precision: str | None = "auto", channels_last: bool | None = None,
                    compile_model: bool = False, local_rank: int | None = None, flag: str = "--device") -> DeviceSettings:
    """Resolve and check the whole device choice (``channels_last`` None: on for CUDA, off elsewhere;
    ``flag``: the option the error lines name)."""
    resolved = resolve_device(device, local_rank, flag)
    if compile_model and not hasattr(torch, "compile"):
        raise UserError(f"--compile needs torch.compile (torch {torch.__version__} lacks it); drop --compile")
    layout = resolved.type == "cuda" if channels_last is None else bool(channels_last)
    return DeviceSettings(resolved, resolve_precision(precision, resolved, flag), layout, bool(compile_model))


def place_model(model: torch.nn.Module, settings: DeviceSettings) -> torch.nn.Module:
    """Move the model to the device (and to channels_last memory when asked); the same object is returned."""
    model.to(settings.device)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """A batch's images as float32 in [0, 1]: uint8 ones divided by 255 (bit for bit what the dataset's float
    items hold), float ones as they are."""
    return images.to(torch.float32) / 255.0 if images.dtype == torch.uint8 else images


def to_device(batch: dict, settings: DeviceSettings) -> dict:
    """A collated batch on the device: uint8 images moved as bytes and made float32 in [0, 1] there, in
    channels_last when asked; non-blocking from pinned memory."""
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and settings.accelerator:
            value = value.to(settings.device, non_blocking=settings.pin_memory)
        if key == "image":
            value = images_to_float(value)
            if settings.channels_last:
                value = value.contiguous(memory_format=torch.channels_last)
        moved[key] = value
    return moved


def cpu_state_dict(model: torch.nn.Module) -> dict:
    """The weights as contiguous CPU tensors (what a device-independent checkpoint holds)."""
    return {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
