"""GPU smoke test (SPEC §9): needs one CUDA GPU; about 2-4 minutes. Never run by the tests.

    .venv/bin/python benchmarks/gpu_smoke.py [--steps 300] [--batch 64]      (or benchmarks/gpu_smoke.sh)

1. ``--steps`` mixed-precision steps (the trainer's own choice: bf16 autocast where supported, else fp16
   with GradScaler; channels_last) of the paper model with its intermediate heads at 224x448, batch
   ``--batch``, on 16 fixed random batches whose pairs follow a depth ramp (so the loss must fall):
   prints images/s (after 20 warm-up steps), peak GPU memory, the loss at the start and the end.
2. Parity: 10 fp32 steps (TF32 off) on the CPU and on the GPU from the same init and batches (batch 4);
   prints the largest parameter difference. Exit 0 when the loss fell and parity holds, else 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from mobiledepth.arch import build_model
from mobiledepth.compute.device import device_settings, place_model
from mobiledepth.train.losses import ranking_loss, with_heads

HEADS = [0.5, 0.25, 0.25]


def batches(count: int, batch: int, size=(224, 448), pairs: int = 16, seed: int = 0) -> list:
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
        rel = torch.where(xs[..., 0] > xs[..., 1], 1.0, -1.0)
        out.append((images, points, rel))
    return out


def step(model, optimizer, scaler, settings, images, points, rel) -> float:
    with settings.autocast():
        prediction = model.forward_train(images)
        loss = with_heads(lambda d: ranking_loss(d.float(), points, rel), prediction.depth,
                          prediction.intermediates, HEADS)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


def throughput(steps: int, batch: int) -> dict:
    settings = device_settings("cuda", "auto")
    model = place_model(build_model("mdepth-mnv2-fbnet", with_heads=True, seed=0).train(), settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = settings.grad_scaler()
    data = [tuple(t.to(settings.device) for t in b) for b in batches(16, batch)]
    data = [(i.contiguous(memory_format=torch.channels_last), p, r) for i, p, r in data]
    torch.cuda.reset_peak_memory_stats()
    losses, start = [], None
    for number in range(steps):
        if number == 20:
            torch.cuda.synchronize()
            start = time.perf_counter()
        losses.append(step(model, optimizer, scaler, settings, *data[number % len(data)]))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    first, last = sum(losses[:16]) / 16, sum(losses[-16:]) / 16
    return {"gpu": torch.cuda.get_device_name(), "precision": settings.precision, "batch": batch, "steps": steps,
            "images_s": (steps - 20) * batch / seconds, "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
            "loss_first16": first, "loss_last16": last, "loss_fell": last < 0.9 * first}


def parity(steps: int = 10) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    data = batches(steps, 4, seed=1)
    finals = {}
    for name in ("cpu", "cuda"):
        settings = device_settings(name, "fp32", channels_last=False)
        model = place_model(build_model("mdepth-mnv2-fbnet", with_heads=True, seed=0).train(), settings)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        scaler = settings.grad_scaler()
        for images, points, rel in data:
            step(model, optimizer, scaler, settings, images.to(settings.device), points.to(settings.device),
                 rel.to(settings.device))
        finals[name] = {k: v.detach().cpu() for k, v in model.named_parameters()}
    worst = max(float((finals["cpu"][k] - finals["cuda"][k]).abs().max()) for k in finals["cpu"])
    return {"parity_steps": steps, "max_param_diff": worst, "parity_ok": worst < 1e-3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_smoke: no CUDA GPU visible; run it on a machine with one", file=sys.stderr)
        return 2
    result = {**throughput(args.steps, args.batch), **parity()}
    rate = result["images_s"]
    result["paper_recipe_minutes"] = 495_000 * 5 / rate / 60
    print(json.dumps(result, indent=2))
    return 0 if result["loss_fell"] and result["parity_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
