"""Proof for issue 6 §4: NetAdapt to ~60 % of the measured host latency vs a uniformly thinned model.

    .venv/bin/python benchmarks/prune_host.py [--out runs/bench-prune] [--train-minutes 6]

1. generates DIW-format data with ``mobiledepth.data.synth`` (64x64; reused when present);
2. trains a mid-size MobileNetV2 + FBNet spec (written to ``OUT/mdepth-mid.yaml``: the paper's
   architecture at about half width and fewer blocks, so that an hour on 2 CPU cores covers
   training, a 128x128 lookup table and a dozen NetAdapt iterations) with the training
   pipeline (``mobiledepth.train.trainer.train``) for ``--train-minutes``;
3. builds the host lookup table at the deploy size (128x128) and measures the trained model
   end to end (export chain → fp32 TFLite → ``android_bench`` host runner); target = 60 %;
4. runs ``mobiledepth.prune.netadapt.prune`` (fine-tune and WHDR at 64x64, latency at 128x128);
5. baseline: one width multiplier for every group, chosen so the LUT estimate matches the
   pruned model's, cut from the same trained weights (largest-L2 filters) and fine-tuned with
   the same number of steps NetAdapt spent on its chosen path (iterations x short-term +
   long-term); measured the same way;
6. writes ``OUT/benchmark.json`` and ``OUT/trajectory.png`` (latency vs WHDR per iteration).

Exit 1 if the pruned model's measured latency misses the target.
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


def uniform_spec(spec: dict, table, target_us: float, multiple: int = 8):
    """The single width multiplier whose LUT estimate is closest to ``target_us`` (structure kept)."""
    from mobiledepth.prune.lut import variant_specs

    best = None
    for step in range(100, 9, -1):
        m = step / 100
        (_, variant), = variant_specs(spec, (m,), 0, multiple)
        est = table.estimate(variant).total_us
        if best is None or abs(est - target_us) < abs(best[2] - target_us):
            best = (m, variant, est)
    return best


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-prune"))
    parser.add_argument("--data", type=Path, default=None, help="DIW-format data (default: OUT/data, generated)")
    parser.add_argument("--train-n", type=int, default=400)
    parser.add_argument("--test-n", type=int, default=150)
    parser.add_argument("--train-minutes", type=float, default=6.0)
    parser.add_argument("--fraction", type=float, default=0.6, help="target = fraction x measured latency")
    parser.add_argument("--short-term-steps", type=int, default=20)
    parser.add_argument("--long-term-steps", type=int, default=300)
    parser.add_argument("--initial-reduction", type=float, default=0.05)
    parser.add_argument("--decay", type=float, default=0.96)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--points", type=int, default=4, help="LUT grid points per channel dim")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per end-to-end measurement")
    parser.add_argument("--rounds", type=int, default=300, help="interleaved timing rounds at the end")
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


def table_and_base(args, out: Path, spec_path: Path, spec: dict, start_ckpt: Path, report: dict):
    """The host lookup table at the deploy size and the trained model measured end to end; returns (lut, base)."""
    from mobiledepth.prune.lut import build_lut, measure_spec

    t0 = time.perf_counter()
    log("building the host lookup table at 128x128")
    lut = build_lut(str(spec_path), (128, 128), "host", "cpu", 1, out=out / "lut.json", points=args.points,
                    statistic=args.statistic)
    report["lut"] = {"entries": len(lut.table.entries), "measured": lut.measured, "reused": lut.reused,
                     "convert_s": round(lut.convert_s, 1), "time_s": round(lut.time_s, 1)}
    report["timings_s"]["lut"] = round(time.perf_counter() - t0, 1)
    base = measure_spec(spec, (128, 128), "host", "cpu", 1, out / "base_export", checkpoint=start_ckpt, runs=args.runs,
                        statistic=args.statistic)
    return lut, base


def prune_settings(args, out: Path, data: Path, start_ckpt: Path, target_ms: float):
    """The NetAdapt run: fine-tune and WHDR at 64x64 on the held-out test split, latency at 128x128."""
    from mobiledepth.prune.netadapt import PruneSettings

    return PruneSettings(model=None, checkpoint=str(start_ckpt), target_ms=target_ms, data=str(data),
                         lut=str(out / "lut.json"), input_size=(128, 128), train_input_size=(64, 64), batch_size=8,
                         threads=1, lr=1e-4, val_split="test", short_term_steps=args.short_term_steps,
                         long_term_steps=args.long_term_steps, initial_reduction=args.initial_reduction,
                         decay=args.decay, workers=args.workers, measure_runs=args.runs)


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
    report["netadapt"] = {"measured_ms": final["measured_ms"], "estimated_ms": final["estimated_ms"], "whdr": final["whdr"],
                          "iterations": len(record["iterations"]) - 1, "widths": final["widths"],
                          "wall_s": round(time.perf_counter() - t0, 1),
                          "trajectory": [{"iteration": it["iteration"], "estimated_ms": it["estimated_ms"],
                                          "measured_ms": it["measured_ms"], "whdr": it["whdr"], "chosen": it["chosen"]}
                                         for it in record["iterations"]]}
    log(f"NetAdapt: {final['measured_ms']:.3f} ms measured (target {settings.target_ms:.3f}), WHDR {final['whdr']:.4f}")
    return record


def uniform_baseline(args, out: Path, spec: dict, start_ckpt: Path, lut, settings, report: dict) -> dict:
    """One width multiplier for every group at NetAdapt's estimate, fine-tuned with the same step budget."""
    from mobiledepth.arch import load_checkpoint, save_checkpoint
    from mobiledepth.prune.groups import group_widths
    from mobiledepth.prune.lut import measure_spec
    from mobiledepth.prune.netadapt import fine_tune, held_out_whdr
    from mobiledepth.prune.surgery import prune_model

    t0 = time.perf_counter()
    budget = report["netadapt"]["iterations"] * args.short_term_steps + args.long_term_steps
    m, uniform, est = uniform_spec(spec, lut.table, report["netadapt"]["estimated_ms"] * 1000)
    trained_model, _, _ = load_checkpoint(start_ckpt, with_heads=False)
    cut, cut_spec = prune_model(trained_model, spec, group_widths(uniform))
    cut_ckpt = save_checkpoint(out / "uniform" / "cut.pt", cut, cut_spec)
    tuned = fine_tune(str(cut_ckpt), settings.data, out / "uniform" / "finetune", budget, settings, seed=0)
    whdr = held_out_whdr(tuned, settings)
    measured = measure_spec(cut_spec, (128, 128), "host", "cpu", 1, out / "uniform" / "export", checkpoint=tuned,
                            runs=args.runs, statistic=args.statistic)
    report["uniform"] = {"multiplier": m, "estimated_ms": est / 1000, "measured_ms": measured["latency_us"] / 1000,
                         "whdr": whdr, "fine_tune_steps": budget, "widths": group_widths(cut_spec),
                         "wall_s": round(time.perf_counter() - t0, 1)}
    log(f"uniform x{m}: {measured['latency_us'] / 1000:.3f} ms measured, WHDR {whdr:.4f} ({budget} steps)")
    return measured


def side_by_side(args, models: dict[str, str], report: dict) -> float:
    """The models timed in the same run, interleaved (the machine is shared: absolute numbers drift
    between moments, ratios measured side by side do not); returns NetAdapt / base."""
    from mobiledepth.prune.lut import interleaved_host

    side = interleaved_host(models, rounds=args.rounds)
    report["side_by_side"] = {k: {m: v for m, v in d.items() if m != "samples_us"} for k, d in side.items()}
    ratio = side["netadapt"][args.statistic] / side["base"][args.statistic]
    report["side_by_side_ratio"] = ratio
    log("side by side (µs, " + args.statistic + "): " + ", ".join(f"{k} {v[args.statistic]:.0f}" for k, v in side.items())
        + f"; NetAdapt/base = {ratio:.3f} (target fraction {args.fraction})")
    return ratio


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    import yaml

    from mobiledepth.prune.netadapt import held_out_whdr

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
    lut, base = table_and_base(args, out, spec_path, spec, start_ckpt, report)
    base_ms = base["latency_us"] / 1000
    target = args.fraction * base_ms
    settings = prune_settings(args, out, data, start_ckpt, target)
    base_whdr = held_out_whdr(start_ckpt, settings)
    report["base"] = {"measured_ms": base_ms, "median_ms": base["median_us"] / 1000,
                      "estimated_ms": lut.table.estimate(spec).total_ms, "whdr": base_whdr,
                      "params": sum(p.numel() for p in model.parameters())}
    log(f"trained model: {base_ms:.3f} ms measured, WHDR {base_whdr:.4f}; target {target:.3f} ms")
    run_dir = out / "netadapt"
    final = run_netadapt(settings, run_dir, report)["final"]
    uniform = uniform_baseline(args, out, spec, start_ckpt, lut, settings, report)
    ratio = side_by_side(args, {"base": base["tflite"],
                                "netadapt": str(run_dir / final["export_dir"] / "model_fp32.tflite"),
                                "uniform": uniform["tflite"]}, report)
    report["target_ms"] = target
    report["target_met"] = (final["measured_ms"] is not None and final["measured_ms"] <= target
                            and ratio <= args.fraction)
    report["netadapt_more_accurate"] = final["whdr"] < report["uniform"]["whdr"]
    report["timings_s"]["total"] = round(time.perf_counter() - started, 1)
    (out / "benchmark.json").write_text(json.dumps(report, indent=2))
    plot(report, out / "trajectory.png")
    log(f"wrote {out / 'benchmark.json'} and {out / 'trajectory.png'}")
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
    ax.plot([report["uniform"]["measured_ms"]], [report["uniform"]["whdr"]], "X", ms=11,
            label=f"uniform x{report['uniform']['multiplier']} (same steps)")
    ax.axvline(report["target_ms"], color="gray", ls="--", label="target")
    ax.set_xlabel("latency at 128x128 on host (ms)")
    ax.set_ylabel("WHDR (held-out, lower is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
