"""Seeds study for issue 11: NetAdapt vs uniform width scaling at equal latency measured side by side.

    for s in 0 1 2 3 4; do
        .venv/bin/python benchmarks/prune_host.py --out runs/bench-prune --run-dir runs/bench-prune/seed$s --seed $s
    done
    .venv/bin/python benchmarks/prune_seeds.py runs/bench-prune/seed*/benchmark.json

Each ``prune_host.py`` run prunes the same trained model with its own fine-tuning seed, cuts a
uniformly thinned model to the same LUT estimate from the same weights with the same fine-tune
step budget, and times both in one session interleaved with the unpruned model (median per-round
ratio, 95 % order-statistic CI). This script prints one row per seed and the mean ± standard
error of the WHDR difference (NetAdapt - uniform; negative: NetAdapt more accurate) and of the
latency-ratio difference, as a markdown table; one table per NetAdapt setting (step, short- and
long-term steps, choice rule, data) when the files mix settings.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def row(report: dict) -> dict:
    """One seed's numbers from a prune_host.py benchmark.json."""
    side = report["side_by_side"]
    return {"seed": report["settings"]["seed"], "target_met": report["target_met"],
            "iterations": report["netadapt"]["iterations"], "netadapt_whdr": report["netadapt"]["whdr"],
            "uniform_whdr": report["uniform"]["whdr"], "multiplier": report["uniform"]["multiplier"],
            "netadapt_ratio": side["netadapt"], "uniform_ratio": side["uniform"],
            "final_high": report["netadapt"]["measured"]["high"]}


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (sample standard deviation / sqrt(n); 0 for one value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0)


def _interval(r: dict) -> str:
    return f"{r['ratio']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"


def table(rows: list[dict]) -> str:
    """The markdown table and the summary lines."""
    lines = ["| seed | met (upper bound) | iterations | NetAdapt WHDR | uniform WHDR (x) | ΔWHDR | NetAdapt / unpruned "
             "| uniform / unpruned |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['target_met']} ({r['final_high']:.3f}) | {r['iterations']} | "
                     f"{r['netadapt_whdr']:.4f} | {r['uniform_whdr']:.4f} (x{r['multiplier']:g}) | "
                     f"{r['netadapt_whdr'] - r['uniform_whdr']:+.4f} | {_interval(r['netadapt_ratio'])} | "
                     f"{_interval(r['uniform_ratio'])} |")
    whdr = mean_se([r["netadapt_whdr"] - r["uniform_whdr"] for r in rows])
    ratio = mean_se([r["netadapt_ratio"]["ratio"] - r["uniform_ratio"]["ratio"] for r in rows])
    lines += ["", f"ΔWHDR (NetAdapt - uniform) = {whdr[0]:+.4f} ± {whdr[1]:.4f} (mean ± SE, {len(rows)} seeds); "
                  f"Δ latency ratio = {ratio[0]:+.3f} ± {ratio[1]:.3f}; target met in "
                  f"{sum(r['target_met'] for r in rows)} of {len(rows)} runs"]
    return "\n".join(lines)


SETTING_KEYS = ("initial_reduction", "short_term_steps", "long_term_steps", "choose", "data")


def setting(report: dict) -> str:
    """The NetAdapt settings a run was made with (runs of one setting differ only in ``--seed``)."""
    given = {"choose": "accuracy", "data": None, **report["settings"]}
    return ", ".join(f"{k}={given.get(k)}" for k in SETTING_KEYS)


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    if not paths:
        print("error: pass the benchmark.json files of prune_host.py runs; see the docstring", file=sys.stderr)
        return 2
    groups: dict[str, list[dict]] = {}
    for path in paths:
        report = json.loads(path.read_text())
        groups.setdefault(setting(report), []).append(row(report))
    for name, rows in groups.items():
        print(f"{name}\n\n{table(sorted(rows, key=lambda r: r['seed']))}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
