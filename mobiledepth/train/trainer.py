"""The training loop: ranking loss, intermediate heads, distillation and loss rebalancing.

Run directory (``out``)::

    config.yaml            the resolved config (defaults <- YAML <- flags), plus the data path
    metrics.jsonl          one JSON object per logged step / rebalance / epoch
    checkpoints/last.pt    model + optimizer + scheduler + rebalancer + RNG (resume point)
    checkpoints/epoch_K.pt after each epoch; every ``checkpoint.every_steps`` last.pt is refreshed
    model.pt               the final weights (a plain checkpoint for eval/export)
    train.json             a summary record (kind 'train')

Determinism: the data order of epoch e is ``randperm(seed, e)``, the model init uses the
seed, and the resume point stores every piece of state, so an interrupted and resumed run
ends with the same weights as an uninterrupted one (bit for bit on CPU, same thread count).

Scale (docs/train.md): the device, mixed precision and layout come from :mod:`.device`, the
batches from a DataLoader with workers (:mod:`.loader`), and under ``torchrun`` every process
trains its parts of each global batch through DistributedDataParallel (:mod:`.distributed`);
rank 0 alone writes the run directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
import torch

from mobiledepth.errors import UserError
from mobiledepth.progress import Progress, ProgressFn, silent
from mobiledepth.train.config import dump_yaml, load_yaml, loss_terms, resolve_config
from mobiledepth.compute import distributed as dist_
from mobiledepth.compute.device import DeviceSettings, device_settings, place_model, to_device
from mobiledepth.train.distill import Teacher, check_tap, forward_with_tap, has_features, load_model_ref
from mobiledepth.train.loader import EpochBatches, LoaderSettings, default_workers, epoch_order, make_loader
from mobiledepth.train.losses import pairwise_loss, ranking_loss, rmse_loss, with_heads
from mobiledepth.train.rebalance import Rebalancer

__all__ = ["TrainResult", "TrainSetup", "epoch_order", "prepare", "run", "train"]

STATE_KIND = "mobiledepth-train-state/1"


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path | None  # model.pt when training completed, else None
    last_checkpoint: Path
    steps: int
    total_steps: int
    interrupted: bool
    stopped: str  # 'done', 'max_steps', 'time', 'interrupt'
    seconds: float
    val_whdr: float | None = None
    weights: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- pieces
def compute_terms(model, batch: dict, cfg: dict, teacher: Teacher | None) -> dict[str, torch.Tensor]:
    """The unweighted loss terms of one batch (intermediate heads wrapped inside each term)."""
    loss_cfg = cfg["loss"]
    if hasattr(model, "forward_train"):
        prediction, feature = forward_with_tap(model, batch["image"], loss_cfg["student_tap"])
    else:  # a TrainForward, maybe inside DistributedDataParallel or torch.compile
        prediction, feature = model(batch["image"])
    intermediates = prediction.intermediates if loss_cfg["intermediate"] else []
    check_head_weights(len(intermediates), loss_cfg, "the model")
    head_weights = loss_cfg["head_weights"][: len(intermediates) + 1] if intermediates else [1.0]
    terms: dict[str, torch.Tensor] = {}
    names = loss_terms(cfg)
    if teacher is not None:
        teacher_depth, teacher_feature = teacher(batch["image"])
    if "pairwise" in names:
        terms["pairwise"] = pairwise_loss(feature, teacher_feature, loss_cfg["pool_scale"])
    if "rmse" in names:
        terms["rmse"] = with_heads(lambda d: rmse_loss(d, teacher_depth), prediction.depth, intermediates, head_weights)
    if "ranking" in names:
        points, rel, mask = batch["points"], batch["rel"], batch["mask"]
        terms["ranking"] = with_heads(lambda d: ranking_loss(d, points, rel, mask), prediction.depth, intermediates, head_weights)
    return terms


def check_head_weights(heads: int, loss_cfg: dict, name: str) -> None:
    """A model with K intermediate heads needs K + 1 head weights (final first); one line when it has fewer."""
    if loss_cfg["intermediate"] and heads + 1 > len(loss_cfg["head_weights"]):
        raise UserError(f"{name} returns {heads} intermediate heads, so loss.head_weights needs {heads + 1} weights "
                        f"(final first), not {len(loss_cfg['head_weights'])}; set them, or loss.intermediate: false")


def fixed_weights(cfg: dict) -> dict[str, float]:
    names = loss_terms(cfg)
    given = cfg["loss"]["weights"]
    if given:
        missing = [n for n in names if n not in given]
        if missing:
            raise UserError(f"loss.weights lacks {', '.join(missing)}; give a weight for every active term: {names}")
        return {n: float(given[n]) for n in names}
    return {n: 1.0 / len(names) for n in names}


def make_optimizer(params, cfg: dict) -> torch.optim.Optimizer:
    opt = cfg["optimizer"]
    if opt["name"] == "adam":
        return torch.optim.Adam(params, lr=float(opt["lr"]), weight_decay=float(opt["weight_decay"]))
    return torch.optim.SGD(params, lr=float(opt["lr"]), momentum=float(opt["momentum"]), weight_decay=float(opt["weight_decay"]))


def make_scheduler(optimizer, cfg: dict):
    sched = cfg["scheduler"]
    if sched["name"] == "none":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _epoch: 1.0)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(sched["step_epochs"]), gamma=float(sched["gamma"]))


class TrainForward(torch.nn.Module):
    """The student's training pass as ``forward`` (what DistributedDataParallel and torch.compile wrap):
    ``x -> (DepthPrediction, tapped feature map)``."""

    def __init__(self, model: torch.nn.Module, tap: str) -> None:
        super().__init__()
        self.model, self.tap = model, tap

    def forward(self, x: torch.Tensor):
        return forward_with_tap(self.model, x, self.tap)


def rebalance_points(steps_per_epoch: int, per_epoch: int) -> set[int]:
    """In-epoch step indices (0-based) after which the rebalancer updates: ``per_epoch`` of them, evenly spread."""
    per_epoch = max(1, min(int(per_epoch), steps_per_epoch))
    return {round((j + 1) * steps_per_epoch / per_epoch) - 1 for j in range(per_epoch)}


class _Interrupt:
    """First Ctrl-C asks the loop to save and stop after the current step; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not in the main thread: no handler, plain KeyboardInterrupt
            self._previous = None
        return self

    def _handle(self, _signum, _frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


# --------------------------------------------------------------------------- state
class _CpuWeights:
    """A model seen through CPU copies of its weights: checkpoints load on machines without its device."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def state_dict(self) -> dict:
        from mobiledepth.compute.device import cpu_state_dict

        return cpu_state_dict(self.model)


def _to_cpu(value):
    """Tensors inside nested dicts / lists moved to the CPU (optimizer state of a GPU run)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu")
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def save_state(path: Path, model, spec, cfg, optimizer, scheduler, rebalancer, step: int, epoch: int,
               scaler=None, world_size: int = 1, model_meta: dict | None = None) -> Path:
    """A resume point: model weights + every piece of training state (weights_only-loadable, CPU tensors).
    ``model_meta``: what names the model besides the spec (a factory's reference as given, as data)."""
    from mobiledepth.arch import save_checkpoint

    return save_checkpoint(
        path, _CpuWeights(model), spec,
        kind=STATE_KIND, step=step, epoch=epoch, input_size=list(cfg["input_size"]),
        optimizer=_to_cpu(optimizer.state_dict()), scheduler=scheduler.state_dict(),
        rebalancer=rebalancer.state_dict() if rebalancer is not None else None,
        rng_torch=torch.get_rng_state(),
        scaler=scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        world_size=world_size, **(model_meta or {}),
    )


def _trim_metrics(path: Path, step: int) -> None:
    """Drop records logged after ``step`` (they belong to the interrupted future)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    from mobiledepth.io import write_text_atomic

    write_text_atomic(path, "".join(line + "\n" for line in kept))


RESUME_KEYS = ("step", "epoch", "optimizer", "scheduler", "rng_torch")
# what a resumed run may change: when to stop, and where / how fast it computes (not what it computes)
FACTORY_KEYS = ("model", "teacher")  # config keys that may name a module:factory (confirmed on the command line)
RESUME_MAY_CHANGE = ("epochs", "max_steps", "max_minutes", "device", "precision", "channels_last", "compile",
                     "threads", "data.workers", "data.prefetch")


def read_resume_point(path: Path, model) -> dict:
    """Read ``last.pt`` and load its weights into ``model``; a damaged or foreign file is a one-line UserError.

    Returns the checkpoint's meta (optimiser, scheduler, rebalancer and RNG state) for :func:`_restore`."""
    from mobiledepth.arch.checkpoint import load_state_dict_strict, read_checkpoint

    state = read_checkpoint(path)
    meta = state.get("meta") or {}
    missing = [key for key in RESUME_KEYS if key not in meta]
    if meta.get("kind") != STATE_KIND or missing:
        raise UserError(f"{path} is not a resume point of 'mobiledepth train' (kind {meta.get('kind')!r}"
                        f"{', lacks ' + ', '.join(missing) if missing else ''}); start a new run with --out")
    load_state_dict_strict(model, state["state_dict"], str(path))
    return meta


def _restore(meta: dict, optimizer, scheduler, rebalancer) -> tuple[Rebalancer | None, int]:
    """Load a resume point's optimisation state (its weights are already in the model); returns (rebalancer, step)."""
    optimizer.load_state_dict(meta["optimizer"])  # moves the state to the parameters' device
    scheduler.load_state_dict(meta["scheduler"])
    if rebalancer is not None and meta.get("rebalancer"):
        rebalancer = Rebalancer.from_state_dict(meta["rebalancer"])
    torch.set_rng_state(meta["rng_torch"])
    return rebalancer, int(meta["step"])


def _load_split(data: str, split: str | None, skip_bad: bool, required: bool, limit: int | None = None):
    from mobiledepth.data.diw import load_dataset

    path = Path(data)
    try:
        return load_dataset(path, split=None if path.is_file() else split, skip_bad=skip_bad, limit=limit)
    except UserError:
        if required:
            raise
        return None


@dataclass
class TrainSetup:
    """A run checked and ready to start: config, run directory, data (decoded once), model, teacher."""

    cfg: dict
    run_dir: Path
    data: str
    resume: bool
    train_data: object  # DiwData
    val_data: object | None
    model: torch.nn.Module
    spec: dict
    teacher: Teacher | None
    resume_meta: dict | None = None  # the resume point's state (its weights are already in ``model``)
    device: DeviceSettings | None = None  # None: the CPU in fp32
    world: dist_.World = dist_.SINGLE
    source: object = None  # the student as resolved (mobiledepth.arch.resolve.ResolvedModel)
    notes: list[str] = field(default_factory=list)  # what the run adjusted to the model (shown by the CLI)

    @property
    def model_name(self) -> str | None:
        """The zoo/spec name, or the factory reference as given."""
        return self.source.name if self.source is not None else (self.spec or {}).get("name")

    def model_meta(self) -> dict:
        """What every checkpoint of this run remembers besides the spec (a factory's reference, never run from it)."""
        return self.source.checkpoint_meta() if self.source is not None else {}

    def skipped(self) -> tuple[int, int]:
        """(images, pairs) dropped by ``data.skip_bad`` from the training and validation data."""
        parts = [d for d in (self.train_data, self.val_data) if d is not None]
        return sum(d.skipped_images for d in parts), sum(d.skipped_pairs for d in parts)


def _resolve_run(config, data, out, resume, overrides: dict) -> tuple[dict, Path, str]:
    """The config, run directory and data path of a new or resumed run; the run directory is checked writable."""
    from mobiledepth.io import check_writable

    if resume is None:
        if data is None or out is None:
            raise UserError("train needs --data DIR and --out RUN_DIR (or --resume RUN_DIR)")
        if isinstance(config, (str, os.PathLike)):
            confirm_factories(load_yaml(config), overrides, f"config {config}")
        cfg = resolve_config(config, **overrides)
        run_dir = check_writable(out, "--out", folder=True)
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise UserError(f"{run_dir} already holds a run; pass --resume {run_dir} or choose another --out")
        return cfg, run_dir, data
    run_dir = Path(resume)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "checkpoints" / "last.pt").is_file():
        raise UserError(f"{run_dir} is not a resumable run (needs config.yaml and checkpoints/last.pt)")
    check_writable(run_dir, "--resume", folder=True)
    saved = load_yaml(run_dir / "config.yaml")
    data = data or saved.pop("data_path", None)
    saved.pop("data_path", None)
    confirm_factories(saved, overrides, f"run {run_dir}")
    allowed = {k: v for k, v in overrides.items() if v is not None
               and (k in RESUME_MAY_CHANGE or (k in FACTORY_KEYS and v == saved.get(k)))}
    other = [k for k, v in overrides.items() if v is not None and k not in allowed]
    if other:
        raise UserError(f"--resume continues the saved config; {', '.join(other)} cannot change (start a new run instead)")
    return resolve_config(saved, **allowed), run_dir, data


def confirm_factories(named: dict, overrides: dict, source: str) -> None:
    """A config file may name a ``module:factory`` only when the same flag on the command line confirms it:
    files are data, and only the user's own ``--model`` / ``--teacher`` imports code."""
    from mobiledepth.arch.resolve import is_factory_ref

    for key in FACTORY_KEYS:
        value = named.get(key)
        if is_factory_ref(value) and overrides.get(key) != value:
            raise UserError(f"{source} names {value} as its {key}, and a file may not name code to run; "
                            f"pass --{key} {value} to confirm it")


def prepare(
    config: str | dict | None = None, data: str | None = None, out: str | None = None, resume: str | None = None,
    **overrides,
) -> TrainSetup:
    """Check everything a run needs before the first step (config, run directory, every image, model, teacher)."""
    cfg, run_dir, data = _resolve_run(config, data, out, resume, overrides)
    world = dist_.world_from_env()
    device = device_settings(cfg["device"], cfg["precision"], cfg["channels_last"], bool(cfg["compile"]),
                             world.local_rank)
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    data_cfg = cfg["data"]
    train_data = _load_split(data, data_cfg["train_split"], data_cfg["skip_bad"], required=True)
    val_data = None
    if data_cfg["val_split"] and not Path(data).is_file() and data_cfg["val_split"] != data_cfg["train_split"]:
        val_data = _load_split(data, data_cfg["val_split"], data_cfg["skip_bad"], required=False,
                               limit=int(data_cfg["val_limit"]) if data_cfg["val_limit"] else None)
    torch.manual_seed(int(cfg["seed"]))  # the seed fixes the init
    model, source = load_model_ref(cfg["model"], with_heads=bool(cfg["loss"]["intermediate"]),
                                   checkpoint=cfg["init_checkpoint"] if resume is None else None)
    check_tap(model, cfg["loss"]["student_tap"], "student")
    teacher = Teacher(cfg["teacher"], cfg["loss"]["teacher_tap"], cfg["teacher_checkpoint"]) if cfg["teacher"] else None
    notes = size_from_factory(cfg, source, _size_given(config, resume, overrides))
    notes += fit_losses_to_models(cfg, source, teacher)
    if not cfg["rebalance"]["enabled"]:
        fixed_weights(cfg)  # a missing loss weight is found now, not at the first step
    resume_meta = read_resume_point(run_dir / "checkpoints" / "last.pt", model) if resume is not None else None
    dist_.check_sharding(world, int(cfg["batch_size"]), int(cfg["accumulate"]), len(train_data.samples))
    world = dist_.join(world, device.device)  # last: every check above fails alone, before any collective
    return TrainSetup(cfg, run_dir, data, resume is not None, train_data, val_data, model, source.spec, teacher,
                      resume_meta, device, world, source=source, notes=notes)


def _size_given(config, resume, overrides: dict) -> bool:
    """Whether the user chose the training size (a flag, the config file, or the resumed run's config)."""
    if resume is not None or overrides.get("input_size") is not None:
        return True
    named = load_yaml(config) if isinstance(config, (str, os.PathLike)) else (config or {})
    return "input_size" in named


def size_from_factory(cfg: dict, source, size_given: bool) -> list[str]:
    """A factory model trains at its own size (trained, else declared ``input_size``) unless the user chose one:
    the paper's 224x448 is the zoo models' recipe, not every model's. Returns a note when the size changes."""
    from mobiledepth.train.config import check_config

    own = source.trained_size or source.declared_size
    if size_given or source.kind != "factory" or not own or list(own) == list(cfg["input_size"]):
        return []
    cfg["input_size"] = [int(v) for v in own]
    check_config(cfg)
    return [f"training at {own[0]}x{own[1]}, the size {source.name} declares; pass --input-size to choose another"]


def fit_losses_to_models(cfg: dict, student, teacher: Teacher | None) -> list[str]:
    """Check a user's model against the contract at the training size, before the first step, and fit the losses.

    A factory model (student or teacher) is run once: it must return a depth map of the input size; its
    intermediate heads need as many head weights. The pair-wise term needs a feature map from both models:
    ``features`` exists only in mobiledepth's own models, so with another model it runs only when the user
    names a tap (``loss.student_tap`` / ``loss.teacher_tap``); otherwise it is switched off (returned as a note)."""
    from mobiledepth.arch.resolve import check_depth_output
    from mobiledepth.train.config import check_config

    loss, size = cfg["loss"], tuple(cfg["input_size"])
    if student.kind == "factory":
        heads = check_depth_output(student.model, size, f"--model {student.name}")
        check_head_weights(heads, loss, f"--model {student.name}")
    if teacher is None:
        return []
    if teacher.source.kind == "factory":
        check_depth_output(teacher.model, size, f"--teacher {teacher.source.name}")
    untapped = [role for role, net, tap in (("student", student.model, loss["student_tap"]),
                                            ("teacher", teacher.model, loss["teacher_tap"]))
                if tap == "features" and not has_features(net)]
    if not (loss["pairwise"] and untapped):
        return []
    loss["pairwise"] = False
    check_config(cfg)  # still some loss term left
    return [f"pair-wise distillation is off: the {' and '.join(untapped)} model has no 'features' map; name a "
            "feature tap (loss.student_tap / loss.teacher_tap: a submodule) to turn it on"]


# --------------------------------------------------------------------------- the loop
def validation_whdr(model, data, input_size: tuple[int, int], batch_size: int = 16,
                    device: torch.device | None = None, world: dist_.World = dist_.SINGLE):
    """WHDR of ``model`` (in eval mode, no gradients) on DIW-format ``data``, read as ``mobiledepth eval`` reads it.

    Only WHDR's loop and arithmetic come from evaluate (:mod:`mobiledepth.evaluate.whdr`), not
    its backends: training runs the torch module itself. Under torchrun each rank evaluates its
    shard and the counts are summed, so the value is exactly the single-process one."""
    from mobiledepth.arch.resolve import depth_of
    from mobiledepth.evaluate.whdr import WhdrResult, evaluate_runtime, shard

    device = device or torch.device("cpu")

    def predict(images):
        return depth_of(model(torch.from_numpy(images).to(device))).float().cpu().numpy()

    was_training = model.training
    model.eval()
    with torch.no_grad():
        total, _ = evaluate_runtime(predict, shard(data, world.rank, world.size), input_size, batch_size)
    model.train(was_training)
    correct, pairs = dist_.all_sum([total.correct, total.pairs], world, device)
    return WhdrResult(int(correct), int(pairs))


class _Loop:
    """A run between steps: optimiser, scheduler, rebalancer, loss weights and the step count (what
    ``last.pt`` saves), the data order, and where records go."""

    def __init__(self, setup: TrainSetup, progress: ProgressFn):
        """Build the optimisation state, restore it from the resume point or start a fresh run directory."""
        cfg = self.cfg = setup.cfg
        self.setup, self.progress, self.model = setup, progress, setup.model
        self.world, self.device = setup.world, setup.device or device_settings("cpu")
        self.forward = self._place()
        self.optimizer = make_optimizer(self.model.parameters(), cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.scaler = self.device.grad_scaler()
        self.names = loss_terms(cfg)
        rb_cfg = cfg["rebalance"]
        self.rebalancer = (Rebalancer(self.names, rb_cfg["order"], float(rb_cfg["lambda_start"]),
                                      float(rb_cfg["lambda_step"])) if rb_cfg["enabled"] else None)
        self.batch_size, self.accumulate = int(cfg["batch_size"]), int(cfg["accumulate"])
        self._open_loader()
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.total_steps = self.steps_per_epoch * int(cfg["epochs"])
        self.stop_at = min(self.total_steps, int(cfg["max_steps"])) if cfg["max_steps"] else self.total_steps
        self.metrics_path = setup.run_dir / "metrics.jsonl"
        self.step = 0
        self._open_run_dir()
        self.weights = dict(self.rebalancer.weights) if self.rebalancer else fixed_weights(cfg)
        self.points = rebalance_points(self.steps_per_epoch, rb_cfg["per_epoch"])
        self.budget = float(cfg["max_minutes"]) * 60 if cfg["max_minutes"] else None
        self.val_whdr: float | None = None
        self.val_step: int | None = None  # the step whose weights val_whdr describes
        self.start_time = time.perf_counter()

    def _place(self) -> torch.nn.Module:
        """The student (and teacher) on the device; the training pass wrapped for DDP / torch.compile."""
        place_model(self.model, self.device)
        self.model.train()
        if self.setup.teacher is not None:
            place_model(self.setup.teacher.model, self.device)
        forward = dist_.wrap(TrainForward(self.model, self.cfg["loss"]["student_tap"]), self.world,
                             self.device.device)
        return torch.compile(forward) if self.device.compile else forward

    def _open_loader(self) -> None:
        from mobiledepth.data.dataset import DiwDataset

        cfg, data_cfg = self.cfg, self.cfg["data"]
        workers = data_cfg["workers"]
        if workers is None:
            local = int(__import__("os").environ.get("LOCAL_WORLD_SIZE", "1"))
            workers = default_workers(self.device.accelerator, local)
        self.dataset = DiwDataset(self.setup.train_data, tuple(cfg["input_size"]), draft=True,
                                  cache=bool(data_cfg["cache_images"]) and int(workers) == 0, uint8=True)
        self.batches = EpochBatches(len(self.dataset), self.batch_size, int(cfg["seed"]), self.world, self.accumulate)
        self.loader = make_loader(self.dataset, self.batches,
                                  LoaderSettings(int(workers), int(data_cfg["prefetch"]), self.device.pin_memory))

    def _open_run_dir(self) -> None:
        """Resume: restore the state, drop the records of the lost future; new: an empty log. Then config.yaml."""
        from mobiledepth.io import write_text_atomic

        setup = self.setup
        if setup.resume_meta is not None:
            self.rebalancer, self.step = _restore(setup.resume_meta, self.optimizer, self.scheduler, self.rebalancer)
            if setup.resume_meta.get("scaler") and self.scaler.is_enabled():
                self.scaler.load_state_dict(setup.resume_meta["scaler"])
        if not self.world.is_main:
            return
        if setup.resume_meta is not None:
            _trim_metrics(self.metrics_path, self.step)
        else:
            setup.run_dir.mkdir(parents=True, exist_ok=True)
            self.metrics_path.unlink(missing_ok=True)
        # the resolved config, with the stopping keys as used now (they may change on resume)
        write_text_atomic(setup.run_dir / "config.yaml",
                          dump_yaml({**self.cfg, "data_path": str(Path(setup.data).resolve())}))

    def log(self, record: dict) -> None:
        if self.world.is_main:
            with open(self.metrics_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def notify(self, record: dict) -> None:
        if self.world.is_main:
            self.progress(Progress("train", record["event"], done=self.step, total=self.stop_at, info=record))

    def checkpoint(self, tag: str | None = None) -> Path:
        """Refresh ``last.pt`` (and write ``<tag>.pt`` too when tagged); returns the last one written (rank 0 writes)."""
        tags = ["last"] + ([tag] if tag else [])
        for name in tags:
            path = self.setup.run_dir / "checkpoints" / f"{name}.pt"
            if self.world.is_main:
                save_state(path, self.model, self.setup.spec, self.cfg, self.optimizer, self.scheduler,
                           self.rebalancer, self.step, self.step // self.steps_per_epoch, self.scaler, self.world.size,
                           self.setup.model_meta())
        dist_.barrier(self.world)  # no rank runs ahead of a resume point that is not on disk yet
        return path

    def epoch(self, interrupt: _Interrupt) -> str:
        """Steps to the end of the current epoch (or the step budget); 'done', or why it stopped early."""
        epoch = self.step // self.steps_per_epoch
        first = self.step - epoch * self.steps_per_epoch
        self.batches.set_epoch(epoch, first)
        for in_epoch, batch in enumerate(self.loader, start=first):
            if self.step >= self.stop_at:
                break
            self.train_step(batch, epoch, in_epoch)
            stopped = self.after_step(in_epoch, interrupt)
            if stopped:
                return stopped
        return "done"

    def _parts(self, in_epoch: int) -> list[tuple[int, int, float]]:
        """This rank's parts of the step's global batch: (start, stop) in its share and the loss scale
        (the part's fraction of the global batch, times the world size that DDP divides by)."""
        count = self.batches.global_count(in_epoch)
        sizes = dist_.part_sizes(count, self.world.size * self.accumulate)
        mine = sizes[self.world.rank * self.accumulate : (self.world.rank + 1) * self.accumulate]
        parts, start = [], 0
        for size in mine:
            if size:
                parts.append((start, start + size, size / count * self.world.size))
            start += size
        return parts or [(0, 1, 0.0)]  # an empty share still joins the gradient exchange, weighted 0

    def _backward(self, batch: dict, parts) -> dict[str, float]:
        """Forward + backward of every part (gradients accumulate; DDP syncs on the last); the global terms."""
        values = dict.fromkeys(self.names, 0.0)
        for number, (start, stop, scale) in enumerate(parts):
            part = {k: v[start:stop] for k, v in batch.items()} if len(parts) > 1 or stop < len(batch["index"]) \
                else batch
            part = to_device(part, self.device)
            sync = number == len(parts) - 1 or not self.world.distributed
            with (contextlib.nullcontext() if sync else self.forward.no_sync()), self.device.autocast():
                terms = compute_terms(self.forward, part, self.cfg, self.setup.teacher)
                total = sum(self.weights[name] * terms[name] for name in self.names)
            loss = total if scale == 1.0 else total * scale
            self.scaler.scale(loss).backward()
            share = scale / self.world.size
            for name in self.names:
                values[name] += float(terms[name].detach()) * share
        return values

    def train_step(self, batch: dict, epoch: int, in_epoch: int) -> None:
        """One optimiser step; the rebalancer updates at its points; the step is logged and reported."""
        self.optimizer.zero_grad(set_to_none=True)
        values = self._backward(batch, self._parts(in_epoch))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        if self.world.distributed:
            values = dict(zip(self.names, dist_.all_sum([values[n] for n in self.names], self.world,
                                                        self.device.device)))
        total = sum(self.weights[name] * values[name] for name in self.names)
        if self.rebalancer is not None:
            self.rebalancer.accumulate(values)
            if in_epoch in self.points:
                self.weights = self.rebalancer.rebalance(epoch, self.step)
                # history epochs are 0-based (they index the lambda schedule); the log's are 1-based
                self.log({"event": "rebalance", **self.rebalancer.history[-1], "step": self.step, "epoch": epoch + 1})
        event = {"event": "step", "step": self.step, "epoch": epoch + 1, "total_steps": self.stop_at,
                 "lr": self.optimizer.param_groups[0]["lr"], "loss": values, "weights": dict(self.weights),
                 "total": total}
        if self.step % int(self.cfg["log_every"]) == 0 or self.step == 1:
            self.log(event)
        self.notify(event)

    def after_step(self, in_epoch: int, interrupt: _Interrupt) -> str | None:
        """Epoch end and periodic checkpoints; 'interrupt' or 'time' when the run must stop now (all ranks agree)."""
        if in_epoch == self.steps_per_epoch - 1:
            self.end_epoch()
        every = self.cfg["checkpoint"]["every_steps"]
        if every and self.step % int(every) == 0:
            self.checkpoint()
        out_of_time = self.budget is not None and time.perf_counter() - self.start_time > self.budget
        if self.world.distributed:
            flags = dist_.all_sum([float(interrupt.requested), float(out_of_time)], self.world, self.device.device)
            interrupt.requested, out_of_time = flags[0] > 0, flags[1] > 0
        if interrupt.requested:
            return "interrupt"
        return "time" if out_of_time else None

    def end_epoch(self) -> None:
        """Scheduler step, validation WHDR, the epoch record and checkpoint."""
        self.scheduler.step()
        done_epoch = self.step // self.steps_per_epoch
        record = {"event": "epoch", "step": self.step, "epoch": done_epoch,
                  "seconds": time.perf_counter() - self.start_time}
        if self.setup.val_data is not None:
            record.update(self.validate())
        self.log(record)
        self.notify(record)
        self.checkpoint(f"epoch_{done_epoch}")

    def validate(self) -> dict:
        """Validation WHDR of the current weights (every rank takes part), kept as the run's ``val_whdr``."""
        val = validation_whdr(self.model, self.setup.val_data, tuple(self.cfg["input_size"]), batch_size=16,
                              device=self.device.device, world=self.world)
        self.val_whdr, self.val_step = val.value, self.step
        return {"val_whdr": val.value, "val_pairs": val.pairs}

    def validate_final(self) -> None:
        """Validate the weights model.pt will hold when the last validation saw earlier ones (a stop mid-epoch:
        --minutes or --max-steps), so that train.json and the checkpoint's val_whdr describe model.pt."""
        if self.setup.val_data is not None and self.val_step != self.step:
            record = {"event": "final", "step": self.step, "seconds": time.perf_counter() - self.start_time,
                      **self.validate()}
            self.log(record)
            self.notify(record)


def train(
    config: str | dict | None = None,
    data: str | None = None,
    out: str | None = None,
    resume: str | None = None,
    progress: ProgressFn | None = None,
    **overrides,
) -> TrainResult:
    """Train (or resume) a model; returns where everything went and how it ended.

    ``overrides`` are config keys (dotted for nested ones, e.g. ``loss.rmse=False``) applied
    over the YAML; on ``resume`` only the stopping keys (epochs, max_steps, max_minutes) may change.
    ``progress`` gets a ``Progress("train", "step" | "epoch", done=step, total=steps, info=record)``.
    """
    return run(prepare(config, data=data, out=out, resume=resume, **overrides), progress)


def run(setup: TrainSetup, progress: ProgressFn | None = None) -> TrainResult:
    """Run a prepared setup to its end (or Ctrl-C, or its step / time budget); every rank returns the result."""
    try:
        loop = _Loop(setup, progress or silent)
        stopped = "done"
        with _Interrupt() as interrupt:
            while loop.step < loop.stop_at and stopped == "done":
                stopped = loop.epoch(interrupt)
            if stopped == "done" and loop.step < loop.total_steps:
                stopped = "max_steps"
            if stopped != "interrupt":
                loop.validate_final()
            last = loop.checkpoint()
        result = TrainResult(setup.run_dir, None, last, loop.step, loop.stop_at, stopped == "interrupt", stopped,
                             time.perf_counter() - loop.start_time, loop.val_whdr, dict(loop.weights))
        result = _finish(setup, result, loop.names)
        dist_.barrier(setup.world)
        return result
    finally:
        dist_.leave(setup.world)


def _finish(setup: TrainSetup, result: TrainResult, names: list[str]) -> TrainResult:
    """Save ``model.pt`` (unless interrupted) and the ``train.json`` summary record."""
    from mobiledepth.arch import save_checkpoint
    from mobiledepth.io import write_json_atomic
    from mobiledepth.records import new_record

    cfg, spec = setup.cfg, setup.spec
    if result.stopped in ("done", "max_steps", "time"):
        result.model_path = result.run_dir / "model.pt"
    if not setup.world.is_main:
        return result
    if result.model_path is not None:
        save_checkpoint(result.model_path, _CpuWeights(setup.model), spec, input_size=list(cfg["input_size"]),
                        steps=result.steps, val_whdr=result.val_whdr, **setup.model_meta())
    write_json_atomic(result.run_dir / "train.json", {
        **new_record("train"),
        "model": setup.model_name, "teacher": cfg["teacher"], "steps": result.steps, "total_steps": result.total_steps,
        "stopped": result.stopped, "seconds": round(result.seconds, 2), "val_whdr": result.val_whdr,
        "weights": result.weights, "terms": names, "world_size": setup.world.size,
        **(setup.device.describe() if setup.device is not None else {}),
        "model_path": str(result.model_path) if result.model_path else None,
    })
    return result
