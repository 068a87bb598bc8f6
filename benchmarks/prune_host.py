"""Proof for issue 6 §4: NetAdapt to ~60 % of the measured host latency vs a uniformly thinned model.

    .venv/bin/python benchmarks/prune_host.py [--out runs/bench-prune] [--train-minutes 6]

1. generates DIW-format data with ``mobiledepth.data.synth`` (64x64; reused when present);
2. trains a mid-size MobileNetV2 + FBNet spec (written to ``OUT/mdepth-mid.yaml``: the paper's
   architecture at about half width and fewer blocks, so that an hour on 2 CPU cores covers
   training, a 128x128 lookup table and a dozen NetAdapt iterations) with the training
   pipeline (``mobiledepth.train.trainer.train``) for ``--train-minutes``;
3. builds the host lookup table at the deploy size (128x128);
4. runs ``mobiledepth.prune.netadapt.prune`` with ``target_ratio = --fraction`` (fine-tune and WHDR
   at 64x64, latency at 128x128): every candidate is timed interleaved with the unpruned model and
   "met" means the upper 95 % bound of the latency ratio is under the target;
5. baseline: one width multiplier for every group at NetAdapt's latency *measured side by side*:
   the multipliers around NetAdapt's LUT estimate (the widest one meeting it and its neighbours)
   are cut from the same trained weights (largest-L2 filters), exported and timed interleaved with
   NetAdapt's model and the unpruned one; the one with the closest ratio is fine-tuned with the
   same number of steps NetAdapt spent on its chosen path (iterations x short-term + long-term);
6. times NetAdapt's and the uniform model side by side with the unpruned one (the table's
   statistic per turn, as NetAdapt decided with);
7. writes ``RUN_DIR/benchmark.json`` and ``RUN_DIR/trajectory.png`` (latency vs WHDR per iteration).

Training, data and the table are reused by later runs (``--run-dir`` and ``--seed`` per run).
Exit 1 if the pruned model's upper confidence bound misses the target.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MID_SPEC = {
    "name": "mdepth-mid",
    "description": "MobileNetV2 + FBNet at about half width (benchmark model for pruning)",
    "input_size": [128, 128],
    "architecture": {
        "encoder": {"type": "mobilenetv2", "stem": 16,
                    "stages": [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2], [6, 48, 2, 2], [6, 64, 1, 1],
                               [6, 96, 1, 2], [6, 160, 1, 1]]},
        "decoder": {"type": "fbnet", "final_upsample": "bilinear", "stages": [
            {"out": 64, "expansion": 3, "kernel": 5, "groups": 1},
            {"out": 48, "expansion": 3, "kernel": 5, "groups": 1},
            {"out": 32, "expansion": 3, "kernel": 3, "groups": 1},
            {"out": 24, "expansion": 3, "kernel": 3, "groups": 1},
            {"out": 16, "expansion": 2, "kernel": 3, "groups": 1}]},
        "heads": [2, 3],
    },
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ensure_data(root: Path, train_n: int, test_n: int) -> None:
    from mobiledepth.data.synth import generate

    if not (root / "DIW_Annotations" / "DIW_train.csv").exists():
        generate(root, train_n, (64, 64), seed=0, split="train")
    if not (root / "DIW_Annotations" / "DIW_test.csv").exists():
        generate(root, test_n, (64, 64), seed=0, split="test", pairs_per_image=4)


def uniform_estimates(spec: dict, table, multiple: int = 8) -> list[tuple[float, dict, float]]:
    """(multiplier, spec, LUT estimate in µs) for every uniform width multiplier 1.00 .. 0.10 (widest first)."""
    from mobiledepth.prune.variants import variant_specs

    out = []
    for step in range(100, 9, -1):
        (_, variant), = variant_specs(spec, (step / 100,), 0, multiple)
        out.append((step / 100, variant, table.estimate(variant).total_us))
    return out


def uniform_candidates(estimates: list[tuple[float, float]], target_us: float, around: int = 1) -> list[float]:
    """Multipliers worth timing against a target: the widest one whose estimate meets ``target_us`` and
    ``around`` neighbours either side, distinct widths only (``estimates``: (multiplier, µs), widest first).

    The walk stops at the first multiplier that meets the target: below it the estimate is not monotonic
    (a group pinned at its minimum width changes the graph; x0.43 estimated above x0.62 here), so "the
    closest estimate anywhere" can land far from the target."""
    distinct: list[tuple[float, float]] = []
    for m, est in estimates:
        if not distinct or est != distinct[-1][1]:
            distinct.append((m, est))
    hit = next((i for i, (_, est) in enumerate(distinct) if est <= target_us), len(distinct) - 1)
    return [m for m, _ in distinct[max(0, hit - around): hit + around + 1]]


def closest_ratio(ratios: dict[float, float], target_ratio: float) -> float:
    """The multiplier whose measured latency ratio is closest to ``target_ratio`` (ties: the wider one)."""
    return min(ratios, key=lambda m: (abs(ratios[m] - target_ratio), -m))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-prune"))
    parser.add_argument("--data", type=Path, default=None, help="DIW-format data (default: OUT/data, generated)")
    parser.add_argument("--train-n", type=int, default=400)
    parser.add_argument("--test-n", type=int, default=150)
    parser.add_argument("--train-minutes", type=float, default=6.0)
    parser.add_argument("--fraction", type=float, default=0.6, help="target = fraction x measured latency")
    parser.add_argument("--short-term-steps", type=int, default=10)
    parser.add_argument("--long-term-steps", type=int, default=100)
    parser.add_argument("--initial-reduction", type=float, default=0.1)
    parser.add_argument("--decay", type=float, default=0.96)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--choose", default="accuracy", choices=["accuracy", "loss-per-ms"],
                        help="NetAdapt's proposal choice rule (PruneSettings.choose)")
    parser.add_argument("--points", type=int, default=4, help="LUT grid points per channel dim")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per end-to-end measurement")
    parser.add_argument("--rounds", type=int, default=60, help="interleaved rounds of the side-by-side timing at the end")
    parser.add_argument("--run-dir", type=Path, default=None, help="NetAdapt run directory (default: OUT/netadapt)")
    parser.add_argument("--seed", type=int, default=0, help="fine-tuning seed of NetAdapt and the uniform baseline")
    parser.add_argument("--no-uniform", action="store_true", help="skip the uniform-width baseline")
    parser.add_argument("--statistic", default="min", choices=["median", "p5", "min"],
                        help="latency statistic for the LUT and every measurement (p5: robust on a shared machine)")
    return parser.parse_args(argv)


def trained_start(args, out: Path, spec_path: Path, data: Path, report: dict) -> tuple[dict, object, Path]:
    """Train the mid-size model with the pipeline (once); returns (spec, model without heads, its checkpoint)."""
    from mobiledepth.arch import load_checkpoint, save_checkpoint
    from mobiledepth.train.trainer import train

    t0 = time.perf_counter()
    trained = out / "train" / "model.pt"
    if not trained.exists():
        log(f"training {MID_SPEC['name']} for {args.train_minutes} min at 64x64")
        result = train(config={"model": str(spec_path), "input_size": [64, 64], "batch_size": 8, "epochs": 1000,
                               "max_minutes": args.train_minutes, "optimizer": {"name": "adam", "lr": 1e-3},
                               "scheduler": {"name": "step", "step_epochs": 10, "gamma": 0.5},
                               "data": {"val_split": None}, "checkpoint": {"every_steps": 0}, "threads": 1,
                               "log_every": 200},
                       data=str(data), out=str(out / "train"))
        if result.model_path is None:  # stopped by the time budget: last.pt holds the weights
            model, spec, _ = load_checkpoint(result.last_checkpoint, with_heads=True)
            save_checkpoint(trained, model, spec)
        report["train_steps"] = result.steps
    report["timings_s"]["train"] = round(time.perf_counter() - t0, 1)
    model, spec, _ = load_checkpoint(trained, with_heads=False)
    return spec, model, save_checkpoint(out / "trained_noheads.pt", model, spec)


def lookup_table(args, out: Path, spec_path: Path, report: dict):
    """The host lookup table at the deploy size: ``OUT/lut.json`` as it is when it fits the spec, the grid
    and the statistic (so every run of a study plans with the same table, whatever other runs did to the
    shared measurement cache meanwhile); otherwise built, from the measurement cache where it can."""
    from types import SimpleNamespace

    from mobiledepth.arch import resolve_spec, spec_hash
    from mobiledepth.prune.lut import build_lut, load_table

    t0 = time.perf_counter()
    path = out / "lut.json"
    if path.exists():
        table = load_table(path)
        meta = table.meta
        if (meta.get("spec_hash"), meta.get("points"), meta.get("statistic")) == (
                spec_hash(resolve_spec(str(spec_path))), args.points, args.statistic):
            log(f"reusing the lookup table {path} ({len(table.entries)} entries)")
            report["lut"] = {"entries": len(table.entries), "reused_table": str(path)}
            return SimpleNamespace(table=table)
    log("building the host lookup table at 128x128")
    lut = build_lut(str(spec_path), (128, 128), "host", "cpu", 1, out=out / "lut.json", points=args.points,
                    statistic=args.statistic)
    report["lut"] = {"entries": len(lut.table.entries), "measured": lut.measured, "reused": lut.reused,
                     "convert_s": round(lut.convert_s, 1), "time_s": round(lut.time_s, 1)}
    report["timings_s"]["lut"] = round(time.perf_counter() - t0, 1)
    return lut


def prune_settings(args, out: Path, data: Path, start_ckpt: Path):
    """The NetAdapt run: fine-tune and WHDR at 64x64 on the held-out test split, latency at 128x128."""
    from mobiledepth.prune.netadapt import PruneSettings

    return PruneSettings(model=None, checkpoint=str(start_ckpt), target_ms=None, target_ratio=args.fraction, data=str(data),
                         lut=str(out / "lut.json"), input_size=(128, 128), train_input_size=(64, 64), batch_size=8,
                         threads=1, lr=1e-4, val_split="test", short_term_steps=args.short_term_steps,
                         long_term_steps=args.long_term_steps, initial_reduction=args.initial_reduction,
                         decay=args.decay, workers=args.workers, measure_runs=args.runs, seed=args.seed,
                         choose=args.choose)


def run_netadapt(settings, run_dir: Path, report: dict) -> dict:
    """NetAdapt from the trained model (resumed when ``run_dir`` holds a run); returns its record."""
    from mobiledepth.prune import netadapt

    t0 = time.perf_counter()

    def progress(event) -> None:
        if event.event == "iteration":
            info = event.info
            log(f"iteration {info['iteration']}: {info.get('chosen')} est {info['estimated_ms']:.3f} ms "
                f"measured {info.get('measured_ms')} WHDR {info['whdr']:.4f}")

    if (run_dir / "prune.json").exists():
        result = netadapt.resume(run_dir, store=False, progress=progress)
    else:
        result = netadapt.prune(settings, out=run_dir, store=False, progress=progress)
    record, final = result.record, result.record["final"]
    report["netadapt"] = {"measured_ms": final["measured_ms"], "measured": final.get("measured"),
                          "reference_ms": record["iterations"][0]["measured_ms"], "estimated_ms": final["estimated_ms"], "whdr": final["whdr"],
                          "iterations": len(record["iterations"]) - 1, "widths": final["widths"],
                          "wall_s": round(time.perf_counter() - t0, 1),
                          "trajectory": [{"iteration": it["iteration"], "estimated_ms": it["estimated_ms"],
                                          "measured_ms": it["measured_ms"], "whdr": it["whdr"], "chosen": it["chosen"]}
                                         for it in record["iterations"]]}
    m = final["measured"]
    log(f"NetAdapt: {m['ratio']:.3f}x the unpruned model (95 % CI {m['low']:.3f}-{m['high']:.3f}; target "
        f"{m['target_ratio']:.3f}), {final['measured_ms']:.3f} ms, WHDR {final['whdr']:.4f}")
    return record


def turn_value(args):
    """One turn's timed block as one number under ``--statistic`` (the statistic NetAdapt decided with)."""
    from mobiledepth.prune.timing import statistic_of

    return lambda block: statistic_of(block, args.statistic)


def matched_uniform(args, spec: dict, start_ckpt: Path, lut, netadapt_tflite: Path, reference: Path,
                    work: Path, report: dict) -> tuple[float, dict, float]:
    """The uniform multiplier at NetAdapt's latency *measured side by side*: the candidates around
    NetAdapt's LUT estimate are cut, exported and timed interleaved with NetAdapt's model and the
    unpruned one; the one whose ratio is closest to NetAdapt's wins. Returns (multiplier, spec, estimate µs)."""
    from mobiledepth.arch import load_checkpoint, save_checkpoint
    from mobiledepth.prune.groups import group_widths
    from mobiledepth.prune.timing import time_against
    from mobiledepth.prune.variants import export_spec
    from mobiledepth.prune.surgery import prune_model

    from mobiledepth.prune.groups import set_group_widths

    estimates = uniform_estimates(spec, lut.table)
    by_multiplier = {m: (variant, est) for m, variant, est in estimates}
    # NetAdapt's final widths estimated by this table (the run may have planned with an older one)
    target_us = lut.table.estimate(set_group_widths(spec, report["netadapt"]["widths"])).total_us
    candidates = uniform_candidates([(m, est) for m, _, est in estimates], target_us)
    trained_model, _, _ = load_checkpoint(start_ckpt, with_heads=False)
    files = {}
    for m in candidates:
        cut, cut_spec = prune_model(trained_model, spec, group_widths(by_multiplier[m][0]))
        ckpt = save_checkpoint(work / f"x{m:g}" / "cut.pt", cut, cut_spec)
        files[f"x{m:g}"], _ = export_spec(cut_spec, (128, 128), work / f"x{m:g}" / "export", checkpoint=ckpt)
    timing = time_against({**files, "netadapt": netadapt_tflite}, reference, rounds=20, max_rounds=args.rounds,
                          reduce=turn_value(args))
    ratios = {m: timing.ratios[f"x{m:g}"].ratio for m in candidates}
    chosen = closest_ratio(ratios, timing.ratios["netadapt"].ratio)
    report["uniform_search"] = {"candidates": {f"x{m:g}": {"estimated_ms": by_multiplier[m][1] / 1000,
                                                           "ratio": ratios[m]} for m in candidates},
                                "netadapt_ratio": timing.ratios["netadapt"].ratio, "rounds": timing.rounds,
                                "chosen": chosen}
    log("uniform candidates measured: " + ", ".join(f"x{m:g} {ratios[m]:.3f}" for m in candidates)
        + f"; NetAdapt {timing.ratios['netadapt'].ratio:.3f} -> x{chosen:g}")
    return chosen, by_multiplier[chosen][0], by_multiplier[chosen][1]


def uniform_baseline(args, spec: dict, start_ckpt: Path, lut, settings, run_dir: Path, netadapt_tflite: Path,
                     reference: Path, report: dict) -> Path:
    """One width multiplier for every group at NetAdapt's measured latency, fine-tuned with the same step
    budget; returns its TFLite file (timed side by side with NetAdapt's model and the unpruned one)."""
    from mobiledepth.arch import load_checkpoint
    from mobiledepth.prune.groups import group_widths
    from mobiledepth.prune.variants import export_spec
    from mobiledepth.prune.netadapt import fine_tune, held_out_whdr

    t0 = time.perf_counter()
    work = run_dir / "uniform"
    budget = report["netadapt"]["iterations"] * args.short_term_steps + args.long_term_steps
    m, _, est = matched_uniform(args, spec, start_ckpt, lut, netadapt_tflite, reference, work, report)
    cut_ckpt = work / f"x{m:g}" / "cut.pt"
    tuned = fine_tune(str(cut_ckpt), settings.data, work / "finetune", budget, settings, seed=args.seed)
    whdr = held_out_whdr(tuned, settings)
    _, cut_spec, _ = load_checkpoint(tuned, with_heads=False)
    tflite, _ = export_spec(cut_spec, (128, 128), work / "export", checkpoint=tuned)
    report["uniform"] = {"multiplier": m, "estimated_ms": est / 1000, "whdr": whdr, "fine_tune_steps": budget,
                         "widths": group_widths(cut_spec), "wall_s": round(time.perf_counter() - t0, 1)}
    log(f"uniform x{m}: WHDR {whdr:.4f} ({budget} steps)")
    return tflite


def side_by_side(args, reference: Path, models: dict[str, Path], report: dict) -> dict:
    """The pruned models timed in one session interleaved with the unpruned reference (the shared
    statistic: ``--statistic`` per turn, median per-round ratio with its 95 % order-statistic CI);
    returns {name: RatioInterval}."""
    from mobiledepth.prune.timing import time_against

    timing = time_against(models, reference, rounds=args.rounds, max_rounds=args.rounds, reduce=turn_value(args))
    report["side_by_side"] = {"rounds": timing.rounds, "reference_ms": timing.reference_us / 1000,
                              **{name: r.to_dict() for name, r in timing.ratios.items()}}
    log("side by side vs the unpruned model: " + ", ".join(
        f"{name} {r.ratio:.3f}x [{r.low:.3f}, {r.high:.3f}]" for name, r in timing.ratios.items())
        + f" (target {args.fraction})")
    return timing.ratios


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    import yaml

    torch.set_num_threads(1)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "timings_s": {}}
    started = time.perf_counter()
    spec_path = out / "mdepth-mid.yaml"
    spec_path.write_text(yaml.safe_dump(MID_SPEC, sort_keys=False))
    data = args.data or out / "data"
    ensure_data(data, args.train_n, args.test_n)
    spec, model, start_ckpt = trained_start(args, out, spec_path, data, report)
    lut = lookup_table(args, out, spec_path, report)
    settings = prune_settings(args, out, data, start_ckpt)
    run_dir = args.run_dir or out / "netadapt"
    record = run_netadapt(settings, run_dir, report)
    final, first = record["final"], record["iterations"][0]
    report["base"] = {"measured_ms": first["measured_ms"], "estimated_ms": first["estimated_ms"], "whdr": first["whdr"],
                      "params": sum(p.numel() for p in model.parameters())}
    report["target_ratio"], report["target_ms"] = args.fraction, record["target_ms"]
    # met: the final model's upper 95 % bound, timed interleaved with the unpruned model, is under the target
    report["target_met"] = bool(final.get("measured") and final["measured"]["met"])
    if not args.no_uniform:
        netadapt_tflite, reference = run_dir / final["export_dir"] / "model_fp32.tflite", run_dir / first["reference_tflite"]
        models = {"netadapt": netadapt_tflite,
                  "uniform": uniform_baseline(args, spec, start_ckpt, lut, settings, run_dir, netadapt_tflite, reference,
                                              report)}
        side_by_side(args, reference, models, report)
    if "uniform" in report:
        report["netadapt_more_accurate"] = final["whdr"] < report["uniform"]["whdr"]
    report["timings_s"]["total"] = round(time.perf_counter() - started, 1)
    (run_dir / "benchmark.json").write_text(json.dumps(report, indent=2))
    if "uniform" in report:
        plot(report, run_dir / "trajectory.png")
    log(f"wrote {run_dir / 'benchmark.json'}; target met: {report['target_met']}")
    return 0 if report["target_met"] else 1


def plot(report: dict, path: Path) -> None:
    """Latency (LUT estimate, and measured where measured) vs WHDR along the NetAdapt path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traj = report["netadapt"]["trajectory"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([t["estimated_ms"] for t in traj], [t["whdr"] for t in traj], "o-", label="NetAdapt iterations (LUT estimate)")
    measured = [t for t in traj if t["measured_ms"] is not None]
    ax.plot([t["measured_ms"] for t in measured], [t["whdr"] for t in measured], "s", label="measured on host")
    ax.plot([report["netadapt"]["measured_ms"]], [report["netadapt"]["whdr"]], "*", ms=14, label="NetAdapt + long fine-tune")
    side = report["side_by_side"]
    ax.plot([side["uniform"]["ratio"] * side["reference_ms"]], [report["uniform"]["whdr"]], "X", ms=11,
            label=f"uniform x{report['uniform']['multiplier']} (same steps)")
    ax.axvline(report["target_ratio"] * side["reference_ms"], color="gray", ls="--", label="target")
    ax.set_xlabel("latency at 128x128 on host (ms)")
    ax.set_ylabel("WHDR (held-out, lower is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
