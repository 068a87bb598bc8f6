"""The training data path: a seeded, resumable batch order fed through ``torch.utils.data.DataLoader``.

The order of epoch e is ``randperm(seed, e)`` for any number of processes and workers; a step's
global batch is the next ``batch_size`` indices of it, and this process takes its parts of that
batch (:func:`mobiledepth.compute.distributed.rank_slice`). Worker processes decode and resize
the images (JPEGs at reduced scale with ``PIL.Image.draft``), ``prefetch`` batches ahead each;
the DataLoader keeps the batch order, so the result does not depend on the worker count.
"""

from __future__ import annotations

import math
import os
import signal
from dataclasses import dataclass

import torch

from mobiledepth.compute.distributed import World, rank_slice


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The sample order of an epoch: a function of (seed, epoch) only, so resume can replay it."""
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=generator).tolist()


def default_workers(accelerator: bool, local_world_size: int = 1) -> int:
    """Data workers when none are asked for: on an accelerator, the CPUs this process may use (at most 8,
    one left for the main process); on the CPU none, since the model's own threads need the cores."""
    if not accelerator:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cpus // max(1, local_world_size) - 1))


class EpochBatches:
    """A batch sampler over one epoch from a given step: yields this rank's indices of each global batch.

    A rank whose parts of a (last, short) global batch are empty gets the batch's first index, for a
    forward pass whose loss is weighted 0 (every rank must take part in each gradient exchange)."""

    def __init__(self, n: int, batch_size: int, seed: int, world: World, accumulate: int = 1) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.world, self.accumulate = world, accumulate
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Replay epoch ``epoch`` from its step ``start_step`` (in-epoch, 0-based) on the next iteration."""
        self.epoch, self.start_step = int(epoch), int(start_step)

    def global_count(self, in_epoch: int) -> int:
        """Images in the global batch of in-epoch step ``in_epoch``."""
        return min(self.batch_size, self.n - in_epoch * self.batch_size)

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_step

    def __iter__(self):
        order = epoch_order(self.n, self.seed, self.epoch)
        for in_epoch in range(self.start_step, self.steps_per_epoch):
            chosen = order[in_epoch * self.batch_size : (in_epoch + 1) * self.batch_size]
            start, stop = rank_slice(len(chosen), self.world, self.accumulate)
            yield chosen[start:stop] if stop > start else chosen[:1]


@dataclass(frozen=True)
class LoaderSettings:
    workers: int = 0
    prefetch: int = 2
    pin_memory: bool = False


def _worker_init(_worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process, which saves a checkpoint and stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset, batches: EpochBatches, settings: LoaderSettings):
    """A DataLoader over ``batches`` (re-iterated every epoch; its workers persist across epochs)."""
    from torch.utils.data import DataLoader

    from mobiledepth.data.dataset import collate

    extra = {}
    if settings.workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": max(1, settings.prefetch),
                 "worker_init_fn": _worker_init}
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=settings.workers,
                      pin_memory=settings.pin_memory, **extra)
