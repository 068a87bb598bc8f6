"""Evaluate a depth model on a DIW-format dataset: WHDR for torch, ONNX and TFLite alike.

Images are resized (bilinear) to the model's input size, the model predicts relative depth,
and each prediction is read at the annotated points of the *original* image size (see
:mod:`mobiledepth.evaluate.whdr`). The same loop runs every backend: a backend is only a
callable ``runtime(images_nchw_float01) -> (N, 1, h, w)``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mobiledepth.data.diw import DiwData, load_dataset
from mobiledepth.errors import UserError
from mobiledepth.evaluate.whdr import WhdrResult, evaluate_runtime  # noqa: F401 - evaluate_runtime re-exported
from mobiledepth.export.runtimes import TorchRuntime
from mobiledepth.progress import ProgressFn
from mobiledepth.records import new_record, read_export_record

BACKENDS = ("torch", "onnx", "tflite")
DEFAULT_INPUT_SIZE = (224, 448)  # SPEC §5, DIW training input
DEFAULT_SEED = 0  # the seed of a zoo model's random weights when none is given
_SUFFIX_BACKEND = {".pt": "torch", ".pth": "torch", ".onnx": "onnx", ".tflite": "tflite"}


def torch_runtime(model, input_size: tuple[int, int], device: str | None = None):
    """An in-memory torch module as a runtime (the export stage's ``TorchRuntime``); on ``device`` when given
    (``auto|cpu|cuda|cuda:N|mps``, checked before any work; fp32, predictions come back to the CPU)."""
    if device is None or device == "cpu":
        return TorchRuntime(model, tuple(input_size))
    from mobiledepth.compute.device import resolve_device
    from mobiledepth.compute.distributed import world_from_env

    where = resolve_device(device, world_from_env().local_rank)
    if where.type == "cpu":
        return TorchRuntime(model, tuple(input_size))
    return DeviceTorchRuntime(model.to(where), tuple(input_size), where)


class DeviceTorchRuntime(TorchRuntime):
    """TorchRuntime on an accelerator: images go to the device, predictions come back to the CPU."""

    def __init__(self, model, input_size: tuple[int, int], device) -> None:
        super().__init__(model, input_size)
        self.device = device

    def _run(self, images):
        import torch

        with torch.no_grad():
            x = torch.from_numpy(images).to(self.device, non_blocking=True)
            return self.model(x).float().cpu().numpy().astype(np.float32)


@dataclass
class EvalResult:
    """What an evaluation measured and on what; ``record()`` is the store's eval record."""

    whdr: WhdrResult
    backend: str
    dataset: dict
    model_path: str | None = None
    model_name: str | None = None
    artifact_sha256: str | None = None
    precision: str | None = None
    input_size: tuple[int, int] | None = None
    depth_like: bool = True
    random_weights: bool = False  # a zoo name or spec without a checkpoint: freshly initialised weights
    seed: int | None = None  # the seed of those weights (None for a checkpoint or a file)
    seconds: float = 0.0
    world_size: int = 1  # processes that shared the images (torchrun); the counts are their sum
    per_image_correct: list[int] = field(default_factory=list, repr=False)
    stored: Path | None = None  # the store the record went into (None: not recorded)

    @property
    def value(self) -> float:
        return self.whdr.value

    def record(self) -> dict:
        """The eval record of the team contract (kind 'eval', schema 1)."""
        return {
            **new_record("eval"),
            "model_path": self.model_path,
            "artifact_sha256": self.artifact_sha256,
            "model_name": self.model_name,
            "backend": self.backend,
            "precision": self.precision,
            "dataset": self.dataset,
            "metric": "whdr",
            "value": self.whdr.value,
            "correct": self.whdr.correct,
            "pairs": self.whdr.pairs,
            "input_size": [int(v) for v in self.input_size] if self.input_size else None,
            "depth_like": self.depth_like,
            "random_weights": self.random_weights,
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "world_size": self.world_size,
        }

    def write(self, path: str | os.PathLike) -> Path:
        """Write the record as JSON atomically."""
        from mobiledepth.io import write_json_atomic

        return write_json_atomic(path, self.record())


def evaluate_module(
    model, data: DiwData, input_size: tuple[int, int], batch_size: int = 8, depth_like: bool = True
) -> WhdrResult:
    """WHDR of an in-memory torch module (used by training and benchmarks)."""
    was_training = model.training
    result, _ = evaluate_runtime(torch_runtime(model, input_size), data, input_size, batch_size, depth_like)
    model.train(was_training)
    return result


def infer_backend(model: str) -> str:
    """Backend from the file suffix; a zoo name (no such file) is torch."""
    suffix = Path(model).suffix.lower()
    if suffix in _SUFFIX_BACKEND:
        return _SUFFIX_BACKEND[suffix]
    return "torch"


def open_runtime(model: str | None, backend: str | None = None, input_size: tuple[int, int] | None = None,
                 seed: int | None = None, device: str | None = None, checkpoint: str | None = None):
    """A runtime for a zoo name / spec YAML / ``module:factory`` / checkpoint (torch) or an ONNX / TFLite file.

    A model without a checkpoint gets random weights drawn with ``seed`` (default 0), so its WHDR repeats;
    ``checkpoint`` loads weights into the model named (or, without ``model``, into the one it stores).
    Returns ``(runtime, info)`` with info keys model_path, model_name, artifact_sha256, precision,
    random_weights, seed.
    """
    if model is None or checkpoint is not None:  # torch weights (the resolver names what is missing)
        if backend not in (None, "torch"):
            raise UserError(f"--checkpoint holds torch weights, not {backend}; drop --backend or --checkpoint")
        backend = "torch"
    backend = backend or infer_backend(model)
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    path = Path(model or str(checkpoint))
    expected = infer_backend(str(path)) if path.suffix.lower() in _SUFFIX_BACKEND else "torch"
    if expected != backend:
        raise UserError(f"{model} is a {expected} model, not {backend}; pass --backend {expected}")
    info = {"model_path": None, "model_name": None, "artifact_sha256": None, "precision": None,
            "random_weights": False, "seed": None}
    if backend == "torch":
        return _open_torch(model, input_size, info, seed, device, checkpoint)
    _refuse_seed(seed, model)
    if device not in (None, "cpu", "auto"):
        raise UserError(f"--device {device} runs torch models; {backend or path.suffix} files run on the CPU "
                        "(drop --device)")
    if not path.is_file():
        raise UserError(f"model file {model} does not exist; check the path")
    from mobiledepth.io import sha256_file

    try:
        from mobiledepth.export.runtimes import load_runtime
    except ImportError:
        raise UserError("the ONNX/TFLite runtimes (mobiledepth.export.runtimes) are not available in this install") from None
    runtime = load_runtime(path)
    info.update(model_path=str(path), artifact_sha256=sha256_file(path))
    info["precision"] = getattr(runtime, "precision", None) or _precision_from_export_record(path)
    if backend == "onnx" and info["precision"] is None:
        info["precision"] = "fp32"
    if input_size is not None and tuple(input_size) != tuple(runtime.input_size):
        raise UserError(
            f"{path.name} has a fixed input size {tuple(runtime.input_size)}; drop --input-size or re-export"
        )
    return runtime, info


def _refuse_seed(seed: int | None, model: str) -> None:
    if seed is not None:
        raise UserError(f"--seed sets the random weights of a zoo model, but {model} has trained weights; drop --seed")


def _open_torch(model: str | None, input_size, info: dict, seed: int | None = None, device: str | None = None,
                checkpoint: str | None = None):
    """The torch runtime of a model named through the one resolver (:mod:`mobiledepth.arch.resolve`)."""
    from mobiledepth.arch.resolve import check_depth_output, deploy_module, resolve_model

    if model is not None and Path(model).is_file() and Path(model).suffix.lower() not in (".yaml", ".yml"):
        if checkpoint is not None:
            raise UserError(f"--model {model} is a checkpoint and --checkpoint {checkpoint} another; pass the model "
                            "with --model and the weights with --checkpoint")
        model, checkpoint = None, model  # a checkpoint named as the model: its stored spec is the model
    if checkpoint is not None:
        _refuse_seed(seed, checkpoint)
    source = resolve_model(model, checkpoint, seed=DEFAULT_SEED if seed is None else int(seed), with_heads=False)
    size = tuple(int(v) for v in (input_size or source.trained_size or source.declared_size or DEFAULT_INPUT_SIZE))
    if size[0] % 32 or size[1] % 32:
        raise UserError(f"input size {size[0]}x{size[1]} must be a multiple of 32 in both dimensions")
    if source.kind == "factory":
        check_depth_output(source.model, size, f"--model {source.name}")
    info.update(model_name=source.name, precision="fp32", random_weights=source.checkpoint is None,
                seed=source.seed, model_path=source.checkpoint, artifact_sha256=source.checkpoint_sha256)
    return torch_runtime(deploy_module(source.model), size, device), info


def _precision_from_export_record(path: Path) -> str | None:
    """The precision an ``export.json`` beside the artifact lists for it, if there is one."""
    record_path = path.parent / "export.json"
    if not record_path.is_file():
        return None
    try:
        record = read_export_record(record_path)
    except UserError:
        return None
    for artifact in record.data["artifacts"]:
        if Path(str(artifact.get("path", ""))).name == path.name:
            return artifact.get("precision")
    return None


@dataclass
class EvalSetup:
    """An evaluation checked and ready to run: the opened model, the decoded dataset, where the record goes."""

    runtime: Callable[[np.ndarray], np.ndarray]
    info: dict
    dataset: DiwData
    batch_size: int = 8
    depth_like: bool = True
    limit: int | None = None
    out: str | os.PathLike | None = None
    store: object = False  # a store path, None for the default store, False for nowhere


def prepare_evaluation(
    model: str,
    data: str | os.PathLike,
    backend: str | None = None,
    split: str | None = "test",
    batch_size: int = 8,
    input_size: tuple[int, int] | None = None,
    depth_like: bool = True,
    skip_bad: bool = False,
    limit: int | None = None,
    out: str | os.PathLike | None = None,
    seed: int | None = None,
    store=False,
    device: str | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> EvalSetup:
    """Check every input before the first image is evaluated: ``out`` and ``store`` are writable, the
    model opens, every annotation is valid and every image decodes (``skip_bad`` drops bad ones and
    counts them in ``dataset.skipped_images`` / ``skipped_pairs``)."""
    from mobiledepth.io import check_writable
    from mobiledepth.store import check_store_choice

    if out is not None:
        check_writable(out, "--out")
    check_store_choice(store)
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    runtime, info = open_runtime(model, backend, input_size, seed, device,
                                 str(checkpoint) if checkpoint is not None else None)
    dataset = load_dataset(data, split=_split_for(data, split), skip_bad=skip_bad, limit=limit)
    return EvalSetup(runtime, info, dataset, batch_size, depth_like, limit, out, store)


def run_evaluation(setup: EvalSetup, progress: ProgressFn | None = None) -> EvalResult:
    """Evaluate a prepared setup; writes the eval record to ``setup.out`` when given and into its store."""
    from mobiledepth.store import record_in_store

    from mobiledepth.evaluate.whdr import shard
    from mobiledepth.compute import distributed as dist_

    runtime, dataset = setup.runtime, setup.dataset
    world = dist_.join(dist_.world_from_env(), torch_device("cpu"))  # a sharded run reduces on the CPU (gloo)
    start = time.perf_counter()
    try:
        result, mine = evaluate_runtime(runtime, shard(dataset, world.rank, world.size), tuple(runtime.input_size),
                                        setup.batch_size, setup.depth_like, progress if world.is_main else None)
        result, per_image = _reduce_shards(result, mine, world)
    finally:
        dist_.leave(world)
    outcome = EvalResult(
        whdr=result,
        backend=runtime.backend,
        dataset=dataset.describe() | ({"limit": setup.limit} if setup.limit is not None else {}),
        input_size=tuple(runtime.input_size),
        depth_like=setup.depth_like,
        seconds=time.perf_counter() - start,
        per_image_correct=per_image,
        world_size=world.size,
        **setup.info,
    )
    if not world.is_main:  # rank 0 writes the record and stores it
        return outcome
    if setup.out is not None:
        outcome.write(setup.out)
    outcome.stored = record_in_store(outcome.record(), setup.store)
    return outcome


def torch_device(name: str):
    import torch

    return torch.device(name)


def _reduce_shards(result: WhdrResult, mine: list[int], world) -> tuple[WhdrResult, list[int]]:
    """Sum the counts of every rank's shard (exact), and put the per-image counts back in dataset order."""
    if not world.distributed:
        return result, mine
    import torch.distributed as dist

    shards: list = [None] * world.size
    dist.all_gather_object(shards, (result.correct, result.pairs, mine))
    per_image = [0] * sum(len(s[2]) for s in shards)
    for rank, (_, _, counts) in enumerate(shards):
        per_image[rank :: world.size] = counts
    return WhdrResult(sum(s[0] for s in shards), sum(s[1] for s in shards)), per_image


def evaluate(model: str | None, data: str | os.PathLike, progress: ProgressFn | None = None,
             **options) -> EvalResult:
    """WHDR of ``model`` (zoo name, spec YAML, ``module:factory``, checkpoint, .onnx or .tflite) on ``data``.

    ``options`` are :func:`prepare_evaluation`'s (backend, split, batch_size, input_size, depth_like,
    skip_bad, limit, out, seed, store, device, checkpoint): every input is checked first, then the
    eval record goes to ``out`` and into ``store`` (a path, None for the default store, False for nowhere)."""
    return run_evaluation(prepare_evaluation(model, data, **options), progress)


def _split_for(data, split: str | None) -> str | None:
    """Use ``split`` only for a directory holding several CSVs; a CSV path is taken as given."""
    path = Path(data)
    return None if path.is_file() else split
