"""Training throughput on this machine: the data path per worker, the paper model's training steps,
and the projected wall time of the paper's DIW recipe (SPEC §5, §9).

    .venv/bin/python benchmarks/train_throughput.py [--images 256] [--steps 6] [--json out.json]

1. Data path: DIW-like JPEGs (500x333, quality 90, a third grayscale) decoded + resized to 224x448
   and collated by the trainer's own DataLoader (``mobiledepth.train.loader``) with 0, 1 and 2 workers;
   images/s over one pass (median of ``--repeats`` passes), and the 1 -> 2 worker scaling.
2. Training: images/s of the paper model (mdepth-mnv2-fbnet, intermediate heads, batch 4, 224x448,
   fp32, this CPU), median over ``--steps`` steps after one warm-up step.
3. Projection: 5 epochs x 495K images at that rate, and at given GPU rates (--gpu-images-s).
"""

from __future__ import annotations

import argparse
import json
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


def data_path_rate(samples, workers: int, repeats: int) -> float:
    """Images/s of one pass of the trainer's DataLoader over ``samples`` (median of ``repeats`` passes)."""
    from mobiledepth.compute.distributed import World
    from mobiledepth.data.dataset import DiwDataset
    from mobiledepth.data.diw import DiwData
    from mobiledepth.train.loader import EpochBatches, LoaderSettings, make_loader

    data = DiwData(Path("."), Path("bench.csv"), samples, report=None)
    dataset = DiwDataset(data, (224, 448), draft=True)
    batches = EpochBatches(len(dataset), 4, seed=0, world=World())
    loader = make_loader(dataset, batches, LoaderSettings(workers=workers, prefetch=4))
    for _ in zip(range(2), loader):  # start the workers
        pass
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = sum(len(batch["index"]) for batch in loader)
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def train_rate(steps: int, threads: int | None) -> float:
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
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        prediction = model.forward_train(images)
        loss = with_heads(lambda d: ranking_loss(d, points, rel), prediction.depth, prediction.intermediates,
                          [0.5, 0.25, 0.25])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:
            times.append(time.perf_counter() - start)
    return 4 / statistics.median(times)


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
    with tempfile.TemporaryDirectory() as tmp:
        samples = make_jpegs(Path(tmp), args.images)
        data = {f"workers_{w}": data_path_rate(samples, w, args.repeats) for w in (0, 1, 2)}
    data["scaling_1_to_2"] = data["workers_2"] / (2 * data["workers_1"])
    rate = train_rate(args.steps, args.threads)
    result = {"data_path_images_s": data, "train_images_s_cpu": rate, "paper_recipe_hours_cpu": hours(rate),
              "paper_recipe_hours_gpu": {str(r): hours(r) for r in args.gpu_images_s}}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
