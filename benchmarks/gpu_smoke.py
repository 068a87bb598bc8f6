"""GPU smoke test (SPEC §9, issue 13): one CUDA GPU, about 1-3 minutes. Never run by the tests on a GPU.

    benchmarks/gpu_smoke.sh [--steps 300] [--batch 64]          (or .venv/bin/python benchmarks/gpu_smoke.py)
    benchmarks/gpu_smoke.sh --dry-run                          (no GPU: the same code on the CPU, tiny)

1. Throughput: ``--steps`` mixed-precision steps (the trainer's own choice: bf16 autocast where supported,
   else fp16 with GradScaler; channels_last) of the paper model with its intermediate heads at 224x448,
   batch ``--batch``, Adam, on 16 fixed random batches whose pairs follow a brightness ramp (so the loss
   must fall): images/s after the warm-up steps, peak GPU memory, the mean loss over the first and the
   last pass of the 16 batches, and the projected minutes of the paper's recipe (5 x 495K images).
2. Parity: 10 fp32 SGD steps (TF32 off) on the CPU and on the GPU from the same init and batches
   (batch 4): every step's loss, and the largest parameter difference as a fraction of how far the
   parameters moved. SGD, not Adam: Adam turns a 1e-9 gradient difference into an lr-sized step.
3. The project's own GPU path: ``mobiledepth.train.train`` with ``device=cuda`` (DataLoader workers,
   pinned memory, autocast, GradScaler) on a small generated DIW-format dataset, then its checkpoint
   loaded on the CPU and evaluated with ``device=cuda`` and on the CPU: the same WHDR.

Exit 0 when the loss fell, parity holds and the trainer's run checks out; 1 otherwise; 2 without a GPU.
``--dry-run`` (or ``GPU_SMOKE_DRY_RUN=1``) runs every part on the CPU at 64x96, batch 2, a few steps,
comparing the CPU with itself: it proves the script's code path, not a GPU (tests/train/test_gpu_smoke.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import torch

from mobiledepth.arch import build_model
from mobiledepth.compute.device import DeviceSettings, device_settings, place_model
from mobiledepth.train.losses import HEAD_WEIGHTS, ranking_loss, with_heads

PAPER_MODEL = "mdepth-mnv2-fbnet"
PAPER_RECIPE_IMAGES = 5 * 495_000  # SPEC §5: 5 epochs of DIW's training split


@dataclass(frozen=True)
class SmokeSettings:
    """What one smoke run does (the GPU defaults, or the tiny CPU dry run)."""

    device: str = "cuda"
    steps: int = 300
    batch: int = 64
    size: tuple[int, int] = (224, 448)
    warmup: int = 20
    lr: float = 1e-4
    parity_steps: int = 10
    parity_batch: int = 4
    train_steps: int = 30
    fixed_batches: int = 16  # the loss is compared over the first and the last pass over these
    dry_run: bool = False

    def check(self) -> None:
        """Enough steps for a warm-up and two passes over the fixed batches."""
        least = max(self.warmup + self.fixed_batches, 2 * self.fixed_batches)
        if self.steps < least:
            print(f"gpu_smoke: --steps must be at least {least}", file=sys.stderr)
            raise SystemExit(2)


def dry_run_settings() -> SmokeSettings:
    """The CPU stand-in: same code, tiny sizes, the CPU compared with itself."""
    return SmokeSettings(device="cpu", steps=8, batch=2, size=(64, 96), warmup=2, lr=1e-3, parity_steps=2,
                         parity_batch=2, train_steps=2, fixed_batches=4, dry_run=True)


def batches(count: int, batch: int, size: tuple[int, int], pairs: int = 16, seed: int = 0) -> list:
    """Random images with a horizontal brightness ramp; pairs say 'the brighter column is farther'."""
    g = torch.Generator().manual_seed(seed)
    height, width = size
    ramp = torch.linspace(0, 1, width).expand(height, width)
    out = []
    for _ in range(count):
        images = 0.5 * torch.rand(batch, 3, height, width, generator=g) + 0.5 * ramp
        ys = torch.randint(0, height, (batch, pairs, 2), generator=g)
        xs = torch.randint(0, width, (batch, pairs, 2), generator=g)
        points = torch.stack([ys[..., 0], xs[..., 0], ys[..., 1], xs[..., 1]], dim=-1)
        rel = torch.where(xs[..., 0] > xs[..., 1], 1.0, -1.0)  # A farther when it is to the right (brighter)
        out.append((images, points, rel))
    return out


def step(model, optimizer, scaler, settings: DeviceSettings, images, points, rel) -> float:
    """One training step as the trainer takes it: autocast forward, fp32 loss, scaled backward."""
    with settings.autocast():
        prediction = model.forward_train(images)
    loss = with_heads(lambda d: ranking_loss(d.float(), points, rel), prediction.depth.float(),
                      [head.float() for head in prediction.intermediates], HEAD_WEIGHTS)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _on_device(batch: tuple, settings: DeviceSettings) -> tuple:
    images, points, rel = (t.to(settings.device) for t in batch)
    if settings.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, points, rel


def throughput(smoke: SmokeSettings) -> dict:
    """Images/s, peak GPU memory and the loss over the first and the last pass of the fixed batches."""
    settings = device_settings(smoke.device, "auto")
    model = place_model(build_model(PAPER_MODEL, with_heads=True, seed=0).train(), settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=smoke.lr)
    scaler = settings.grad_scaler()
    data = [_on_device(b, settings) for b in batches(smoke.fixed_batches, smoke.batch, smoke.size)]
    if settings.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(settings.device)
    losses, start = [], time.perf_counter()
    for number in range(smoke.steps):
        if number == smoke.warmup:
            _sync(settings.device)
            start = time.perf_counter()
        losses.append(step(model, optimizer, scaler, settings, *data[number % smoke.fixed_batches]))
    _sync(settings.device)
    seconds = time.perf_counter() - start
    passes = smoke.fixed_batches  # each window is one pass over the same batches
    first, last = sum(losses[:passes]) / passes, sum(losses[-passes:]) / passes
    rate = (smoke.steps - smoke.warmup) * smoke.batch / seconds
    peak = torch.cuda.max_memory_allocated(settings.device) / 2**30 if settings.device.type == "cuda" else None
    return {"device": _device_name(settings.device), "precision": settings.precision,
            "channels_last": settings.channels_last, "images_s": rate, "peak_gpu_memory_gib": peak,
            "loss_first_pass": first, "loss_last_pass": last, "loss_fell": last < 0.9 * first,
            "paper_recipe_minutes": PAPER_RECIPE_IMAGES / rate / 60}


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _fp32_run(device: str, data: list, lr: float) -> tuple[list[float], dict, dict]:
    """Losses, final and initial parameters (on the CPU) of fp32 SGD steps on ``device``."""
    settings = device_settings(device, "fp32", channels_last=False)
    model = place_model(build_model(PAPER_MODEL, with_heads=True, seed=0).train(), settings)
    initial = {k: v.detach().cpu().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scaler = settings.grad_scaler()
    losses = [step(model, optimizer, scaler, settings, *_on_device(b, settings)) for b in data]
    return losses, {k: v.detach().cpu() for k, v in model.named_parameters()}, initial


def parity(smoke: SmokeSettings) -> dict:
    """fp32 CPU vs ``smoke.device`` over the same SGD steps: loss per step and parameters."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    data = batches(smoke.parity_steps, smoke.parity_batch, smoke.size, seed=1)
    cpu_losses, cpu_params, initial = _fp32_run("cpu", data, lr=1e-3)
    dev_losses, dev_params, _ = _fp32_run(smoke.device, data, lr=1e-3)
    moved = max(float((cpu_params[k] - initial[k]).abs().max()) for k in initial)
    worst = max(float((cpu_params[k] - dev_params[k]).abs().max()) for k in initial)
    loss_gap = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(cpu_losses, dev_losses))
    return {"parity_against": smoke.device, "parity_steps": smoke.parity_steps, "parity_max_param_diff": worst,
            "parity_max_param_moved": moved, "parity_max_loss_rel_diff": loss_gap,
            "parity_ok": moved > 0 and worst <= 1e-2 * moved and loss_gap <= 1e-3}


def trainer_path(smoke: SmokeSettings, workdir: str) -> dict:
    """The project's trainer and eval on ``smoke.device``: a short run, its checkpoint evaluated there and on the CPU."""
    from mobiledepth.data.synth import generate
    from mobiledepth.evaluate.evaluate import evaluate
    from mobiledepth.train.trainer import train

    size = (64, 128) if not smoke.dry_run else (64, 64)
    generate(workdir, 16, size, seed=3, split="train", pairs_per_image=8)
    generate(workdir, 8, size, seed=3, split="test")
    result = train({"model": PAPER_MODEL, "input_size": list(size), "batch_size": 4, "epochs": 100,
                    "max_steps": smoke.train_steps, "seed": 0, "log_every": 1, "data": {"workers": 2}},
                   data=workdir, out=os.path.join(workdir, "run"), device=smoke.device, precision="auto")
    record = json.loads((result.run_dir / "train.json").read_text())
    model = str(result.model_path)
    here = evaluate(model, workdir, split="test", device=smoke.device).whdr
    cpu = evaluate(model, workdir, split="test", device="cpu").whdr  # the checkpoint loads without the GPU
    counts_agree = abs(here.correct - cpu.correct) <= max(1, cpu.pairs // 50)  # fp32 vs fp32: a tie may flip
    return {"trainer_steps": result.steps, "trainer_device": record.get("device"),
            "trainer_precision": record.get("precision"), "eval_whdr_device": here.value, "eval_whdr_cpu": cpu.value,
            "trainer_ok": result.steps == smoke.train_steps and counts_agree}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=SmokeSettings.steps)
    parser.add_argument("--batch", type=int, default=SmokeSettings.batch)
    parser.add_argument("--dry-run", action="store_true", default=os.environ.get("GPU_SMOKE_DRY_RUN") == "1",
                        help="No GPU: run every part on the CPU at a tiny size (proves the code path only).")
    args = parser.parse_args(argv)
    if args.dry_run:
        smoke = dry_run_settings()
        print("gpu_smoke: DRY RUN on the CPU (64x96, batch 2): GPU-only parts (peak GPU memory, CPU-vs-GPU "
              "parity, the CUDA trainer) run against the CPU; the numbers say nothing about a GPU", file=sys.stderr)
    elif not torch.cuda.is_available():
        print("gpu_smoke: no CUDA GPU visible; run it on a machine with one (or --dry-run)", file=sys.stderr)
        return 2
    else:
        smoke = SmokeSettings(steps=args.steps, batch=args.batch)
    smoke.check()
    began = time.perf_counter()
    result = {"settings": {**asdict(smoke), "size": list(smoke.size)}, **throughput(smoke), **parity(smoke)}
    with tempfile.TemporaryDirectory(prefix="gpu_smoke_") as workdir:
        result.update(trainer_path(smoke, workdir))
    result["wall_s"] = time.perf_counter() - began
    print(json.dumps(result, indent=2))
    return 0 if result["loss_fell"] and result["parity_ok"] and result["trainer_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
