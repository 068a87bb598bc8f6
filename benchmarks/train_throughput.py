"""Training throughput on this machine: the data path per worker, the paper model's training steps,
and the projected wall time of the paper's DIW recipe (SPEC §5, §9).

    .venv/bin/python benchmarks/train_throughput.py [--images 256] [--steps 6] [--json out.json]

1. Data path: DIW-like JPEGs (500x333, quality 90, a third grayscale) decoded + resized to 224x448
   and collated by the trainer's own DataLoader (``mobiledepth.train.loader``) with 0, 1 and 2 workers
   (items carry uint8 images, as in the trainer; once more with float32 items, the earlier data path);
   images/s over one pass (median of ``--repeats`` passes), and the 1 -> 2 worker scaling. Beside the
   wall-clock rate, the CPU seconds the passes cost (this process + its reaped workers): images per
   CPU second is what one worker does on a core of its own, the figure that survives a shared machine.
2. Training: images/s of the paper model (mdepth-mnv2-fbnet, intermediate heads, batch 4, 224x448,
   fp32, this CPU), median over ``--steps`` steps after one warm-up step (and per CPU second).
3. Projection: 5 epochs x 495K images at that rate, and at given GPU rates (--gpu-images-s).
The load average at the start and the end is printed with the numbers.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

DIW_TRAIN_IMAGES = 495_000
EPOCHS = 5


def make_jpegs(root: Path, n: int, seed: int = 0) -> list:
    """``n`` DIW-sized JPEG ``.thumb`` files with one pair each, as DiwData samples."""
    import numpy as np
    from PIL import Image

    from mobiledepth.data.diw import OrdinalPair, Sample

    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        base = rng.integers(0, 255, (333 // 8 + 1, 500 // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((500, 333), Image.BILINEAR)  # smooth, photo-like content
        if i % 3 == 0:
            image = image.convert("L")
        path = root / f"{i:06d}.thumb"
        image.save(path, format="JPEG", quality=90)
        samples.append(Sample(path.name, path, [OrdinalPair(10, 20, 200, 300, 1, 500, 333)], 2 * i + 1))
    return samples


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have been reaped."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def data_path_rate(samples, workers: int, repeats: int, uint8: bool = True) -> dict:
    """Images/s of one pass of the trainer's DataLoader over ``samples`` (median of ``repeats`` passes), and
    images per CPU second over all passes (the loader's workers are shut down, so their CPU time is counted)."""
    from mobiledepth.compute.distributed import World
    from mobiledepth.data.dataset import DiwDataset
    from mobiledepth.data.diw import DiwData
    from mobiledepth.train.loader import EpochBatches, LoaderSettings, make_loader

    data = DiwData(Path("."), Path("bench.csv"), samples, report=None)
    dataset = DiwDataset(data, (224, 448), draft=True, uint8=uint8)  # uint8: what the trainer's loader carries
    batches = EpochBatches(len(dataset), 4, seed=0, world=World())
    cpu0 = cpu_seconds()
    loader = make_loader(dataset, batches, LoaderSettings(workers=workers, prefetch=4))
    for _ in zip(range(2), loader):  # start the workers
        pass
    rates, images = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = sum(len(batch["index"]) for batch in loader)
        rates.append(count / (time.perf_counter() - start))
        images += count
    del loader
    gc.collect()  # shuts the persistent workers down and reaps them (their CPU time joins RUSAGE_CHILDREN)
    return {"images_s": statistics.median(rates), "images_per_cpu_s": images / (cpu_seconds() - cpu0)}


def train_rate(steps: int, threads: int | None) -> dict:
    """Images/s of the paper model's training step (batch 4, 224x448, heads on, fp32, this CPU)."""
    import torch

    from mobiledepth.arch import build_model
    from mobiledepth.train.losses import ranking_loss, with_heads

    if threads:
        torch.set_num_threads(threads)
    model = build_model("mdepth-mnv2-fbnet", with_heads=True, seed=0).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.rand(4, 3, 224, 448)
    points = torch.tensor([[[10, 20, 200, 300]]] * 4)
    rel = torch.ones(4, 1)
    times, cpu = [], []
    for step in range(steps + 1):
        start, cpu0 = time.perf_counter(), time.process_time()
        prediction = model.forward_train(images)
        loss = with_heads(lambda d: ranking_loss(d, points, rel), prediction.depth, prediction.intermediates,
                          [0.5, 0.25, 0.25])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu0)
    return {"images_s": 4 / statistics.median(times), "cpu_s_per_image": statistics.median(cpu) / 4,
            "threads": torch.get_num_threads()}


def hours(images_per_s: float) -> float:
    return DIW_TRAIN_IMAGES * EPOCHS / images_per_s / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--gpu-images-s", type=float, nargs="*", default=[],
                        help="measured GPU training rates to project (e.g. from benchmarks/gpu_smoke.sh)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        samples = make_jpegs(Path(tmp), args.images)
        data = {f"workers_{w}": data_path_rate(samples, w, args.repeats) for w in (0, 1, 2)}
        data["workers_1_float_items"] = data_path_rate(samples, 1, args.repeats, uint8=False)  # before uint8 items
    data["scaling_1_to_2"] = data["workers_2"]["images_s"] / (2 * data["workers_1"]["images_s"])
    training = train_rate(args.steps, args.threads)
    rate = training["images_s"]
    result = {"cpus": os.cpu_count(), "load_average_before": load_before, "data_path": data,
              "train_cpu": training, "paper_recipe_hours_cpu": hours(rate),
              "paper_recipe_hours_cpu_one_core_of_its_own": hours(1 / training["cpu_s_per_image"]),
              "paper_recipe_hours_gpu": {str(r): hours(r) for r in args.gpu_images_s},
              "load_average_after": os.getloadavg()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
