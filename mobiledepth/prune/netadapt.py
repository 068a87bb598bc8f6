"""NetAdapt (Yang et al. 2018) on measured latency lookup tables (SPEC §6).

Each iteration lowers the latency target by ``initial_reduction * R0 * decay**(i-1)``; every
prunable channel group proposes the widest multiple-of-``multiple`` width whose LUT estimate
meets that target; each proposal is cut (largest-L2 filters), fine-tuned for a few steps with
the training pipeline and scored by WHDR on a held-out split; the best WHDR wins (or, with
``choose="loss-per-ms"``, the smallest WHDR loss per ms saved). When the
estimate falls under the budget the chosen model is exported and *measured* on the device;
if the measurement misses, the gap (measured - estimated) is carried into the estimates and
the loop goes on. At the end: a long fine-tune, export, benchmark, and the store (the whole
run, every step, so the report draws the trajectory).

Everything an iteration decides is written to ``prune.json`` (and its checkpoint to
``iter_NNN/``) before the next one starts, so ``resume`` continues a stopped run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from mobiledepth.errors import StageFailed, UserError
from mobiledepth.io import sha256_file, write_json_atomic

PRUNE_RECORD = "prune.json"
CHOICE_RULES = ("accuracy", "loss-per-ms")


@dataclass
class PruneSettings:
    """Everything that defines a pruning run (saved in prune.json; a resume reuses it)."""

    model: str
    checkpoint: str
    target_ms: float
    data: str
    lut: str
    device: str = "host"
    delegate: str = "cpu"
    threads: int = 1
    input_size: tuple[int, int] | None = None        # deploy resolution (latency)
    train_input_size: tuple[int, int] | None = None  # fine-tune resolution (default: input_size)
    short_term_steps: int = 100
    long_term_steps: int = 500
    initial_reduction: float = 0.025
    decay: float = 0.96
    workers: int | None = 1  # None on a resume: keep the run's
    multiple: int = 8
    min_width: int = 8
    batch_size: int = 4
    lr: float = 1e-4
    val_split: str = "test"
    val_limit: int | None = None
    train_split: str = "train"
    max_iterations: int = 100
    measure_runs: int = 50
    seed: int = 0
    proposal_timeout_s: float | None = None
    measure: bool = True  # export + time on the device when the estimate meets the budget
    choose: str | None = "accuracy"  # or "loss-per-ms" (choose_proposal); None on a resume: keep the run's


@dataclass
class PruneResult:
    run_dir: Path
    record: dict
    final_checkpoint: Path | None = None
    export_dir: Path | None = None


def check_settings(s: PruneSettings) -> None:
    """Reject bad input before any work, with the fix named."""
    if s.target_ms <= 0:
        raise UserError(f"--target-ms must be positive (got {s.target_ms})")
    if not Path(s.checkpoint).is_file():
        raise UserError(f"checkpoint {s.checkpoint} does not exist; pass a model trained with 'mobiledepth train'")
    if not Path(s.data).exists():
        raise UserError(f"data {s.data} does not exist; pass a DIW-format folder (see 'mobiledepth data')")
    if not 0 < s.initial_reduction < 1:
        raise UserError(f"--initial-reduction must be in (0, 1) (got {s.initial_reduction}); the paper uses 0.025")
    if not 0 < s.decay <= 1:
        raise UserError(f"--decay must be in (0, 1] (got {s.decay}); the paper uses 0.96")
    if s.short_term_steps < 0 or s.long_term_steps < 0:
        raise UserError("--short-term-steps and --long-term-steps must be >= 0")
    if s.workers < 1:
        raise UserError(f"--workers must be at least 1 (got {s.workers})")
    if s.multiple < 1 or s.min_width < 1:
        raise UserError("--multiple and --min-width must be at least 1")
    if s.choose not in CHOICE_RULES:
        raise UserError(f"--choose must be one of {', '.join(CHOICE_RULES)} (got {s.choose!r})")


# ----------------------------------------------------------------------------- proposals
def candidate_width(table, spec: dict, group, lut_target_us: float, multiple: int, min_width: int,
                    input_size) -> tuple[int, float] | None:
    """The widest allowed width (< current) whose estimate meets the target, with that estimate."""
    from mobiledepth.prune.groups import set_group_widths, structure

    base = structure(spec)
    top = (group.width - 1) // multiple * multiple
    for width in range(top, max(min_width, multiple) - 1, -multiple):
        trial = set_group_widths(spec, {group.name: width})
        if structure(trial) != base:
            continue
        estimate = table.estimate(trial, input_size).total_us
        if estimate <= lut_target_us:
            return width, estimate
    return None


def smallest_spec(spec: dict, multiple: int, min_width: int) -> dict:
    """Every prunable group at its smallest allowed width (structure kept): the LUT's floor."""
    from mobiledepth.prune.groups import channel_groups, set_group_widths, structure

    base = structure(spec)
    widths = {}
    for group in channel_groups(spec):
        if not group.prunable:
            continue
        for width in range(max(min_width, multiple), group.width + 1, multiple):
            if structure(set_group_widths(spec, {**widths, group.name: width})) == base:
                widths[group.name] = width
                break
    return set_group_widths(spec, widths)


def choose_proposal(proposals: list[dict], rule: str, whdr_before: float, estimated_before_ms: float) -> dict:
    """The winning proposal among successful ones (each with ``whdr`` and ``estimated_ms``).

    ``accuracy``: the lowest WHDR (ties: the faster). ``loss-per-ms`` (NetAdapt's reference code):
    the smallest (whdr - whdr_before) / (estimated_before_ms - estimated_ms); ties: the lower WHDR.
    A proposal that saves no latency by the table ranks last."""
    if rule == "accuracy":
        return min(proposals, key=lambda p: (p["whdr"], p["estimated_ms"]))

    def loss_per_ms(p: dict) -> float:
        saved = estimated_before_ms - p["estimated_ms"]
        return (p["whdr"] - whdr_before) / saved if saved > 0 else float("inf")

    return min(proposals, key=lambda p: (loss_per_ms(p), p["whdr"], p["estimated_ms"]))


def _train_config(settings: dict, checkpoint: str, steps: int, seed: int) -> dict:
    size = settings["train_input_size"] or settings["input_size"]
    return {
        "model": checkpoint, "seed": seed, "input_size": list(size), "batch_size": settings["batch_size"],
        "epochs": 100000, "max_steps": steps,
        "optimizer": {"name": "adam", "lr": settings["lr"]}, "scheduler": {"name": "none"},
        "data": {"train_split": settings["train_split"], "val_split": None},
        "loss": {"intermediate": False}, "checkpoint": {"every_steps": 0}, "log_every": 50,
        "threads": settings["threads"],
    }


def fine_tune(checkpoint: str, data: str, out_dir: Path, steps: int, settings: dict, seed: int = 0) -> Path:
    """Fine-tune a checkpoint with the training pipeline; returns the new weights' path."""
    if steps <= 0:
        return Path(checkpoint)
    from mobiledepth.train.trainer import train

    result = train(config=_train_config(settings, checkpoint, steps, seed), data=data, out=str(out_dir))
    if result.model_path is None:
        raise StageFailed(f"fine-tuning in {out_dir} stopped early ({result.stopped}); resume the prune run")
    return Path(result.model_path)


def held_out_whdr(checkpoint: str | Path, settings: dict) -> float:
    """WHDR of a checkpoint on the held-out split at the fine-tune resolution."""
    from mobiledepth.arch import load_checkpoint
    from mobiledepth.data.diw import load_dataset
    from mobiledepth.evaluate.evaluate import evaluate_module

    data = load_dataset(settings["data"], split=settings["val_split"])
    if settings.get("val_limit"):
        data.samples = data.samples[: int(settings["val_limit"])]
    model, _, _ = load_checkpoint(checkpoint, with_heads=False)
    size = tuple(settings["train_input_size"] or settings["input_size"])
    return evaluate_module(model.eval(), data, size).value


def run_proposal(job: dict) -> dict:
    """Cut one group, fine-tune, score: the unit of work a worker runs."""
    import torch

    from mobiledepth.arch import load_checkpoint, save_checkpoint
    from mobiledepth.prune.surgery import prune_model

    settings = job["settings"]
    torch.set_num_threads(int(settings["threads"]))
    out = Path(job["dir"])
    out.mkdir(parents=True, exist_ok=True)
    model, spec, _ = load_checkpoint(job["checkpoint"], with_heads=False)
    pruned, new_spec = prune_model(model, spec, {job["group"]: job["width"]})
    cut = save_checkpoint(out / "pruned.pt", pruned, new_spec)
    start = time.perf_counter()
    tuned = fine_tune(str(cut), settings["data"], out / "finetune", job["steps"], settings, settings["seed"])
    train_s = time.perf_counter() - start
    whdr = held_out_whdr(tuned, settings)
    return {"checkpoint": str(tuned), "whdr": whdr, "train_s": round(train_s, 2)}


# ----------------------------------------------------------------------------- the loop
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _measure(spec: dict, checkpoint: str | Path, settings: dict, out_dir: Path) -> dict:
    from mobiledepth.prune.lut import measure_spec

    if out_dir.exists():
        shutil.rmtree(out_dir)
    m = measure_spec(spec, settings["input_size"], settings["device"], settings["delegate"], settings["threads"],
                     out_dir, checkpoint=checkpoint, runs=settings["measure_runs"],
                     statistic=settings.get("statistic") or "median")
    return {"measured_ms": m["latency_us"] / 1000.0, "median_ms": m["median_us"] / 1000.0,
            "run_dir": m["run_dir"], "tflite": m["tflite"]}


def _write(run_dir: Path, record: dict) -> None:
    record["updated_at"] = _now()
    write_json_atomic(run_dir / PRUNE_RECORD, record)


def prune(settings: PruneSettings | None = None, out: str | os.PathLike | None = None,
          resume: str | os.PathLike | None = None, store: str | os.PathLike | None | bool = None,
          progress: Callable[[str, dict], None] | None = None) -> PruneResult:
    """Run (or resume) NetAdapt; returns the run directory, the prune record and the final model.

    ``store``: a store path, ``None`` for the default store, ``False`` to skip ingestion."""
    from mobiledepth.arch import load_checkpoint, resolve_spec, save_checkpoint, spec_hash
    from mobiledepth.prune.groups import channel_groups, group_widths
    from mobiledepth.prune.lut import load_table

    notify = progress or (lambda event, data: None)
    if resume is not None:
        run_dir = Path(resume)
        try:
            record = json.loads((run_dir / PRUNE_RECORD).read_text())
        except (OSError, ValueError):
            raise UserError(f"{run_dir} holds no readable {PRUNE_RECORD}; pass the run directory of a 'mobiledepth prune' run") from None
        cfg = record["settings"]
        cfg.setdefault("choose", "accuracy")  # runs from before --choose chose by accuracy
        if settings is not None:
            _resume_overrides(settings, cfg, run_dir)
    else:
        if settings is None or out is None:
            raise UserError("prune needs settings and --out RUN_DIR (or --resume RUN_DIR)")
        check_settings(settings)
        run_dir = Path(out)
        if (run_dir / PRUNE_RECORD).exists():
            raise UserError(f"{run_dir} already holds a prune run; pass --resume {run_dir} or choose another --out")
        cfg = asdict(settings)
        record = None

    table = load_table(cfg["lut"])
    meta = table.meta
    if resume is None:
        if (meta["device"], meta["delegate"]) != (cfg["device"], cfg["delegate"]):
            raise UserError(f"the lookup table {cfg['lut']} was measured on {meta['device']}/{meta['delegate']}, not "
                            f"{cfg['device']}/{cfg['delegate']}; build one with 'mobiledepth lut build --device {cfg['device']} --delegate {cfg['delegate']}'")
        cfg["input_size"] = list(cfg["input_size"] or meta["input_size"])
        if list(meta["input_size"]) != cfg["input_size"]:
            raise UserError(f"the lookup table is for {meta['input_size'][0]}x{meta['input_size'][1]}, not "
                            f"{cfg['input_size'][0]}x{cfg['input_size'][1]}; build a table at the deploy size")
        cfg["train_input_size"] = list(cfg["train_input_size"] or cfg["input_size"])
        cfg["statistic"] = table.statistic  # measurements use the table's statistic
        model, spec, _ = load_checkpoint(cfg["checkpoint"], spec=resolve_spec(cfg["model"]) if cfg["model"] else None,
                                         with_heads=False)
        from mobiledepth.prune.groups import check_prunable_spec

        check_prunable_spec(spec)
        estimate0 = table.estimate(spec).total_ms
        floor = table.estimate(smallest_spec(spec, cfg["multiple"], cfg["min_width"])).total_ms
        if floor > cfg["target_ms"]:
            raise UserError(f"target {cfg['target_ms']:g} ms is not reachable on {cfg['device']}/{cfg['delegate']}: "
                            f"the smallest allowed widths (>= {max(cfg['min_width'], cfg['multiple'])}) give "
                            f"{floor:.3f} ms by the lookup table (the model: {estimate0:.3f} ms); "
                            f"raise --target-ms above {floor:.3f} or lower --min-width")
        created = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        start_dir = run_dir / "iter_000"
        try:
            start_dir.mkdir(exist_ok=True)
            start_ckpt = save_checkpoint(start_dir / "model.pt", model, spec)
            measured0 = None
            if cfg["measure"]:
                notify("measure", {"iteration": 0})
                measured0 = _measure(spec, start_ckpt, cfg, start_dir / "export")
            whdr0 = held_out_whdr(start_ckpt, cfg)
        except BaseException:
            # nothing to resume yet: leave no half-made run directory behind
            shutil.rmtree(run_dir if created else start_dir, ignore_errors=True)
            raise
        record = {
            "kind": "prune", "schema": 1, "created_at": _now(), "status": "running",
            "model": {"name": spec.get("name"), "checkpoint": str(cfg["checkpoint"]),
                      "checkpoint_sha256": sha256_file(cfg["checkpoint"]), "spec_hash": spec_hash(spec)},
            "device": cfg["device"], "delegate": cfg["delegate"], "target_ms": cfg["target_ms"],
            "input_size": cfg["input_size"], "lut": {"path": str(cfg["lut"]), "runtime": meta.get("runtime")},
            "settings": cfg, "floor_ms": floor,
            "iterations": [{
                "iteration": 0, "estimated_ms": estimate0,
                "measured_ms": measured0["measured_ms"] if measured0 else None,
                "whdr": whdr0, "widths": group_widths(spec), "chosen": None,
                "checkpoint": str(start_ckpt.relative_to(run_dir)), "finished_at": _now(),
            }],
        }
        _write(run_dir, record)
        notify("iteration", record["iterations"][0])

    # -- state from the record --------------------------------------------------------------
    def correction_ms() -> float:
        """measured - estimated of the latest measured iteration (0 before any measurement)."""
        for it in reversed(record["iterations"]):
            if it["measured_ms"] is not None:
                return it["measured_ms"] - it["estimated_ms"]
        return 0.0

    def latency_ms(it: dict) -> float:
        return it["measured_ms"] if it["measured_ms"] is not None else it["estimated_ms"] + correction_ms()

    first = record["iterations"][0]
    step0 = cfg["initial_reduction"] * latency_ms(first)
    target = cfg["target_ms"]
    while record["status"] == "running" and latency_ms(record["iterations"][-1]) > target:
        last = record["iterations"][-1]
        i = last["iteration"] + 1
        if i > cfg["max_iterations"]:
            raise StageFailed(f"stopped after {cfg['max_iterations']} iterations at {latency_ms(last):.3f} ms "
                              f"(target {target:g}); resume with a larger --max-iterations")
        current_ckpt = run_dir / last["checkpoint"]
        _, spec, _ = load_checkpoint(current_ckpt, with_heads=False)
        corr = correction_ms()
        if record["floor_ms"] + corr > target:
            raise StageFailed(f"the device measured {corr:+.3f} ms against the lookup table, so the smallest allowed "
                              f"widths would take ~{record['floor_ms'] + corr:.3f} ms: target {target:g} ms is not "
                              f"reachable; raise --target-ms, lower --min-width, or rebuild the table "
                              f"(run {run_dir} stays resumable)")
        target_i = latency_ms(last) - step0 * cfg["decay"] ** (i - 1)
        lut_target_us = (target_i - corr) * 1000.0
        iter_dir = run_dir / f"iter_{i:03d}"
        groups = [g for g in channel_groups(spec) if g.prunable]
        # when no single group can make the scheduled step, halve the step (up to 8 times)
        # rather than stall: late in a run every group is thin and cuts are small
        current_us = last["estimated_ms"] * 1000.0
        for _ in range(8):
            if any(candidate_width(table, spec, g, lut_target_us, cfg["multiple"], cfg["min_width"], cfg["input_size"])
                   for g in groups):
                break
            lut_target_us = current_us - (current_us - lut_target_us) / 2
        target_i = lut_target_us / 1000.0 + corr
        jobs = []
        for group in groups:
            found = candidate_width(table, spec, group, lut_target_us, cfg["multiple"], cfg["min_width"], cfg["input_size"])
            if found is None:
                continue
            width, est = found
            job_dir = iter_dir / "proposals" / f"{group.name}-{width}"
            jobs.append({"group": group.name, "width": width, "estimated_ms": est / 1000.0,
                         "checkpoint": str(current_ckpt), "dir": str(job_dir), "steps": cfg["short_term_steps"],
                         "settings": cfg, "result_path": str(job_dir / "result.json")})
        if not jobs:
            raise StageFailed(f"iteration {i}: no channel group can be cut to meet {target_i:.3f} ms "
                              f"(now {latency_ms(last):.3f} ms); the target {target:g} ms is not reachable from here — "
                              "raise --target-ms or lower --min-width")
        notify("proposals", {"iteration": i, "target_ms": target_i, "count": len(jobs)})
        from mobiledepth.prune.workers import run_jobs

        results = run_jobs(run_proposal, jobs, cfg["workers"], cfg["proposal_timeout_s"],
                           on_done=lambda job, res: notify("proposal", {"iteration": i, "group": job["group"],
                                                                         "width": job["width"], **res}))
        proposals = []
        for job, res in zip(jobs, results):
            proposals.append({"group": job["group"], "width": job["width"], "estimated_ms": job["estimated_ms"],
                              "ok": bool(res.get("ok")), "whdr": res.get("whdr"), "error": res.get("error"),
                              "checkpoint": res.get("checkpoint")})
        good = [p for p in proposals if p["ok"]]
        if not good:
            raise StageFailed(f"iteration {i}: every proposal failed (first: {proposals[0]['error']}); "
                              f"fix the cause and resume with --resume {run_dir}")
        best = choose_proposal(good, cfg["choose"], last["whdr"], last["estimated_ms"])
        chosen_ckpt = iter_dir / "model.pt"
        shutil.copyfile(best["checkpoint"], chosen_ckpt)
        _, new_spec, _ = load_checkpoint(chosen_ckpt, with_heads=False)
        entry = {"iteration": i, "target_ms": target_i, "estimated_ms": best["estimated_ms"], "measured_ms": None,
                 "whdr": best["whdr"], "widths": group_widths(new_spec),
                 "chosen": {"group": best["group"], "width": best["width"]},
                 "checkpoint": str(chosen_ckpt.relative_to(run_dir)),
                 "proposals": [{k: v for k, v in p.items() if k != "checkpoint"} for p in proposals]}
        if cfg["measure"] and best["estimated_ms"] + corr <= target:
            notify("measure", {"iteration": i})
            entry["measured_ms"] = _measure(new_spec, chosen_ckpt, cfg, iter_dir / "export")["measured_ms"]
        entry["finished_at"] = _now()
        record["iterations"].append(entry)
        _write(run_dir, record)
        for job in jobs:  # the chosen weights are in iter_NNN/model.pt; proposals keep result.json only
            shutil.rmtree(Path(job["dir"]) / "finetune", ignore_errors=True)
            (Path(job["dir"]) / "pruned.pt").unlink(missing_ok=True)
        notify("iteration", entry)

    return _finish(run_dir, record, cfg, store, notify)


def _resume_overrides(settings: PruneSettings, cfg: dict, run_dir: Path) -> None:
    """A resume may change --workers only; a different --choose would mix two rules in one run."""
    if settings.choose is not None and settings.choose != cfg["choose"]:
        raise UserError(f"{run_dir} chooses proposals by {cfg['choose']}; resume it without --choose "
                        f"(or start a new run with --choose {settings.choose})")
    if settings.workers is not None:
        if settings.workers < 1:
            raise UserError(f"--workers must be at least 1 (got {settings.workers})")
        cfg["workers"] = settings.workers


def _finish(run_dir: Path, record: dict, cfg: dict, store, notify) -> PruneResult:
    """Long-term fine-tune, export + benchmark on the device, eval, store ingestion."""
    from mobiledepth.arch import load_checkpoint

    final_dir = run_dir / "final"
    last = record["iterations"][-1]
    if record["status"] != "done":
        notify("long_term", {"steps": cfg["long_term_steps"]})
        tuned_dir = final_dir / "finetune"
        if tuned_dir.exists():
            shutil.rmtree(tuned_dir)
        tuned = fine_tune(str(run_dir / last["checkpoint"]), cfg["data"], tuned_dir, cfg["long_term_steps"], cfg, cfg["seed"])
        final_ckpt = final_dir / "model.pt"
        final_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tuned, final_ckpt)
        _, spec, _ = load_checkpoint(final_ckpt, with_heads=False)
        whdr = held_out_whdr(final_ckpt, cfg)
        final = {"checkpoint": str(final_ckpt.relative_to(run_dir)), "whdr": whdr, "widths": last["widths"],
                 "estimated_ms": last["estimated_ms"], "measured_ms": None, "export_dir": None,
                 "long_term_steps": cfg["long_term_steps"]}
        if cfg["measure"]:
            notify("measure", {"iteration": "final"})
            m = _measure(spec, final_ckpt, cfg, final_dir / "export")
            final.update(measured_ms=m["measured_ms"], export_dir=str(Path(m["run_dir"]).relative_to(run_dir)))
            _bench_record(Path(m["run_dir"]), cfg)
            final["tflite_whdr"] = _evaluate_export(Path(m["run_dir"]), cfg)
        record["final"] = final
        record["status"] = "done"
        record["finished_at"] = _now()
        _write(run_dir, record)
        if store is not False:
            record["store"] = _ingest(run_dir, record, store)
            _write(run_dir, record)
    final = record["final"]
    return PruneResult(run_dir, record, run_dir / final["checkpoint"],
                       run_dir / final["export_dir"] if final.get("export_dir") else None)


def _bench_record(export_dir: Path, cfg: dict) -> None:
    """bench.json beside the final export (the bench stage), so the store links latency to the artifact."""
    from mobiledepth.bench import bench

    bench(export_dir, devices=[cfg["device"]], delegate=cfg["delegate"], threads=cfg["threads"], runs=cfg["measure_runs"])


def _evaluate_export(export_dir: Path, cfg: dict) -> float:
    """WHDR of the exported TFLite model on the held-out split at its own (deploy) input size;
    ``eval.json`` beside the export, for the store."""
    from mobiledepth.evaluate.evaluate import evaluate

    export = json.loads((export_dir / "export.json").read_text())
    tflite = next(a for a in export["artifacts"] if a["format"] == "tflite")
    result = evaluate(str(export_dir / tflite["path"]), cfg["data"], backend="tflite", split=cfg["val_split"],
                      limit=int(cfg["val_limit"]) if cfg.get("val_limit") else None, out=export_dir / "eval.json")
    return result.value


def _ingest(run_dir: Path, record: dict, store) -> dict:
    """Put the run (every step), the final export, its benchmark and its measured accuracy into the shared store."""
    from mobiledepth.report.store import open_store

    with open_store(store if store else None) as db:
        summary = {"path": str(db.path), "records": 0}
        export_dir = run_dir / record["final"]["export_dir"] if record["final"].get("export_dir") else None
        for name in ("export.json", "bench.json", "eval.json"):
            if export_dir is not None and (export_dir / name).exists():
                db.ingest(json.loads((export_dir / name).read_text()), base_dir=export_dir)
                summary["records"] += 1
        db.ingest(record, base_dir=run_dir)  # the trajectory: one store row per step
        summary["records"] += 1
    return summary
