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
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
import torch

from mobiledepth.errors import UserError
from mobiledepth.progress import Progress, ProgressFn, silent
from mobiledepth.train.config import dump_yaml, load_yaml, loss_terms, resolve_config
from mobiledepth.train.distill import Teacher, check_tap, forward_with_tap, load_model_ref
from mobiledepth.train.losses import pairwise_loss, ranking_loss, rmse_loss, with_heads
from mobiledepth.train.rebalance import Rebalancer

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
    prediction, feature = forward_with_tap(model, batch["image"], loss_cfg["student_tap"])
    intermediates = prediction.intermediates if loss_cfg["intermediate"] else []
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


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The sample order of an epoch: a function of (seed, epoch) only, so resume can replay it."""
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=generator).tolist()


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
def save_state(path: Path, model, spec, cfg, optimizer, scheduler, rebalancer, step: int, epoch: int) -> Path:
    """A resume point: model weights + every piece of training state (weights_only-loadable)."""
    from mobiledepth.arch import save_checkpoint

    return save_checkpoint(
        path, model, spec,
        kind=STATE_KIND, step=step, epoch=epoch, input_size=list(cfg["input_size"]),
        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
        rebalancer=rebalancer.state_dict() if rebalancer is not None else None,
        rng_torch=torch.get_rng_state(),
    )


def _trim_metrics(path: Path, step: int) -> None:
    """Drop records logged after ``step`` (they belong to the interrupted future)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    from mobiledepth.io import write_text_atomic

    write_text_atomic(path, "".join(line + "\n" for line in kept))


RESUME_KEYS = ("step", "epoch", "optimizer", "scheduler", "rng_torch")


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
    optimizer.load_state_dict(meta["optimizer"])
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
    allowed = {k: v for k, v in overrides.items() if k in ("epochs", "max_steps", "max_minutes") and v is not None}
    other = [k for k, v in overrides.items() if v is not None and k not in allowed]
    if other:
        raise UserError(f"--resume continues the saved config; {', '.join(other)} cannot change (start a new run instead)")
    return resolve_config(saved, **allowed), run_dir, data


def prepare(
    config: str | dict | None = None, data: str | None = None, out: str | None = None, resume: str | None = None,
    **overrides,
) -> TrainSetup:
    """Check everything a run needs before the first step (config, run directory, every image, model, teacher)."""
    cfg, run_dir, data = _resolve_run(config, data, out, resume, overrides)
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    data_cfg = cfg["data"]
    train_data = _load_split(data, data_cfg["train_split"], data_cfg["skip_bad"], required=True)
    val_data = None
    if data_cfg["val_split"] and not Path(data).is_file() and data_cfg["val_split"] != data_cfg["train_split"]:
        val_data = _load_split(data, data_cfg["val_split"], data_cfg["skip_bad"], required=False,
                               limit=int(data_cfg["val_limit"]) if data_cfg["val_limit"] else None)
    torch.manual_seed(int(cfg["seed"]))  # the seed fixes the init
    model, spec = load_model_ref(cfg["model"], with_heads=bool(cfg["loss"]["intermediate"]))
    check_tap(model, cfg["loss"]["student_tap"], "student")
    teacher = Teacher(cfg["teacher"], cfg["loss"]["teacher_tap"]) if cfg["teacher"] else None
    if not cfg["rebalance"]["enabled"]:
        fixed_weights(cfg)  # a missing loss weight is found now, not at the first step
    resume_meta = read_resume_point(run_dir / "checkpoints" / "last.pt", model) if resume is not None else None
    return TrainSetup(cfg, run_dir, data, resume is not None, train_data, val_data, model, spec, teacher, resume_meta)


# --------------------------------------------------------------------------- the loop
def validation_whdr(model, data, input_size: tuple[int, int], batch_size: int = 16):
    """WHDR of ``model`` (in eval mode, no gradients) on DIW-format ``data``, read as ``mobiledepth eval`` reads it.

    Only WHDR's loop and arithmetic come from evaluate (:mod:`mobiledepth.evaluate.whdr`), not
    its backends: training runs the torch module itself."""
    from mobiledepth.evaluate.whdr import evaluate_runtime

    def predict(images):
        return model(torch.from_numpy(images)).numpy()

    was_training = model.training
    model.eval()
    with torch.no_grad():
        total, _ = evaluate_runtime(predict, data, input_size, batch_size)
    model.train(was_training)
    return total


class _Loop:
    """A run between steps: optimiser, scheduler, rebalancer, loss weights and the step count (what
    ``last.pt`` saves), the data order, and where records go."""

    def __init__(self, setup: TrainSetup, progress: ProgressFn):
        """Build the optimisation state, restore it from the resume point or start a fresh run directory."""
        from mobiledepth.data.dataset import DiwDataset

        cfg = self.cfg = setup.cfg
        self.setup, self.progress, self.model = setup, progress, setup.model
        self.model.train()
        self.optimizer = make_optimizer(self.model.parameters(), cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.names = loss_terms(cfg)
        rb_cfg = cfg["rebalance"]
        self.rebalancer = (Rebalancer(self.names, rb_cfg["order"], float(rb_cfg["lambda_start"]),
                                      float(rb_cfg["lambda_step"])) if rb_cfg["enabled"] else None)
        self.dataset = DiwDataset(setup.train_data, tuple(cfg["input_size"]), cache=bool(cfg["data"]["cache_images"]))
        self.batch_size = int(cfg["batch_size"])
        self.steps_per_epoch = math.ceil(len(self.dataset) / self.batch_size)
        self.total_steps = self.steps_per_epoch * int(cfg["epochs"])
        self.stop_at = min(self.total_steps, int(cfg["max_steps"])) if cfg["max_steps"] else self.total_steps
        self.metrics_path = setup.run_dir / "metrics.jsonl"
        self.step = 0
        self._open_run_dir()
        self.weights = dict(self.rebalancer.weights) if self.rebalancer else fixed_weights(cfg)
        self.points = rebalance_points(self.steps_per_epoch, rb_cfg["per_epoch"])
        self.budget = float(cfg["max_minutes"]) * 60 if cfg["max_minutes"] else None
        self.val_whdr: float | None = None
        self.start_time = time.perf_counter()

    def _open_run_dir(self) -> None:
        """Resume: restore the state, drop the records of the lost future; new: an empty log. Then config.yaml."""
        from mobiledepth.io import write_text_atomic

        setup = self.setup
        if setup.resume_meta is not None:
            self.rebalancer, self.step = _restore(setup.resume_meta, self.optimizer, self.scheduler, self.rebalancer)
            _trim_metrics(self.metrics_path, self.step)
        else:
            setup.run_dir.mkdir(parents=True, exist_ok=True)
            self.metrics_path.unlink(missing_ok=True)
        # the resolved config, with the stopping keys as used now (they may change on resume)
        write_text_atomic(setup.run_dir / "config.yaml",
                          dump_yaml({**self.cfg, "data_path": str(Path(setup.data).resolve())}))

    def log(self, record: dict) -> None:
        with open(self.metrics_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def notify(self, record: dict) -> None:
        self.progress(Progress("train", record["event"], done=self.step, total=self.stop_at, info=record))

    def checkpoint(self, tag: str | None = None) -> Path:
        """Refresh ``last.pt`` (and write ``<tag>.pt`` too when tagged); returns the last one written."""
        tags = ["last"] + ([tag] if tag else [])
        for name in tags:
            path = save_state(self.setup.run_dir / "checkpoints" / f"{name}.pt", self.model, self.setup.spec, self.cfg,
                              self.optimizer, self.scheduler, self.rebalancer, self.step,
                              self.step // self.steps_per_epoch)
        return path

    def epoch(self, interrupt: _Interrupt) -> str:
        """Steps to the end of the current epoch (or the step budget); 'done', or why it stopped early."""
        from mobiledepth.data.dataset import collate

        epoch = self.step // self.steps_per_epoch
        order = epoch_order(len(self.dataset), int(self.cfg["seed"]), epoch)
        for in_epoch in range(self.step - epoch * self.steps_per_epoch, self.steps_per_epoch):
            if self.step >= self.stop_at:
                break
            chosen = order[in_epoch * self.batch_size : (in_epoch + 1) * self.batch_size]
            self.train_step(collate([self.dataset[i] for i in chosen]), epoch, in_epoch)
            stopped = self.after_step(in_epoch, interrupt)
            if stopped:
                return stopped
        return "done"

    def train_step(self, batch: dict, epoch: int, in_epoch: int) -> None:
        """One optimiser step; the rebalancer updates at its points; the step is logged and reported."""
        terms = compute_terms(self.model, batch, self.cfg, self.setup.teacher)
        total = sum(self.weights[name] * terms[name] for name in self.names)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.step += 1
        values = {name: float(terms[name].detach()) for name in self.names}
        if self.rebalancer is not None:
            self.rebalancer.accumulate(values)
            if in_epoch in self.points:
                self.weights = self.rebalancer.rebalance(epoch, self.step)
                # history epochs are 0-based (they index the lambda schedule); the log's are 1-based
                self.log({"event": "rebalance", **self.rebalancer.history[-1], "step": self.step, "epoch": epoch + 1})
        event = {"event": "step", "step": self.step, "epoch": epoch + 1, "total_steps": self.stop_at,
                 "lr": self.optimizer.param_groups[0]["lr"], "loss": values, "weights": dict(self.weights),
                 "total": float(total.detach())}
        if self.step % int(self.cfg["log_every"]) == 0 or self.step == 1:
            self.log(event)
        self.notify(event)

    def after_step(self, in_epoch: int, interrupt: _Interrupt) -> str | None:
        """Epoch end and periodic checkpoints; 'interrupt' or 'time' when the run must stop now."""
        if in_epoch == self.steps_per_epoch - 1:
            self.end_epoch()
        every = self.cfg["checkpoint"]["every_steps"]
        if every and self.step % int(every) == 0:
            self.checkpoint()
        if interrupt.requested:
            return "interrupt"
        if self.budget is not None and time.perf_counter() - self.start_time > self.budget:
            return "time"
        return None

    def end_epoch(self) -> None:
        """Scheduler step, validation WHDR, the epoch record and checkpoint."""
        self.scheduler.step()
        done_epoch = self.step // self.steps_per_epoch
        record = {"event": "epoch", "step": self.step, "epoch": done_epoch,
                  "seconds": time.perf_counter() - self.start_time}
        if self.setup.val_data is not None:
            val = validation_whdr(self.model, self.setup.val_data, tuple(self.cfg["input_size"]), batch_size=16)
            self.val_whdr = val.value
            record.update(val_whdr=val.value, val_pairs=val.pairs)
        self.log(record)
        self.notify(record)
        self.checkpoint(f"epoch_{done_epoch}")


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
    """Run a prepared setup to its end (or Ctrl-C, or its step / time budget)."""
    loop = _Loop(setup, progress or silent)
    stopped = "done"
    with _Interrupt() as interrupt:
        while loop.step < loop.stop_at and stopped == "done":
            stopped = loop.epoch(interrupt)
        if stopped == "done" and loop.step < loop.total_steps:
            stopped = "max_steps"
        last = loop.checkpoint()
    result = TrainResult(setup.run_dir, None, last, loop.step, loop.stop_at, stopped == "interrupt", stopped,
                         time.perf_counter() - loop.start_time, loop.val_whdr, dict(loop.weights))
    return _finish(setup, result, loop.names)


def _finish(setup: TrainSetup, result: TrainResult, names: list[str]) -> TrainResult:
    """Save ``model.pt`` (unless interrupted) and the ``train.json`` summary record."""
    from mobiledepth.arch import save_checkpoint
    from mobiledepth.io import write_json_atomic
    from mobiledepth.records import new_record

    cfg, spec = setup.cfg, setup.spec
    if result.stopped in ("done", "max_steps", "time"):
        result.model_path = save_checkpoint(result.run_dir / "model.pt", setup.model, spec,
                                            input_size=list(cfg["input_size"]), steps=result.steps,
                                            val_whdr=result.val_whdr)
    write_json_atomic(result.run_dir / "train.json", {
        **new_record("train"),
        "model": spec.get("name"), "teacher": cfg["teacher"], "steps": result.steps, "total_steps": result.total_steps,
        "stopped": result.stopped, "seconds": round(result.seconds, 2), "val_whdr": result.val_whdr,
        "weights": result.weights, "terms": names,
        "model_path": str(result.model_path) if result.model_path else None,
    })
    return result
