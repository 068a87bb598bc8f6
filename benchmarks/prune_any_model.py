"""Proof for issue 12: the whole toolkit on a model nobody here wrote, NetAdapt against uniform width scaling.

    nice -n 5 .venv/bin/python benchmarks/prune_any_model.py --model benchmarks.public_models:basic_unet \\
        --out runs/bench-any/basic_unet --seeds 0,1,2

Per model (a ``module:factory``; every step through the real CLI, as docs/prune.md's worked example, except
the extra seeds and the baseline, which call the stage functions with the same settings):

1. ``mobiledepth data synth`` train and test splits (DIW format) at the deploy size;
2. ``mobiledepth train`` (``--steps``), ``export`` with parity, ``eval`` of the exported TFLite file;
3. ``mobiledepth lut build`` (timed; its graph correction fitted on ``--calibrate``) and ``lut validate``
   (uniform variants ``--validate``; the ratio error max / median over the variants);
4. ``mobiledepth prune --target-ratio R`` (seed 0; seeds 1.. through ``netadapt.prune`` with seed 0's settings):
   wall time, iterations, the final model's measured ratio with its 95 % CI, met = upper bound <= R;
5. per seed, the uniform baseline: ``prune.graph.uniform_prune`` (every group by one ratio, Torch-Pruning's
   magnitude ranking, widths on ``--multiple``) of the same trained weights at NetAdapt's latency measured side
   by side: the uniform cuts around NetAdapt's LUT estimate, then further ones until the measured ratios
   bracket NetAdapt's, each exported and timed interleaved with NetAdapt's model and the unpruned one. The
   uniform ladder is coarse, so the two cuts either side are each fine-tuned with the steps NetAdapt spent on
   its path (iterations x short-term + long-term) and scored; all three are timed side by side again and the
   uniform WHDR is interpolated (linearly in the latency ratio) at NetAdapt's measured ratio;
6. ``mobiledepth bench`` of seed 0's final export and ``mobiledepth report``; prints a markdown table,
   writes ``OUT/benchmark.json``. Settings and numbers measured here: docs/benchmarks.md.

Every step is skipped when its output exists (re-run to resume). Exit 1 when a seed's target was not met.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.prune_host import log, uniform_candidates  # noqa: E402
from benchmarks.prune_seeds import mean_se  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="benchmarks.public_models:basic_unet", help="module:factory")
    parser.add_argument("--out", type=Path, default=None, help="default: runs/bench-any/<factory name>")
    parser.add_argument("--size", default="64x64", help="deploy = train size HxW")
    parser.add_argument("--train-n", type=int, default=200)
    parser.add_argument("--test-n", type=int, default=60)
    parser.add_argument("--train-steps", type=int, default=150)
    parser.add_argument("--target-ratio", type=float, default=0.7)
    parser.add_argument("--short-term-steps", type=int, default=10)
    parser.add_argument("--long-term-steps", type=int, default=50)
    parser.add_argument("--initial-reduction", type=float, default=0.3)
    parser.add_argument("--lr", type=float, default=1e-4,
                        help="prune --lr: the fine-tuning rate of NetAdapt and of the uniform cuts (a converged parent "
                             "keeps its WHDR at 1e-5, loses about 0.01 at 1e-4: docs/benchmarks.md)")
    parser.add_argument("--seeds", default="0", help="comma-separated fine-tuning seeds, e.g. 0,1,2")
    parser.add_argument("--points", type=int, default=3, help="LUT grid points per channel dimension")
    parser.add_argument("--calibrate", default="1.0,0.6,0.4",
                        help="lut build --calibrate (two points fit the thin variants badly: docs/benchmarks.md)")
    parser.add_argument("--validate", default="1.0,0.75,0.35", help="lut validate --multipliers")
    parser.add_argument("--multiple", type=int, default=8,
                        help="lut build --multiple: the width grid of the table, NetAdapt and the uniform cuts "
                             "(16 on an AVX-512 host: XNNPACK's output-channel tiles, docs/prune.md)")
    parser.add_argument("--statistic", default="min", choices=["median", "p5", "min"])
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds of the side-by-side timings")
    parser.add_argument("--no-prune", action="store_true", help="stop after lut validate (steps 1-3)")
    return parser.parse_args(argv)


def cli(*args, out: Path | None = None) -> tuple[float, str]:
    """Run ``mobiledepth *args`` (must exit 0); returns (wall seconds, stdout)."""
    command = [sys.executable, "-m", "mobiledepth", *map(str, args)]
    log("$ mobiledepth " + " ".join(map(str, args)))
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"mobiledepth {args[0]} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start, proc.stdout


def once(report: dict, key: str, done: Path, *args) -> None:
    """Run a CLI step unless ``done`` exists; its wall time goes to ``report["timings_s"][key]``."""
    if done.exists():
        log(f"reusing {done}")
        return
    report["timings_s"][key] = round(cli(*args)[0], 1)


def pipeline(args, out: Path, size: str, report: dict) -> None:
    """Data, train, export with parity, eval, lut build, lut validate: the worked example up to prune."""
    data, ref = out / "data", args.model
    for split, n in (("train", args.train_n), ("test", args.test_n)):
        once(report, f"data_{split}", data / "DIW_Annotations" / f"DIW_{split}.csv",
             "data", "synth", "--out", data, "--n", n, "--size", size, "--split", split, "--pairs-per-image", 8)
    if not (out / "eval_random.json").exists():
        cli("eval", "--model", ref, "--data", data, "--out", out / "eval_random.json", "--no-store")
    report["eval_random_whdr"] = json.loads((out / "eval_random.json").read_text())["value"]
    once(report, "train", out / "train" / "model.pt", "train", "--model", ref, "--data", data, "--out", out / "train",
         "--input-size", size, "--steps", args.train_steps, "--batch-size", 4, "--lr", 1e-3, "--threads", 1)
    once(report, "export", out / "export" / "export.json", "export", "--model", ref, "--checkpoint",
         out / "train" / "model.pt", "--input-size", size, "--precision", "fp32", "--out", out / "export",
         "--no-store", "--quiet")
    exported = json.loads((out / "export" / "export.json").read_text())
    report["export"] = [{"precision": a.get("precision"), "parity": a.get("parity")} for a in exported["artifacts"]]
    if not (out / "eval.json").exists():
        report["timings_s"]["eval"] = round(cli("eval", "--model", out / "export" / "model_fp32.tflite", "--data", data,
                                                "--out", out / "eval.json", "--no-store")[0], 1)
    report["eval_tflite_whdr"] = json.loads((out / "eval.json").read_text())["value"]
    once(report, "lut_build", out / "lut.json", "lut", "build", "--model", ref, "--input-size", size, "--points",
         args.points, "--multiple", args.multiple, "--statistic", args.statistic, "--calibrate", args.calibrate, "--out", out / "lut.json")
    validation = out / "lut-variants" / "validation.json"
    once(report, "lut_validate", validation, "lut", "validate", out / "lut.json", "--model", ref, "--multipliers",
         args.validate)
    checked = json.loads(validation.read_text())
    report["lut_validate"] = {"max_abs_error": checked["max_abs_error"], "median_abs_error": checked["median_abs_error"],
                              "rows": [{k: r[k] for k in ("name", "estimate_ratio", "measured_ratio", "ratio_error",
                                                          "held_out")} for r in checked["rows"]]}
    table = json.loads((out / "lut.json").read_text())
    report["lut"] = {"entries": len(table["entries"]), "build_s": table.get("build_s"),
                     "correction": table.get("correction", {}).get("factor")}


def prune_seed(args, out: Path, size: str, seed: int) -> dict:
    """NetAdapt with one fine-tuning seed: the CLI for seed 0, the stage function (seed 0's settings) after."""
    run_dir = out / f"prune-seed{seed}"
    if not (run_dir / "prune.json").exists() or json.loads((run_dir / "prune.json").read_text())["status"] != "done":
        began = time.perf_counter()
        if seed == 0:
            cli("prune", "--model", args.model, "--checkpoint", out / "train" / "model.pt", "--lut", out / "lut.json",
                "--data", out / "data", "--target-ratio", args.target_ratio, "--input-size", size,
                "--short-term-steps", args.short_term_steps, "--long-term-steps", args.long_term_steps,
                "--initial-reduction", args.initial_reduction, "--multiple", args.multiple, "--lr", args.lr,
                "--threads", 1, "--train-device", "cpu", "--out", run_dir, "--no-store")
        else:
            from mobiledepth.prune import netadapt

            seed0 = json.loads((out / "prune-seed0" / "prune.json").read_text())
            first = netadapt.PruneSettings.from_record(seed0["settings"])
            log(f"netadapt.prune seed {seed}")
            netadapt.prune(replace(first, seed=seed), out=run_dir, store=False)
        wall = round(time.perf_counter() - began, 1)
        (run_dir / "wall_s.txt").write_text(str(wall))
    record = json.loads((run_dir / "prune.json").read_text())
    final, iterations = record["final"], record["iterations"]
    return {"seed": seed, "run_dir": str(run_dir), "wall_s": float((run_dir / "wall_s.txt").read_text()),
            "iterations": len(iterations) - 1, "whdr": final["whdr"], "tflite_whdr": final.get("tflite_whdr"),
            "estimated_ms": final["estimated_ms"], "measured": final["measured"], "start_whdr": iterations[0]["whdr"],
            "reference_ms": iterations[0]["measured_ms"], "widths": final["widths"],
            "tflite": str(run_dir / final["export_dir"] / "model_fp32.tflite"),
            "reference": str(run_dir / iterations[0]["reference_tflite"]),
            "settings": record["settings"]}


UNIFORM_RATIOS = tuple(round(step * 0.05, 2) for step in range(1, 18))  # 0.05 .. 0.85


def uniform_table(ref: str, checkpoint: Path, size: tuple[int, int], table, multiple: int,
                  ratios=UNIFORM_RATIOS) -> list[tuple[float, dict, float]]:
    """(pruning ratio, group widths, LUT estimate µs) of the trained model uncut and cut uniformly by ``ratios``."""
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.prune.graph import uniform_prune
    from mobiledepth.prune.subject import deployed_layers

    trained = resolve_model(ref, str(checkpoint)).model.eval()
    rows = [(0.0, {}, table.estimate_layers(deployed_layers(trained, size)).total_us)]
    for ratio in ratios:
        model = copy.deepcopy(trained)
        widths = uniform_prune(model, ratio, multiple, size)
        rows.append((ratio, widths, table.estimate_layers(deployed_layers(model, size)).total_us))
    return rows


def _timed_candidates(ref: str, checkpoint: Path, size, by_ratio: dict, multipliers: list[float], na: dict,
                      work: Path, rounds: int, reduce, multiple: int) -> tuple[dict[float, float], float]:
    """Export the uniform cuts ``multipliers`` (once) and time them with NetAdapt's model, interleaved with the
    unpruned one: ({multiplier: ratio}, NetAdapt's ratio)."""
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.prune.graph import uniform_prune
    from mobiledepth.prune.timing import time_against
    from mobiledepth.prune.variants import exported_factory

    resolved = resolve_model(ref, str(checkpoint))
    files = {}
    for m in multipliers:
        model = copy.deepcopy(resolved.model).eval()
        if m < 1.0:  # x1: the unpruned model, the upper end of the ladder
            uniform_prune(model, round(1 - m, 2), multiple, size)
        _, files[m] = exported_factory(ref, resolved.spec_hash, size, work, by_ratio[m][0], model)
    timing = time_against({**{f"x{m:g}": f for m, f in files.items()}, "netadapt": Path(na["tflite"])},
                          Path(na["reference"]), rounds=20, max_rounds=rounds, reduce=reduce)
    return {m: timing.ratios[f"x{m:g}"].ratio for m in multipliers}, timing.ratios["netadapt"].ratio


def bracketing(ratios: dict[float, float], target: float, ladder: list[float]) -> list[float]:
    """The next two multipliers of ``ladder`` (widest first) to time when every measured one is on one side
    of ``target`` (all slower: narrower ones; all faster: wider ones); [] once it is bracketed or at an end."""
    if all(r > target for r in ratios.values()):
        return [m for m in ladder if m < min(ratios)][:2]
    if all(r < target for r in ratios.values()):
        return [m for m in ladder if m > max(ratios)][-2:]
    return []


def bracket(ratios: dict[float, float], target: float) -> list[float]:
    """The uniform multipliers measured either side of ``target``: the slowest at or under it, then the fastest
    above it (one of them where every cut lies on one side)."""
    under = [m for m, r in ratios.items() if r <= target]
    over = [m for m, r in ratios.items() if r > target]
    return ([max(under, key=ratios.get)] if under else []) + ([min(over, key=ratios.get)] if over else [])


def interpolated(points: list[tuple[float, float]], at: float) -> float:
    """The WHDR at latency ratio ``at`` on the line through (ratio, WHDR) ``points`` (one point: its WHDR)."""
    if len(points) == 1:
        return points[0][1]
    (r0, w0), (r1, w1) = points
    return w0 + (w1 - w0) * (at - r0) / (r1 - r0)


def matched_uniform(args, checkpoint: Path, size, table, na: dict, work: Path, reduce) -> dict:
    """The uniform cuts either side of NetAdapt's latency measured side by side: the cuts around NetAdapt's
    LUT estimate first, then (the table can be off) further ones until the measured ratios bracket NetAdapt's
    (3 looks). A uniform ladder is coarse (BasicUNet's 32-channel groups go 32 -> 16 on a 16-grid), so one
    cut rarely lands on NetAdapt's latency: both neighbours are fine-tuned and the WHDR interpolated."""
    rows = uniform_table(args.model, checkpoint, size, table, args.multiple)
    by_ratio = {round(1 - r, 2): (widths, us) for r, widths, us in rows}  # keyed by "multiplier" = 1 - ratio
    ladder = list(by_ratio)  # x1 included: on a coarse grid every cut can be faster than NetAdapt's model
    todo = uniform_candidates([(m, us) for m, (_, us) in by_ratio.items()], na["estimated_ms"] * 1e3)
    ratios: dict[float, float] = {}
    for _ in range(3):
        ratios, netadapt_ratio = _timed_candidates(args.model, checkpoint, size, by_ratio, sorted({*ratios, *todo}),
                                                   na, work, args.rounds, reduce, args.multiple)
        todo = bracketing(ratios, netadapt_ratio, ladder)
        if not todo:
            break
    cuts = bracket(ratios, netadapt_ratio)
    log("uniform candidates: " + ", ".join(f"x{m:g} {r:.3f}" for m, r in sorted(ratios.items()))
        + f"; NetAdapt {netadapt_ratio:.3f} -> " + " and ".join(f"x{m:g}" for m in cuts))
    return {"cuts": cuts, "netadapt_ratio": netadapt_ratio,
            "widths": {f"x{m:g}": by_ratio[m][0] for m in cuts},
            "candidates": {f"x{m:g}": {"ratio": r, "estimated_ms": by_ratio[m][1] / 1e3} for m, r in ratios.items()}}


def tuned_uniform(args, out: Path, size, multiplier: float, settings, budget: int, seed: int,
                  work: Path) -> tuple[float, Path]:
    """One uniform cut of the trained model fine-tuned with ``budget`` steps: (held-out WHDR, its TFLite file)."""
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.prune.graph import save_pruned, uniform_prune
    from mobiledepth.prune.netadapt import fine_tune, held_out_whdr
    from mobiledepth.prune.subject import FactorySubject

    for stale in ("finetune", "export"):  # a stopped earlier attempt: fine-tune and export afresh
        shutil.rmtree(work / stale, ignore_errors=True)
    resolved = resolve_model(args.model, str(out / "train" / "model.pt"))
    if multiplier < 1.0:  # x1: the unpruned model, fine-tuned with the same budget
        uniform_prune(resolved.model.eval(), round(1 - multiplier, 2), args.multiple, size)
    cut_ckpt = save_pruned(work / "cut.pt", resolved.model, args.model, size)
    tuned = fine_tune(str(cut_ckpt), settings.data, work / "finetune", budget, settings, seed=seed)
    tflite, _ = FactorySubject(args.model, resolved.model, resolved.spec_hash, size).export(tuned, size,
                                                                                            work / "export")
    return held_out_whdr(tuned, settings), tflite


def uniform_baseline(args, out: Path, size, na: dict) -> dict:
    """Per seed: the uniform cuts either side of NetAdapt's measured latency, each fine-tuned with NetAdapt's step
    budget and scored, all timed side by side; the uniform WHDR at NetAdapt's ratio is interpolated between them."""
    from mobiledepth.prune.lut import load_table
    from mobiledepth.prune.timing import statistic_of, time_against
    from mobiledepth.prune.netadapt import PruneSettings

    work = Path(na["run_dir"]) / "uniform"
    saved = work / "uniform.json"
    if saved.exists() and "whdr_at_netadapt" in json.loads(saved.read_text()):
        return json.loads(saved.read_text())
    began = time.perf_counter()
    settings = PruneSettings.from_record(na["settings"])
    reduce = lambda block: statistic_of(block, settings.statistic or "median")  # noqa: E731
    match = matched_uniform(args, out / "train" / "model.pt", size, load_table(out / "lut.json"), na,
                            work / "candidates", reduce)
    budget = na["iterations"] * settings.short_term_steps + settings.long_term_steps
    tuned = {f"x{m:g}": tuned_uniform(args, out, size, m, settings, budget, na["seed"], work / f"x{m:g}")
             for m in match["cuts"]}
    side = time_against({"netadapt": Path(na["tflite"]), **{name: tflite for name, (_, tflite) in tuned.items()}},
                        Path(na["reference"]), rounds=args.rounds, max_rounds=args.rounds, reduce=reduce)
    at = side.ratios["netadapt"].ratio
    points = sorted((side.ratios[name].ratio, whdr) for name, (whdr, _) in tuned.items())
    result = {**match, "fine_tune_steps": budget, "wall_s": round(time.perf_counter() - began, 1),
              "cuts_whdr": {name: {"whdr": whdr, "ratio": side.ratios[name].ratio} for name, (whdr, _) in tuned.items()},
              "whdr_at_netadapt": interpolated(points, at),
              "bracketed": len(points) == 2 and points[0][0] <= at <= points[-1][0],
              "side_by_side": {"rounds": side.rounds, "reference_ms": side.reference_us / 1e3,
                               **{n: r.to_dict() for n, r in side.ratios.items()}}}
    saved.write_text(json.dumps(result, indent=2))
    log(f"seed {na['seed']}: NetAdapt WHDR {na['whdr']:.4f} at {at:.3f}; uniform "
        + ", ".join(f"{n} {c['whdr']:.4f} at {c['ratio']:.3f}" for n, c in result["cuts_whdr"].items())
        + f" -> {result['whdr_at_netadapt']:.4f} at NetAdapt's ratio")
    return result


def summary(report: dict) -> str:
    """The markdown table of one model's proof."""
    v, lut, t = report["lut_validate"], report["lut"], report["timings_s"]
    lines = [f"**{report['model']}** at {report['size']} (host, 1 thread, statistic {report['statistic']}): "
             f"LUT {lut['entries']} entries built in {t.get('lut_build', 'reused')} s, correction factor "
             f"{lut['correction']}; `lut validate` ratio error max {v['max_abs_error']:.1%} / median "
             f"{v['median_abs_error']:.1%} over {len(v['rows']) - 1} variants; trained TFLite WHDR "
             f"{report['eval_tflite_whdr']:.4f}", "",
             "| seed | prune wall (s) | iterations | final ratio [95 % CI] | met (high <= target) | NetAdapt WHDR "
             "| uniform cuts: WHDR at ratio | uniform WHDR at NetAdapt's ratio |", "|---|---|---|---|---|---|---|---|"]
    for na in report["seeds"]:
        m, u = na["measured"], na.get("uniform")
        cuts = "; ".join(f"{n} {c['whdr']:.4f} at {c['ratio']:.3f}" for n, c in u["cuts_whdr"].items()) if u else "–"
        lines.append(f"| {na['seed']} | {na['wall_s']:.0f} | {na['iterations']} | {m['ratio']:.3f} [{m['low']:.3f}, "
                     f"{m['high']:.3f}] | {m['met']} (target {m['target_ratio']:g}) | {na['whdr']:.4f} at "
                     f"{u['side_by_side']['netadapt']['ratio'] if u else m['ratio']:.3f} | {cuts} | "
                     + (f"{u['whdr_at_netadapt']:.4f}{'' if u['bracketed'] else ' (not bracketed)'} |" if u else "– |"))
    done = [na for na in report["seeds"] if na.get("uniform")]
    if done:
        diff = mean_se([na["whdr"] - na["uniform"]["whdr_at_netadapt"] for na in done])
        na_m, u_m = mean_se([na["whdr"] for na in done]), mean_se([na["uniform"]["whdr_at_netadapt"] for na in done])
        lines += ["", f"WHDR NetAdapt {na_m[0]:.4f} ± {na_m[1]:.4f}, uniform (interpolated at NetAdapt's measured "
                      f"ratio) {u_m[0]:.4f} ± {u_m[1]:.4f}, difference {diff[0]:+.4f} ± {diff[1]:.4f} "
                      f"(mean ± SE over {len(done)} seeds)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    name = args.model.rsplit(":", 1)[-1]
    out = args.out or Path("runs") / "bench-any" / name
    out.mkdir(parents=True, exist_ok=True)
    height, width = (int(v) for v in args.size.lower().split("x"))
    report: dict = {"model": args.model, "size": args.size, "statistic": args.statistic, "timings_s": {},
                    "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    pipeline(args, out, args.size, report)
    if args.no_prune:
        (out / "benchmark.json").write_text(json.dumps(report, indent=2))
        return 0
    report["seeds"] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        na = prune_seed(args, out, args.size, seed)
        na["uniform"] = uniform_baseline(args, out, (height, width), na)
        report["seeds"].append(na)
        (out / "benchmark.json").write_text(json.dumps(report, indent=2))
    final_export = Path(report["seeds"][0]["tflite"]).parent
    once(report, "bench", out / "report.md", "bench", final_export, "--device", "host", "--threads", 1,
         "--store", out / "store.sqlite")
    once(report, "report", out / "report.md", "report", "--store", out / "store.sqlite", "--format", "md",
         "--out", out / "report.md")
    (out / "benchmark.json").write_text(json.dumps(report, indent=2))
    print(summary(report))
    return 0 if all(na["measured"]["met"] for na in report["seeds"]) else 1


if __name__ == "__main__":
    sys.exit(main())
