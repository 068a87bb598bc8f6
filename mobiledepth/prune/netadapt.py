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

The stage reads as its steps: :func:`start` (or :func:`reopen`) → :func:`iterate` (one
:func:`step` at a time) → :func:`finish`; :func:`prune` and :func:`resume` chain them.
Everything an iteration decides is written to ``prune.json`` (and its checkpoint to
``iter_NNN/``) before the next one starts, so :func:`resume` continues a stopped run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mobiledepth.errors import StageFailed, UserError
from mobiledepth.io import sha256_file, write_json_atomic
from mobiledepth.records import new_record, read_export_record, utc_timestamp
from mobiledepth.progress import Progress, ProgressFn, silent
from mobiledepth.prune.workers import check_compute

PRUNE_RECORD = "prune.json"
CHOICE_RULES = ("accuracy", "loss-per-ms")
HALVINGS = 8  # when no group can make the scheduled step, halve the step up to this many times
DEFAULT_MULTIPLE = 8  # a table's multiple when it records none (and the multiple of a table prune builds itself)

@dataclass
class PruneSettings:
    """Everything that defines a pruning run (saved in prune.json; a resume reuses it)."""

    model: str | None
    checkpoint: str
    target_ms: float | None  # absolute budget (converted through the reference timed in each session) ...
    data: str
    target_ratio: float | None = None  # ... or a fraction of the unpruned model's latency (one of the two)
    lut: str | None = None  # None: build the table for the model, deploy size, device and delegate
    device: str = "host"
    delegate: str = "cpu"
    threads: int = 1
    input_size: tuple[int, int] | list[int] | None = None        # deploy resolution (latency)
    train_input_size: tuple[int, int] | list[int] | None = None  # fine-tune resolution (default: input_size)
    short_term_steps: int = 100
    long_term_steps: int = 500
    initial_reduction: float = 0.025
    decay: float = 0.96
    workers: int | None = 1  # proposal worker processes (None: one per GPU on CUDA, else 1; see prune.workers)
    train_device: str = "auto"  # where fine-tunes and held-out WHDR run: auto|cpu|cuda|cuda:N|mps (not --device)
    precision: str = "auto"  # the fine-tunes' mixed precision: auto|fp32|bf16|fp16 (compute.device)
    multiple: int | None = None  # widths stay multiples of this (None: the lookup table's own ``multiple``)
    min_width: int = 8
    batch_size: int = 4
    lr: float = 1e-4
    val_split: str = "test"
    val_limit: int | None = None
    train_split: str = "train"
    max_iterations: int = 100
    measure_runs: int = 50   # timed runs of the final benchmark (bench.json)
    measure_rounds: int = 20  # interleaved rounds (candidate vs the unpruned reference) before the first look
    max_measure_rounds: int = 200  # ... and at most, while the decision is unclear
    seed: int = 0  # seeds the fine-tunes (short- and long-term)
    proposal_timeout_s: float | None = None
    measure: bool = True  # export + time on the device when the estimate meets the budget
    choose: str = "accuracy"  # or "loss-per-ms" (choose_proposal)
    min_proposals: int = 3  # halve the step while fewer groups than this (of those still cuttable) can make it
    statistic: str | None = None  # the lookup table's latency statistic (set when the run starts)

    @classmethod
    def from_record(cls, saved: dict) -> PruneSettings:
        """Settings as prune.json stores them (runs from before ``choose`` chose by accuracy, runs from before
        ``min_proposals`` went on with one proposal)."""
        known = {f.name for f in fields(cls)}
        return cls(**{"choose": "accuracy", "min_proposals": 1, **{k: v for k, v in saved.items() if k in known}})

    def to_record(self) -> dict:
        """The JSON form stored in prune.json (sizes as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def fine_tune_size(self) -> tuple[int, int]:
        """(H, W) for fine-tuning and WHDR."""
        return tuple(self.train_input_size or self.input_size)


@dataclass
class PruneResult:
    run_dir: Path
    record: dict
    final_checkpoint: Path | None = None
    export_dir: Path | None = None


def check_settings(s: PruneSettings) -> None:
    """Reject bad input before any work, with the fix named."""
    if (s.target_ms is None) == (s.target_ratio is None):
        raise UserError("give exactly one of --target-ms and --target-ratio; e.g. --target-ratio 0.6")
    if s.target_ms is not None and s.target_ms <= 0:
        raise UserError(f"--target-ms must be positive (got {s.target_ms})")
    if s.target_ratio is not None and not 0 < s.target_ratio < 1:
        raise UserError(f"--target-ratio must be in (0, 1) (got {s.target_ratio}); e.g. 0.6 for 60 % of the latency")
    if s.measure_rounds < 6 or s.max_measure_rounds < s.measure_rounds:
        raise UserError("--measure-rounds must be >= 6 and <= --max-measure-rounds (a confidence interval needs 6)")
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
    check_compute(s.train_device, s.precision, s.workers)  # the device is there, the workers fit it
    if (s.multiple is not None and s.multiple < 1) or s.min_width < 1:
        raise UserError("--multiple and --min-width must be at least 1")
    if s.min_proposals < 1:
        raise UserError(f"--min-proposals must be at least 1 (got {s.min_proposals}); leave it out for 3, or give 1 "
                        "for the paper's rule")
    if s.choose not in CHOICE_RULES:
        raise UserError(f"--choose must be one of {', '.join(CHOICE_RULES)} (got {s.choose!r})")


def _check_workers(workers: int | None) -> None:
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1 (got {workers})")


def default_run_dir(settings: PruneSettings) -> Path:
    """runs/prune-<model or checkpoint name>-<target>ms (or -x<ratio>)."""
    name = (settings.model or Path(settings.checkpoint).stem).replace(":", "-")  # module:factory -> module-factory
    target = f"{settings.target_ms:g}ms" if settings.target_ms is not None else f"x{settings.target_ratio:g}"
    return Path("runs") / f"prune-{name}-{target}"


# ----------------------------------------------------------------------------- proposals
def candidate_width(table, subject, group, lut_target_us: float, multiple: int, min_width: int,
                    input_size) -> tuple[int, float] | None:
    """The widest allowed width (< current) whose estimate meets the target, with that estimate.

    Widths are tried from the top; for a subject with ``bisect`` (a ``module:factory`` model, whose layer lists
    are dearer to make) the range is halved instead, taking the estimate as non-increasing in the width."""
    top = (group.width - 1) // multiple * multiple
    widths = [w for w in range(top, max(min_width, multiple) - 1, -multiple) if subject.allowed({group.name: w})]

    def estimate(width: int) -> float:
        return subject.estimate(table, {group.name: width}, input_size).total_us

    if subject.bisect:
        return widest_meeting(widths, estimate, lut_target_us)
    for width in widths:
        us = estimate(width)
        if us <= lut_target_us:
            return width, us
    return None


def widest_meeting(widths: list[int], estimate, target_us: float) -> tuple[int, float] | None:
    """The first of ``widths`` (descending) whose ``estimate`` is <= ``target_us``, by halving the list."""
    low, high, found = 0, len(widths) - 1, None
    while low <= high:
        middle = (low + high) // 2
        us = estimate(widths[middle])
        if us <= target_us:
            found, high = (widths[middle], us), middle - 1
        else:
            low = middle + 1
    return found


def smallest_widths(subject, multiple: int, min_width: int) -> dict[str, int]:
    """Every prunable group at its smallest allowed width (structure kept): the LUT's floor."""
    widths: dict[str, int] = {}
    for group in subject.groups():
        if not group.prunable:
            continue
        for width in range(max(min_width, multiple), group.width + 1, multiple):
            if subject.allowed({**widths, group.name: width}):
                widths[group.name] = width
                break
    return widths


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


def factory_ref(settings: PruneSettings) -> str | None:
    """The ``module:factory`` being pruned (given on the command line), or None for a spec model."""
    from mobiledepth.arch.resolve import is_factory_ref

    return settings.model if is_factory_ref(settings.model) else None


def open_checkpoint(checkpoint, settings: PruneSettings):
    """A checkpoint of the run as a subject (:mod:`mobiledepth.prune.subject`): its stored spec, or the factory."""
    from mobiledepth.prune.subject import open_subject

    return open_subject(factory_ref(settings), checkpoint)


def _model_keys(settings: PruneSettings, checkpoint: str) -> dict:
    """The trainer's config keys for ``checkpoint``: a factory model is named again, with the weights to start from."""
    factory = factory_ref(settings)
    return {"model": factory, "init_checkpoint": str(checkpoint)} if factory else {"model": str(checkpoint)}


def _train_config(settings: PruneSettings, checkpoint: str, steps: int, seed: int) -> dict:
    return {
        **_model_keys(settings, checkpoint), "seed": seed, "input_size": list(settings.fine_tune_size),
        "batch_size": settings.batch_size, "epochs": 100000, "max_steps": steps,
        "optimizer": {"name": "adam", "lr": settings.lr}, "scheduler": {"name": "none"},
        "data": {"train_split": settings.train_split, "val_split": None},
        "loss": {"intermediate": False}, "checkpoint": {"every_steps": 0}, "log_every": 50,
        "threads": settings.threads, "device": settings.train_device, "precision": settings.precision,
    }


def fine_tune(checkpoint: str, data: str, out_dir: Path, steps: int, settings: PruneSettings, seed: int = 0) -> Path:
    """Fine-tune a checkpoint with the training pipeline; returns the new weights' path."""
    if steps <= 0:
        return Path(checkpoint)
    from mobiledepth.train.trainer import train

    result = train(config=_train_config(settings, checkpoint, steps, seed), data=data, out=str(out_dir))
    if result.model_path is None:
        raise StageFailed(f"fine-tuning in {out_dir} stopped early ({result.stopped}); resume the prune run")
    return Path(result.model_path)


def held_out_whdr(checkpoint: str | Path, settings: PruneSettings) -> float:
    """WHDR of a checkpoint on the held-out split at the fine-tune resolution."""
    from mobiledepth.arch.resolve import deploy_module
    from mobiledepth.data.diw import load_dataset
    from mobiledepth.evaluate.evaluate import torch_runtime
    from mobiledepth.evaluate.whdr import evaluate_runtime

    data = load_dataset(settings.data, split=settings.val_split)
    if settings.val_limit:
        data.samples = data.samples[: int(settings.val_limit)]
    model = deploy_module(open_checkpoint(checkpoint, settings).model)  # the depth map of any model's output
    runtime = torch_runtime(model.eval(), settings.fine_tune_size, settings.train_device)
    return evaluate_runtime(runtime, data, settings.fine_tune_size)[0].value


def run_proposal(job: dict) -> dict:
    """Cut one group, fine-tune, score: the unit of work a worker runs.

    ``job`` is plain JSON: checkpoint, group, width, dir, steps and ``settings`` as prune.json stores them."""
    import torch

    settings = PruneSettings.from_record(job["settings"])
    if job.get("device"):  # a worker of its own GPU (CUDA_VISIBLE_DEVICES): see prune.workers.plan_workers
        settings = replace(settings, train_device=job["device"])
    torch.set_num_threads(int(settings.threads))
    out = Path(job["dir"])
    out.mkdir(parents=True, exist_ok=True)
    cut = open_checkpoint(job["checkpoint"], settings).save_cut(job["group"], job["width"], out / "pruned.pt")
    began = time.perf_counter()
    tuned = fine_tune(str(cut), settings.data, out / "finetune", job["steps"], settings, settings.seed)
    train_s = time.perf_counter() - began
    whdr = held_out_whdr(tuned, settings)
    return {"checkpoint": str(tuned), "whdr": whdr, "train_s": round(train_s, 2)}


# ----------------------------------------------------------------------------- the run's state
def _now() -> str:
    return utc_timestamp()


def _export(subject, checkpoint: str | Path, settings: PruneSettings, out_dir: Path) -> tuple[Path, Path]:
    """A fresh fp32 TFLite export of the subject's model with ``checkpoint``'s weights in ``out_dir``: (tflite, run_dir)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    return subject.export(checkpoint, settings.input_size, out_dir)


def _measure_reference(tflite: Path, settings: PruneSettings) -> float:
    """The unpruned model's latency (ms): the median of its turns in the shared harness."""
    from mobiledepth.prune.timing import time_against

    timing = time_against({}, tflite, settings.device, settings.delegate, settings.threads,
                          rounds=settings.measure_rounds, max_rounds=settings.measure_rounds, reduce=_turn_value(settings))
    return timing.reference_us / 1000.0


def _turn_value(settings: PruneSettings):
    """One turn's timed block as one number, under the table's statistic: with ``min``/``p5`` the ratio is
    of uncontended latencies (on a loaded machine a longer invoke is preempted more often, so medians of
    two models inflate unequally: seen here, a 2.2 ms model's median at 11 ms beside a 1.3 ms one's at 1.5)."""
    from mobiledepth.prune.timing import statistic_of

    statistic = settings.statistic or "median"
    return lambda block: statistic_of(block, statistic)


def session_target_ratio(settings: PruneSettings, reference_ms: float) -> float:
    """The target as a fraction of the reference: given, or --target-ms over the reference's latency
    measured in the same session."""
    return settings.target_ratio if settings.target_ratio is not None else settings.target_ms / reference_ms


def _measure(subject, checkpoint: str | Path, settings: PruneSettings, out_dir: Path, reference: Path) -> dict:
    """Export the subject and time it interleaved with the unpruned ``reference`` until it is clear whether
    the upper confidence bound of its latency ratio is under the target (``measured`` in prune.json)."""
    from mobiledepth.prune.timing import time_against

    tflite, run_dir = _export(subject, checkpoint, settings, out_dir)

    def clear(timing) -> bool:
        r, target = timing.ratios["model"], session_target_ratio(settings, timing.reference_us / 1000.0)
        return r.high <= target or r.low > target or r.half_width <= 0.005

    timing = time_against({"model": tflite}, reference, settings.device, settings.delegate, settings.threads,
                          rounds=settings.measure_rounds, max_rounds=settings.max_measure_rounds, settled=clear,
                          reduce=_turn_value(settings))
    reference_ms = timing.reference_us / 1000.0
    ratio, target = timing.ratios["model"], session_target_ratio(settings, reference_ms)
    return {"measured_ms": ratio.ratio * reference_ms, "run_dir": str(run_dir), "tflite": str(tflite),
            "measured": {**ratio.to_dict(), "reference_ms": reference_ms, "target_ratio": target,
                         "high_ms": ratio.high * reference_ms, "met": ratio.high <= target}}


@dataclass
class Run:
    """A run in progress: its directory, typed settings, the prune.json record and the lookup table.

    Latency is reasoned about as a fraction of the unpruned model (the reference): a measured
    iteration counts at the upper bound of its ratio interval, an unmeasured one at its LUT
    estimate over the start's estimate plus the latest measured gap (upper bound - estimate)."""

    run_dir: Path
    settings: PruneSettings
    record: dict
    table: Any
    width_maps: dict = field(default_factory=dict, repr=False)  # a factory model's WidthMaps, shared by its iterations

    @property
    def last(self) -> dict:
        return self.record["iterations"][-1]

    @property
    def first(self) -> dict:
        return self.record["iterations"][0]

    def reference_ms(self) -> float:
        """The reference's latency in the latest session (iteration 0's, or its estimate, before any)."""
        for it in reversed(self.record["iterations"]):
            if it.get("measured"):
                return it["measured"]["reference_ms"]
        return self.first["measured_ms"] if self.first.get("measured_ms") is not None else self.first["estimated_ms"]

    def target_ratio(self) -> float:
        return session_target_ratio(self.settings, self.reference_ms())

    def estimated_ratio(self, estimated_ms: float) -> float:
        return estimated_ms / self.first["estimated_ms"]

    def measured_ratio(self, it: dict) -> float | None:
        """The upper confidence bound of a measured iteration's ratio (None when not measured)."""
        if it.get("measured"):
            return it["measured"]["high"]
        if it.get("measured_ms") is None:
            return None
        return it["measured_ms"] / (self.first["measured_ms"] or self.first["estimated_ms"])

    def correction(self) -> float:
        """measured - estimated (as ratios) of the latest measured iteration (0 before any)."""
        for it in reversed(self.record["iterations"]):
            if self.measured_ratio(it) is not None:
                return self.measured_ratio(it) - self.estimated_ratio(it["estimated_ms"])
        return 0.0

    def latency_ratio(self, it: dict) -> float:
        measured = self.measured_ratio(it)
        return measured if measured is not None else self.estimated_ratio(it["estimated_ms"]) + self.correction()

    def latency_ms(self, it: dict) -> float:
        return self.latency_ratio(it) * self.reference_ms()

    def reference(self) -> Path:
        """The unpruned model's TFLite file (exported at iteration 0), timed beside every candidate."""
        return self.run_dir / self.first["reference_tflite"]

    def needs_more(self) -> bool:
        return self.record["status"] == "running" and self.latency_ratio(self.last) > self.target_ratio()

    def save(self) -> None:
        """prune.json, atomically (its settings are this run's settings)."""
        self.record["settings"] = self.settings.to_record()
        self.record["updated_at"] = _now()
        write_json_atomic(self.run_dir / PRUNE_RECORD, self.record)


# ----------------------------------------------------------------------------- start
def _table_for(settings: PruneSettings, subject, notify: ProgressFn):
    """The lookup table named by the settings, or one built now for the model, size, device and delegate."""
    from mobiledepth.prune.lut import build_lut, load_table

    if settings.lut is not None:
        return load_table(settings.lut)
    notify(Progress("prune", "lut", info={"model": subject.name, "device": settings.device,
                                          "delegate": settings.delegate}))
    model = subject.spec if subject.kind == "spec" else subject.factory
    built = build_lut(model, tuple(settings.input_size) if settings.input_size else None, settings.device,
                      settings.delegate, settings.threads, multiple=settings.multiple or DEFAULT_MULTIPLE)
    return built.table


def table_multiple(table) -> int:
    """The channel step of the table's grid (``lut build --multiple``)."""
    return int(table.meta.get("multiple") or DEFAULT_MULTIPLE)


def off_grid_warning(multiple: int, table) -> str | None:
    """One line when widths on ``multiple`` fall between the table's grid multiples (e.g. 8 on a 16 grid)."""
    grid = table_multiple(table)
    if multiple % grid == 0:
        return None
    return (f"--multiple {multiple} is finer than the lookup table's multiple {grid}: estimates of widths between "
            f"its grid points are interpolated (a kernel that computes channels in tiles of {grid} does not follow "
            f"that line); leave --multiple out to use {grid}")


def _resolved(settings: PruneSettings, table) -> PruneSettings:
    """The settings with the table's path, sizes, statistic and (unless given) multiple, after checking the table
    fits them."""
    meta = table.meta
    if (meta["device"], meta["delegate"]) != (settings.device, settings.delegate):
        raise UserError(f"the lookup table {table.path} was measured on {meta['device']}/{meta['delegate']}, not "
                        f"{settings.device}/{settings.delegate}; build one with 'mobiledepth lut build "
                        f"--device {settings.device} --delegate {settings.delegate}'")
    size = list(settings.input_size or meta["input_size"])
    if list(meta["input_size"]) != size:
        raise UserError(f"the lookup table is for {meta['input_size'][0]}x{meta['input_size'][1]}, not "
                        f"{size[0]}x{size[1]}; build a table at the deploy size")
    return replace(settings, lut=settings.lut or str(table.path), input_size=size,
                   train_input_size=list(settings.train_input_size or size), statistic=table.statistic,
                   multiple=settings.multiple or table_multiple(table))


def _check_reachable(settings: PruneSettings, table, subject) -> tuple[float, float]:
    """(the model's estimate, the floor's estimate) in ms; a UserError when the floor misses the target."""
    estimate0 = subject.estimate(table).total_ms
    floor = subject.estimate(table, smallest_widths(subject, settings.multiple, settings.min_width)).total_ms
    if settings.target_ratio is not None and floor > settings.target_ratio * estimate0:
        raise UserError(f"target ratio {settings.target_ratio:g} is not reachable on {settings.device}/"
                        f"{settings.delegate}: the smallest allowed widths (>= {max(settings.min_width, settings.multiple)}) "
                        f"give {floor / estimate0:.3f} of the model's latency by the lookup table; "
                        f"raise --target-ratio above {floor / estimate0:.3f} or lower --min-width")
    if settings.target_ms is not None and floor > settings.target_ms:
        raise UserError(f"target {settings.target_ms:g} ms is not reachable on {settings.device}/{settings.delegate}: "
                        f"the smallest allowed widths (>= {max(settings.min_width, settings.multiple)}) give "
                        f"{floor:.3f} ms by the lookup table (the model: {estimate0:.3f} ms); "
                        f"raise --target-ms above {floor:.3f} or lower --min-width")
    return estimate0, floor


def _record_target_ms(settings: PruneSettings, first: dict, estimate0: float) -> float:
    """The record's target in ms: given, or the ratio times the reference's latency at the start."""
    if settings.target_ms is not None:
        return settings.target_ms
    return settings.target_ratio * (first["measured_ms"] or estimate0)


def _first_iteration(run_dir: Path, subject, settings: PruneSettings, notify: ProgressFn) -> dict:
    """iter_000: the starting checkpoint, its measured latency and WHDR; nothing left behind on failure."""
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    start_dir = run_dir / "iter_000"
    try:
        start_dir.mkdir(exist_ok=True)
        start_ckpt = subject.save(start_dir / "model.pt")
        measured0 = reference = None
        if settings.measure:  # the unpruned model is the reference every later measurement is timed against
            notify(Progress("prune", "measure", info={"iteration": 0}))
            tflite, _ = _export(subject, start_ckpt, settings, start_dir / "export")
            measured0, reference = _measure_reference(tflite, settings), str(tflite.relative_to(run_dir))
        whdr0 = held_out_whdr(start_ckpt, settings)
    except BaseException:
        # nothing to resume yet: leave no half-made run directory behind
        shutil.rmtree(run_dir if created else start_dir, ignore_errors=True)
        raise
    return {"iteration": 0, "measured_ms": measured0, "reference_tflite": reference, "whdr": whdr0, "chosen": None,
            "checkpoint": str(start_ckpt.relative_to(run_dir)), "checkpoint_sha256": sha256_file(start_ckpt)}


def start(settings: PruneSettings, out: str | os.PathLike | None = None, notify: ProgressFn = silent) -> Run:
    """Check everything, measure and score the starting model (iteration 0), write prune.json."""
    from mobiledepth.prune.groups import check_prunable_spec
    from mobiledepth.prune.subject import open_subject

    check_settings(settings)
    run_dir = Path(out) if out is not None else default_run_dir(settings)
    if (run_dir / PRUNE_RECORD).exists():
        raise UserError(f"{run_dir} already holds a prune run; pass --resume {run_dir} or choose another --out")
    subject = open_subject(settings.model, settings.checkpoint)
    if subject.kind == "spec":
        check_prunable_spec(subject.spec)
    else:
        subject.graph()  # a model with nothing to prune stops here, in one line
    table = _table_for(settings, subject, notify)
    settings = _resolved(settings, table)
    warning = off_grid_warning(settings.multiple, table)
    if warning:
        notify(Progress("prune", "warning", detail=warning))
    estimate0, floor = _check_reachable(settings, table, subject)
    first = _first_iteration(run_dir, subject, settings, notify)
    record = new_record(
        "prune", status="running",
        model={**subject.identity(), "checkpoint": str(settings.checkpoint),
               "checkpoint_sha256": sha256_file(settings.checkpoint)},
        device=settings.device, delegate=settings.delegate, target_ms=_record_target_ms(settings, first, estimate0),
        target={"ms": settings.target_ms, "ratio": settings.target_ratio,
                "reference": first["reference_tflite"], "reference_ms": first["measured_ms"] or estimate0,
                "met_when": "the upper 95 % bound of the median per-round latency ratio to the reference "
                            "(timed interleaved in one session) is <= the target ratio; --target-ms is "
                            "converted through the reference's latency measured in that session"},
        input_size=settings.input_size, lut={"path": settings.lut, "runtime": table.meta.get("runtime")},
        settings=settings.to_record(), floor_ms=floor, warnings=[warning] if warning else [],
        iterations=[{**first, "estimated_ms": estimate0, "widths": subject.widths(), "finished_at": _now()}],
    )
    run = Run(run_dir, settings, record, table, getattr(subject, "width_maps", {}))  # a factory's probes, kept
    run.save()
    notify(Progress("prune", "iteration", info=run.last))
    return run


# ----------------------------------------------------------------------------- resume
def apply_resume_overrides(settings: PruneSettings, run_dir: str | os.PathLike, workers: int | None = None,
                           choose: str | None = None, train_device: str | None = None,
                           precision: str | None = None, seed: int | None = None) -> PruneSettings:
    """A resume may change ``workers``, where it computes (``train_device``, ``precision``; kept when not
    given, and checked again on this machine) and the fine-tunes' ``seed`` (kept when not given); a different
    ``choose`` would mix two rules in one run."""
    if choose is not None and choose != settings.choose:
        raise UserError(f"{run_dir} chooses proposals by {settings.choose}; resume it without --choose "
                        f"(or start a new run with --choose {choose})")
    if workers is not None:
        _check_workers(workers)
        settings = replace(settings, workers=workers)
    settings = replace(settings, train_device=train_device or settings.train_device,
                       precision=precision or settings.precision, seed=settings.seed if seed is None else int(seed))
    check_compute(settings.train_device, settings.precision, settings.workers)
    return settings


def reopen(run_dir: str | os.PathLike, workers: int | None = None, choose: str | None = None,
           train_device: str | None = None, precision: str | None = None, model: str | None = None,
           seed: int | None = None) -> Run:
    """The run saved in ``run_dir``, ready to iterate (``workers`` and the device may change, ``choose`` may not).

    A run of a ``module:factory`` model needs ``model``, the same reference given again: prune.json is a file,
    and a file never names code to run."""
    from mobiledepth.prune.lut import load_table

    run_dir = Path(run_dir)
    try:
        record = json.loads((run_dir / PRUNE_RECORD).read_text())
    except (OSError, ValueError):
        raise UserError(f"{run_dir} holds no readable {PRUNE_RECORD}; "
                        "pass the run directory of a 'mobiledepth prune' run") from None
    settings = apply_resume_overrides(PruneSettings.from_record(record["settings"]), run_dir, workers, choose,
                                      train_device, precision, seed)
    if factory_ref(settings) and model != settings.model:
        raise UserError(f"{run_dir} prunes the factory {settings.model}, which a file may not run; "
                        f"pass --resume {run_dir} --model {settings.model} to confirm it")
    return Run(run_dir, settings, record, load_table(settings.lut))


# ----------------------------------------------------------------------------- iterate
def _check_can_continue(run: Run, i: int) -> None:
    """StageFailed when the iteration budget is spent or a measurement ruled the target out."""
    s, corr, target = run.settings, run.correction(), run.target_ratio()
    if i > s.max_iterations:
        now = run.latency_ratio(run.last)
        raise StageFailed(f"stopped after {s.max_iterations} iterations at {now:.3f} of the reference's latency "
                          f"(~{now * run.reference_ms():.3f} ms), {now - target:.3f} ({(now / target - 1) * 100:.1f} %) "
                          f"above the target {target:.3f}; resume with a larger --max-iterations")
    floor = run.estimated_ratio(run.record["floor_ms"]) + corr
    if floor > target:
        raise StageFailed(f"the device measured {corr:+.3f} (as a fraction of the reference) against the lookup table, so "
                          f"the smallest allowed widths would take ~{floor:.3f} of the reference's latency: target "
                          f"{target:.3f} is not reachable, short by {floor - target:.3f} ({(floor / target - 1) * 100:.1f} %); "
                          f"raise the target, lower --min-width, or rebuild the table (run {run.run_dir} stays resumable)")


def _candidates(run: Run, subject, lut_target_us: float) -> list[tuple[str, int, float]]:
    """(group, width, estimate in µs) for every prunable group that can meet the LUT target."""
    s = run.settings
    found = []
    for group in subject.groups():
        if group.prunable:
            hit = candidate_width(run.table, subject, group, lut_target_us, s.multiple, s.min_width, s.input_size)
            if hit is not None:
                found.append((group.name, *hit))
    return found


def plan_cuts(run: Run, subject, i: int) -> tuple[float, list[tuple[str, int, float]]]:
    """Iteration ``i``'s LUT target (µs) and the cuts that meet it.

    The scheduled step is ``initial_reduction * R0 * decay**(i-1)``. When fewer than ``min_proposals``
    groups (or than the groups still cuttable, if fewer) can make it alone, the step is halved (up to
    HALVINGS times): with one or two proposals NetAdapt has no choice to make (measured: 10 % steps on
    the paper model left 1-2 of 26 groups, the same path in every seed), and late in a run every group
    is thin and cuts are small."""
    step0 = run.settings.initial_reduction * run.latency_ratio(run.first)
    target_i = run.latency_ratio(run.last) - step0 * run.settings.decay ** (i - 1)
    lut_target_us = (target_i - run.correction()) * run.first["estimated_ms"] * 1000.0
    current_us = run.last["estimated_ms"] * 1000.0
    wanted = min(run.settings.min_proposals, len(cuttable_groups(subject, run.settings)))
    for _ in range(HALVINGS):
        cuts = _candidates(run, subject, lut_target_us)
        if cuts and len(cuts) >= wanted:
            return lut_target_us, cuts
        lut_target_us = current_us - (current_us - lut_target_us) / 2
    return lut_target_us, _candidates(run, subject, lut_target_us)


def cuttable_groups(subject, settings: PruneSettings) -> list[str]:
    """The prunable groups still wider than the narrowest width allowed (they have a cut left)."""
    floor = max(settings.min_width, settings.multiple)
    return [g.name for g in subject.groups() if g.prunable and g.width > floor]


def _proposal_jobs(run: Run, i: int, cuts: list[tuple[str, int, float]]) -> list[dict]:
    """One worker job per cut (plain JSON, see :func:`run_proposal`)."""
    iter_dir = run.run_dir / f"iter_{i:03d}"
    jobs = []
    for group, width, estimate_us in cuts:
        job_dir = iter_dir / "proposals" / f"{group}-{width}"
        jobs.append({"group": group, "width": width, "estimated_ms": estimate_us / 1000.0,
                     "checkpoint": str(run.run_dir / run.last["checkpoint"]), "dir": str(job_dir),
                     "steps": run.settings.short_term_steps, "settings": run.settings.to_record(),
                     "result_path": str(job_dir / "result.json")})
    return jobs


def _run_proposals(run: Run, i: int, jobs: list[dict], notify: ProgressFn) -> list[dict]:
    """Every job's outcome (ok, whdr, error, checkpoint); StageFailed when all of them failed."""
    from mobiledepth.prune.workers import run_jobs

    def done(job: dict, res: dict) -> None:
        notify(Progress("prune", "proposal", info={"iteration": i, "group": job["group"], "width": job["width"],
                                                   **res}))

    slots = check_compute(run.settings.train_device, run.settings.precision, run.settings.workers)
    results = run_jobs(run_proposal, jobs, slots, run.settings.proposal_timeout_s, on_done=done)
    proposals = [{"group": job["group"], "width": job["width"], "estimated_ms": job["estimated_ms"],
                  "ok": bool(res.get("ok")), "whdr": res.get("whdr"), "error": res.get("error"),
                  "checkpoint": res.get("checkpoint")} for job, res in zip(jobs, results)]
    if not any(p["ok"] for p in proposals):
        raise StageFailed(f"iteration {i}: every proposal failed (first: {proposals[0]['error']}); "
                          f"fix the cause and resume with --resume {run.run_dir}")
    return proposals


def _adopt(run: Run, i: int, target_i: float, proposals: list[dict], notify: ProgressFn) -> dict:
    """The winning proposal as iteration ``i``: its checkpoint in iter_NNN/, measured when it may meet the target."""
    s = run.settings
    best = choose_proposal([p for p in proposals if p["ok"]], s.choose, run.last["whdr"], run.last["estimated_ms"])
    chosen_ckpt = run.run_dir / f"iter_{i:03d}" / "model.pt"
    shutil.copyfile(best["checkpoint"], chosen_ckpt)
    chosen = open_checkpoint(chosen_ckpt, s)
    entry = {"iteration": i, "target_ms": target_i * run.reference_ms(), "target_ratio": target_i,
             "estimated_ms": best["estimated_ms"], "measured_ms": None,
             "whdr": best["whdr"], "widths": chosen.widths(),
             "chosen": {"group": best["group"], "width": best["width"]},
             "checkpoint": str(chosen_ckpt.relative_to(run.run_dir)), "checkpoint_sha256": sha256_file(chosen_ckpt),
             "proposals": [{k: v for k, v in p.items() if k != "checkpoint"} for p in proposals]}
    if s.measure and run.estimated_ratio(best["estimated_ms"]) + run.correction() <= run.target_ratio():
        notify(Progress("prune", "measure", info={"iteration": i}))
        m = _measure(chosen, chosen_ckpt, s, chosen_ckpt.parent / "export", run.reference())
        entry.update(measured_ms=m["measured_ms"], measured=m["measured"])
    entry["finished_at"] = _now()
    return entry


def _drop_proposal_weights(jobs: list[dict]) -> None:
    """The chosen weights are in iter_NNN/model.pt; proposals keep result.json only."""
    for job in jobs:
        shutil.rmtree(Path(job["dir"]) / "finetune", ignore_errors=True)
        (Path(job["dir"]) / "pruned.pt").unlink(missing_ok=True)


def step(run: Run, notify: ProgressFn = silent) -> dict:
    """One NetAdapt iteration: plan the cuts, run the proposals, adopt the winner, save prune.json."""
    i = run.last["iteration"] + 1
    _check_can_continue(run, i)
    subject = open_checkpoint(run.run_dir / run.last["checkpoint"], run.settings)
    if subject.kind == "factory":
        subject.width_maps = run.width_maps  # one probe per group per run, not per iteration
    lut_target_us, cuts = plan_cuts(run, subject, i)
    target_i = lut_target_us / 1000.0 / run.first["estimated_ms"] + run.correction()
    if not cuts:
        now, target = run.latency_ratio(run.last), run.target_ratio()
        raise StageFailed(f"iteration {i}: no channel group can be cut to meet {target_i:.3f} of the reference's latency "
                          f"(now {now:.3f}, {now - target:.3f} above the target {target:.3f}); the target is "
                          "not reachable from here — raise --target-ms or lower --min-width")
    jobs = _proposal_jobs(run, i, cuts)
    notify(Progress("prune", "proposals", info={"iteration": i, "target_ms": target_i * run.reference_ms(),
                                                "target_ratio": target_i, "count": len(jobs)}))
    entry = _adopt(run, i, target_i, _run_proposals(run, i, jobs, notify), notify)
    run.record["iterations"].append(entry)
    run.save()
    _drop_proposal_weights(jobs)
    notify(Progress("prune", "iteration", info=entry))
    return entry


def iterate(run: Run, notify: ProgressFn = silent) -> None:
    """Iterations until the latest latency (measured, or estimated + gap) meets the target."""
    while run.needs_more():
        step(run, notify)


# ----------------------------------------------------------------------------- finish
def _final_model(run: Run, notify: ProgressFn) -> dict:
    """Long-term fine-tune of the last iteration, its WHDR; exported, benchmarked and evaluated when measuring."""
    s, run_dir, last = run.settings, run.run_dir, run.last
    final_dir = run_dir / "final"
    notify(Progress("prune", "long_term", info={"steps": s.long_term_steps}))
    tuned_dir = final_dir / "finetune"
    if tuned_dir.exists():
        shutil.rmtree(tuned_dir)
    tuned = fine_tune(str(run_dir / last["checkpoint"]), s.data, tuned_dir, s.long_term_steps, s, s.seed)
    final_ckpt = final_dir / "model.pt"
    final_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tuned, final_ckpt)
    final = {"checkpoint": str(final_ckpt.relative_to(run_dir)), "checkpoint_sha256": sha256_file(final_ckpt),
             "whdr": held_out_whdr(final_ckpt, s),
             "widths": last["widths"], "estimated_ms": last["estimated_ms"], "measured_ms": None, "export_dir": None,
             "long_term_steps": s.long_term_steps}
    if s.measure:
        notify(Progress("prune", "measure", info={"iteration": "final"}))
        m = _measure(open_checkpoint(final_ckpt, s), final_ckpt, s, final_dir / "export", run.reference())
        final.update(measured_ms=m["measured_ms"], measured=m["measured"],
                     export_dir=str(Path(m["run_dir"]).relative_to(run_dir)))
        if not m["measured"]["met"]:
            return final  # not the result: NetAdapt goes on (_settled_final)
        export = read_export_record(m["run_dir"])  # the artifact the store links the final step to
        final.update(artifact_sha256=export.tflite_artifact()["sha256"], params=export.model.get("params"))
        _bench_record(Path(m["run_dir"]), s)
        final["tflite_whdr"] = _evaluate_export(Path(m["run_dir"]), s)
    return final


def _settled_final(run: Run, notify: ProgressFn) -> dict:
    """The final model, measured under the target; when the long-term model's upper bound misses it,
    that measurement becomes the last iteration's and NetAdapt keeps cutting (never a success it did not measure)."""
    while True:
        final = _final_model(run, notify)
        if not run.settings.measure or final["measured"]["met"]:
            return final
        run.last.update(measured_ms=final["measured_ms"], measured=final["measured"], remeasured="final")
        run.save()
        notify(Progress("prune", "final_missed", info={"high": final["measured"]["high"],
                                                       "target_ratio": final["measured"]["target_ratio"]}))
        iterate(run, notify)


def finish(run: Run, store: str | os.PathLike | None | bool = False, notify: ProgressFn = silent) -> PruneResult:
    """Long-term fine-tune, export + benchmark on the device, eval, store ingestion (once; a done run is returned)."""
    if run.record["status"] != "done":
        run.record["final"] = _settled_final(run, notify)
        run.record["status"] = "done"
        run.record["finished_at"] = _now()
        run.save()
        if store is not False:
            run.record["store"] = _ingest(run.run_dir, run.record, store)
            run.save()
    final = run.record["final"]
    return PruneResult(run.run_dir, run.record, run.run_dir / final["checkpoint"],
                       run.run_dir / final["export_dir"] if final.get("export_dir") else None)


def _bench_record(export_dir: Path, settings: PruneSettings) -> None:
    """bench.json beside the final export (the bench stage), so the store links latency to the artifact."""
    from mobiledepth.bench import bench

    bench(export_dir, devices=[settings.device], delegate=settings.delegate, threads=settings.threads,
          runs=settings.measure_runs)


def _evaluate_export(export_dir: Path, settings: PruneSettings) -> float:
    """WHDR of the exported TFLite model on the held-out split at its own (deploy) input size;
    ``eval.json`` beside the export, for the store."""
    from mobiledepth.evaluate.evaluate import evaluate

    tflite = read_export_record(export_dir).tflite_artifact()
    result = evaluate(str(export_dir / tflite["path"]), settings.data, backend="tflite", split=settings.val_split,
                      limit=int(settings.val_limit) if settings.val_limit else None, out=export_dir / "eval.json")
    return result.value


def _ingest(run_dir: Path, record: dict, store) -> dict:
    """Put the run (every step), the final export, its benchmark and its measured accuracy into the shared store."""
    from mobiledepth.store import open_store

    with open_store(store if store else None) as db:
        summary = {"path": str(db.path), "records": 0}
        export_dir = run_dir / record["final"]["export_dir"] if record["final"].get("export_dir") else None
        for name in ("export.json", "bench.json", "eval.json"):
            if export_dir is not None and (export_dir / name).exists():
                db.ingest_file(export_dir / name)
                summary["records"] += 1
        db.ingest(record, base_dir=run_dir)  # the trajectory: one store row per step
        summary["records"] += 1
    return summary


# ----------------------------------------------------------------------------- the stage
def prune(settings: PruneSettings, out: str | os.PathLike | None = None,
          store: str | os.PathLike | None | bool = False, progress: ProgressFn | None = None) -> PruneResult:
    """Run NetAdapt from a trained checkpoint to the target latency (``out``: default :func:`default_run_dir`).

    ``store``: a store path, ``None`` for the default store, ``False`` to skip ingestion (checked first)."""
    from mobiledepth.store import check_store_choice

    check_store_choice(store)
    notify = progress or silent
    run = start(settings, out, notify)
    iterate(run, notify)
    return finish(run, store, notify)


def resume(run_dir: str | os.PathLike, workers: int | None = None, choose: str | None = None,
           store: str | os.PathLike | None | bool = False, progress: ProgressFn | None = None,
           train_device: str | None = None, precision: str | None = None, model: str | None = None,
           seed: int | None = None) -> PruneResult:
    """Continue the run saved in ``run_dir`` where it stopped (``workers``, the device and ``seed`` may change;
    ``choose`` must not; ``model``: a factory run's ``module:factory``, given again)."""
    from mobiledepth.store import check_store_choice

    check_store_choice(store)
    notify = progress or silent
    run = reopen(run_dir, workers, choose, train_device, precision, model, seed)
    iterate(run, notify)
    return finish(run, store, notify)
