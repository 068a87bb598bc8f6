"""More than one process: torchrun + DistributedDataParallel (SPEC §9).

``torchrun --nproc-per-node N $(which mobiledepth) train ...`` starts N copies; each reads its
rank from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``)
and joins one process group (``nccl`` on CUDA, ``gloo`` on the CPU). Without those variables
everything here is a no-op for a single process.

How a global batch is shared: the seeded epoch order is cut into global batches of
``batch_size`` images (the same cut for any number of processes), and every global batch into
``world_size x accumulate`` contiguous parts (sizes differ by at most one; :func:`part_sizes`).
Rank r computes parts ``r*accumulate ...``; each part's loss is weighted by its share of the
global batch, so the averaged gradient is the gradient of the global batch's mean loss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from mobiledepth.errors import UserError


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: not distributed

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def world_from_env(env: dict | None = None) -> World:
    """The rank, world size and local rank torchrun put in the environment (a single process without them)."""
    env = os.environ if env is None else env
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", "0"))
    except ValueError:
        raise UserError("WORLD_SIZE / RANK / LOCAL_RANK are not integers; launch with torchrun "
                        "(see docs/train.md)") from None
    if size < 1 or not 0 <= rank < size:
        raise UserError(f"RANK {rank} is outside WORLD_SIZE {size}; launch with torchrun (see docs/train.md)")
    return World(rank, size, local_rank)


def join(world: World, device: torch.device) -> World:
    """Join the process group (nccl for CUDA, gloo otherwise); a single process joins nothing."""
    if not world.distributed:
        return world
    import torch.distributed as dist

    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:  # env:// rendezvous needs both; torchrun sets them (a hand-set WORLD_SIZE does not)
        raise UserError(f"WORLD_SIZE={world.size} but {' and '.join(missing)} not set; start every process with "
                        "torchrun (see docs/train.md), or unset WORLD_SIZE for one process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=world.rank, world_size=world.size)
    return World(world.rank, world.size, world.local_rank, backend)


def leave(world: World) -> None:
    """Leave the process group (after the last collective)."""
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def check_sharding(world: World, batch_size: int, accumulate: int, samples: int) -> None:
    """Refuse a world that cannot share the data: every part of a full global batch needs an image."""
    parts = world.size * accumulate
    if samples < world.size:
        raise UserError(f"{world.size} processes but only {samples} training image(s); "
                        f"use at most {samples} processes (torchrun --nproc-per-node)")
    if batch_size < parts:
        raise UserError(f"batch_size {batch_size} cannot be shared by {world.size} process(es) x accumulate "
                        f"{accumulate} = {parts} parts; use --batch-size {parts} or more")


def part_sizes(count: int, parts: int) -> list[int]:
    """Sizes of ``parts`` contiguous parts of ``count`` items, the first ones one larger (torch.tensor_split)."""
    base, extra = divmod(count, parts)
    return [base + (1 if p < extra else 0) for p in range(parts)]


def rank_slice(count: int, world: World, accumulate: int) -> tuple[int, int]:
    """``(start, stop)`` of this rank's parts inside a global batch of ``count`` images."""
    sizes = part_sizes(count, world.size * accumulate)
    first = world.rank * accumulate
    start = sum(sizes[:first])
    return start, start + sum(sizes[first : first + accumulate])


def all_sum(values: list[float], world: World, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over every rank (the values themselves for one process)."""
    if not world.distributed:
        return list(values)
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (Ctrl-C or a time budget stops all of them)."""
    return bool(all_sum([1.0 if flag else 0.0], world, device)[0] > 0)


def barrier(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` (SyncBatchNorm on CUDA, where PyTorch has it); else ``model``.

    On the CPU, BatchNorm statistics stay per process (PyTorch's SyncBatchNorm needs a GPU), so the
    batch statistics are those of each process's part, and the running statistics are rank 0's."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index], output_device=device.index)
    return DistributedDataParallel(model)
