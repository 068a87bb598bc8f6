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
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from mobiledepth.errors import UserError
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


def _load_split(data: str, split: str | None, skip_bad: bool, required: bool):
    from mobiledepth.data.diw import load_dataset

    path = Path(data)
    try:
        return load_dataset(path, split=None if path.is_file() else split, skip_bad=skip_bad)
    except UserError:
        if required:
            raise
        return None


# --------------------------------------------------------------------------- the loop
def train(
    config: str | dict | None = None,
    data: str | None = None,
    out: str | None = None,
    resume: str | None = None,
    progress: Callable[[dict], None] | None = None,
    **overrides,
) -> TrainResult:
    """Train (or resume) a model; returns where everything went and how it ended.

    ``overrides`` are config keys (dotted for nested ones, e.g. ``loss.rmse=False``) applied
    over the YAML; on ``resume`` only the stopping keys (epochs, max_steps, max_minutes) may change.
    """
    from mobiledepth.data.dataset import DiwDataset, collate
    from mobiledepth.io import write_json_atomic, write_text_atomic

    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file() or not (run_dir / "checkpoints" / "last.pt").is_file():
            raise UserError(f"{run_dir} is not a resumable run (needs config.yaml and checkpoints/last.pt)")
        saved = load_yaml(run_dir / "config.yaml")
        data = data or saved.pop("data_path", None)
        saved.pop("data_path", None)
        allowed = {k: v for k, v in overrides.items() if k in ("epochs", "max_steps", "max_minutes") and v is not None}
        other = [k for k, v in overrides.items() if v is not None and k not in allowed]
        if other:
            raise UserError(f"--resume continues the saved config; {', '.join(other)} cannot change (start a new run instead)")
        cfg = resolve_config(saved, **allowed)
    else:
        if data is None or out is None:
            raise UserError("train needs --data DIR and --out RUN_DIR (or --resume RUN_DIR)")
        cfg = resolve_config(config, **overrides)
        run_dir = Path(out)
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise UserError(f"{run_dir} already holds a run; pass --resume {run_dir} or choose another --out")
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))

    train_data = _load_split(data, cfg["data"]["train_split"], cfg["data"]["skip_bad"], required=True)
    val_split = cfg["data"]["val_split"]
    val_data = None
    if val_split and not Path(data).is_file() and val_split != cfg["data"]["train_split"]:
        val_data = _load_split(data, val_split, cfg["data"]["skip_bad"], required=False)
        if val_data is not None and cfg["data"]["val_limit"]:
            val_data.samples = val_data.samples[: int(cfg["data"]["val_limit"])]

    # model, teacher, optimisation state (the seed fixes the init)
    torch.manual_seed(int(cfg["seed"]))
    model, spec = load_model_ref(cfg["model"], with_heads=bool(cfg["loss"]["intermediate"]))
    check_tap(model, cfg["loss"]["student_tap"], "student")
    teacher = Teacher(cfg["teacher"], cfg["loss"]["teacher_tap"]) if cfg["teacher"] else None
    model.train()
    optimizer = make_optimizer(model.parameters(), cfg)
    scheduler = make_scheduler(optimizer, cfg)
    names = loss_terms(cfg)
    rb_cfg = cfg["rebalance"]
    rebalancer = (
        Rebalancer(names, rb_cfg["order"], float(rb_cfg["lambda_start"]), float(rb_cfg["lambda_step"]))
        if rb_cfg["enabled"] else None
    )

    dataset = DiwDataset(train_data, tuple(cfg["input_size"]), cache=bool(cfg["data"]["cache_images"]))
    batch_size = int(cfg["batch_size"])
    steps_per_epoch = math.ceil(len(dataset) / batch_size)
    total_steps = steps_per_epoch * int(cfg["epochs"])
    stop_at = min(total_steps, int(cfg["max_steps"])) if cfg["max_steps"] else total_steps
    checkpoints = run_dir / "checkpoints"
    metrics_path = run_dir / "metrics.jsonl"
    step = 0

    if resume is not None:
        from mobiledepth.arch.checkpoint import load_state_dict_strict, read_checkpoint

        state = read_checkpoint(checkpoints / "last.pt")
        meta = state["meta"]
        load_state_dict_strict(model, state["state_dict"], str(checkpoints / "last.pt"))
        optimizer.load_state_dict(meta["optimizer"])
        scheduler.load_state_dict(meta["scheduler"])
        if rebalancer is not None and meta.get("rebalancer"):
            rebalancer = Rebalancer.from_state_dict(meta["rebalancer"])
        torch.set_rng_state(meta["rng_torch"])
        step = int(meta["step"])
        _trim_metrics(metrics_path, step)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", dump_yaml({**cfg, "data_path": str(Path(data).resolve())}))
        if metrics_path.exists():
            metrics_path.unlink()
    # the resolved config, with the stopping keys as used now (they may change on resume)
    write_text_atomic(run_dir / "config.yaml", dump_yaml({**cfg, "data_path": str(Path(data).resolve())}))

    def log(record: dict) -> None:
        with open(metrics_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def checkpoint(tag: str | None = None) -> Path:
        path = save_state(checkpoints / "last.pt", model, spec, cfg, optimizer, scheduler, rebalancer, step, step // steps_per_epoch)
        if tag:
            path = save_state(checkpoints / f"{tag}.pt", model, spec, cfg, optimizer, scheduler, rebalancer, step, step // steps_per_epoch)
        return path

    def end_epoch(val_whdr):
        """Scheduler step, validation WHDR, epoch checkpoint; returns the latest val WHDR."""
        scheduler.step()
        done_epoch = step // steps_per_epoch
        record = {"event": "epoch", "step": step, "epoch": done_epoch, "seconds": time.perf_counter() - start_time}
        if val_data is not None:
            from mobiledepth.evaluate.evaluate import evaluate_module

            val = evaluate_module(model, val_data, tuple(cfg["input_size"]), batch_size=16)
            val_whdr = val.value
            record.update(val_whdr=val.value, val_pairs=val.pairs)
        log(record)
        if progress is not None:
            progress(record)
        checkpoint(f"epoch_{done_epoch}")
        return val_whdr

    weights = dict(rebalancer.weights) if rebalancer else fixed_weights(cfg)
    points = rebalance_points(steps_per_epoch, rb_cfg["per_epoch"])
    start_time = time.perf_counter()
    budget = float(cfg["max_minutes"]) * 60 if cfg["max_minutes"] else None
    stopped = "done"
    val_whdr = None
    with _Interrupt() as interrupt:
        while step < stop_at:
            epoch = step // steps_per_epoch
            order = epoch_order(len(dataset), int(cfg["seed"]), epoch)
            offset = step - epoch * steps_per_epoch
            for in_epoch in range(offset, steps_per_epoch):
                if step >= stop_at:
                    break
                batch = collate([dataset[i] for i in order[in_epoch * batch_size : (in_epoch + 1) * batch_size]])
                terms = compute_terms(model, batch, cfg, teacher)
                total = sum(weights[name] * terms[name] for name in names)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                step += 1
                values = {name: float(terms[name].detach()) for name in names}
                if rebalancer is not None:
                    rebalancer.accumulate(values)
                    if in_epoch in points:
                        weights = rebalancer.rebalance(epoch, step)
                        # history epochs are 0-based (they index the lambda schedule); the log's are 1-based
                        log({"event": "rebalance", **rebalancer.history[-1], "step": step, "epoch": epoch + 1})
                event = {"event": "step", "step": step, "epoch": epoch + 1, "total_steps": stop_at,
                         "lr": optimizer.param_groups[0]["lr"], "loss": values, "weights": dict(weights),
                         "total": float(total.detach())}
                if step % int(cfg["log_every"]) == 0 or step == 1:
                    log(event)
                if progress is not None:
                    progress(event)
                if in_epoch == steps_per_epoch - 1:
                    val_whdr = end_epoch(val_whdr)
                every = cfg["checkpoint"]["every_steps"]
                if every and step % int(every) == 0:
                    checkpoint()
                if interrupt.requested:
                    stopped = "interrupt"
                    break
                if budget is not None and time.perf_counter() - start_time > budget:
                    stopped = "time"
                    break
            if stopped != "done":
                break
        if stopped == "done" and step < total_steps:
            stopped = "max_steps"
        last = checkpoint()

    seconds = time.perf_counter() - start_time
    model_path = None
    if stopped in ("done", "max_steps", "time"):
        from mobiledepth.arch import save_checkpoint

        model_path = save_checkpoint(run_dir / "model.pt", model, spec, input_size=list(cfg["input_size"]),
                                     steps=step, val_whdr=val_whdr)
    result = TrainResult(run_dir, model_path, last, step, stop_at, stopped == "interrupt", stopped, seconds,
                         val_whdr, dict(weights))
    write_json_atomic(run_dir / "train.json", {
        "kind": "train", "schema": 1, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": spec.get("name"), "teacher": cfg["teacher"], "steps": step, "total_steps": stop_at,
        "stopped": stopped, "seconds": round(seconds, 2), "val_whdr": val_whdr, "weights": weights,
        "terms": names, "model_path": str(model_path) if model_path else None,
    })
    return result
