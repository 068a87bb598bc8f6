"""The baseline gate on a busy machine: the same model against its own baseline, judged through the baseline's
reference network (today's gate) and through the calibration model (older baselines), quiet and under
memory-bandwidth stress.

    .venv/bin/python benchmarks/gate_under_load.py --model runs/ci/model_fp32.tflite [--trials 4] [--stress 2]
        [--slower runs/wide/model_fp32.tflite]

The model is compared with a baseline made from itself a moment earlier on the quiet machine, so every
"regression" is a false alarm. ``--slower B.tflite``: B (e.g. the wide variant) is also checked against that
baseline under stress (``--allow-different-model``), where every pass is a miss. The stress processes copy 48 MB arrays back and forth (they evict the caches
and share the memory bus, as a neighbour on a CI box does); the 67 KB calibration model barely feels that, a
10 MB model does. Prints one line per check and a summary; ``--json FILE`` keeps the rows.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _copy_forever(megabytes: int) -> None:
    import numpy as np

    a = np.ones(megabytes * (1 << 20) // 8)
    b = np.empty_like(a)
    while True:
        np.copyto(b, a)
        np.copyto(a, b)


def _check(model: Path, baseline: Path, tolerance: float) -> dict:
    from mobiledepth.gate import check_baseline

    start = time.monotonic()
    result = check_baseline(model, baseline, tolerance=tolerance, allow_different_model=True)
    c = result.comparison
    return {"ratio": c.ratio, "ci": [c.ci_low, c.ci_high], "verdict": c.verdict, "exit_code": result.exit_code,
            "runs": result.runs, "seconds": time.monotonic() - start, "note": result.notes[0] if result.notes else ""}


def _trial(model: Path, baselines: dict[str, Path], stress: int, megabytes: int, tolerance: float,
           label: str = "same model") -> list[dict]:
    """Both ways of judging, under ``stress`` copy processes (0: quiet)."""
    workers = [multiprocessing.Process(target=_copy_forever, args=(megabytes,), daemon=True) for _ in range(stress)]
    for worker in workers:
        worker.start()
    time.sleep(1.0 if workers else 0.0)
    try:
        return [{"model": label, "way": way, "stress": stress, **_check(model, path, tolerance)}
                for way, path in baselines.items()]
    finally:
        for worker in workers:
            worker.terminate()
            worker.join()


def _summary(rows: list[dict], baselines: dict[str, Path]) -> None:
    """False alarms (same model) and misses (slower model) under stress, per way of judging."""
    for way in baselines:
        for label, wrong, what in (("same model", 1, "false alarms"), ("slower model", 0, "misses")):
            stressed = [r for r in rows if r["way"] == way and r["stress"] and r["model"] == label]
            if not stressed:
                continue
            widths = [r["ci"][1] - r["ci"][0] for r in stressed]
            print(f"{way:<18} {label:<12}: under stress {sum(r['exit_code'] == wrong for r in stressed)}/"
                  f"{len(stressed)} {what}, ratio {min(r['ratio'] for r in stressed):.3f}-"
                  f"{max(r['ratio'] for r in stressed):.3f}, median CI width {statistics.median(widths):.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a .tflite model (e.g. runs/ci/model_fp32.tflite)")
    parser.add_argument("--trials", type=int, default=4, help="stressed trials (one quiet trial comes first)")
    parser.add_argument("--stress", type=int, default=2, help="memory-copy processes during a stressed trial")
    parser.add_argument("--megabytes", type=int, default=48, help="array size of each copy process")
    parser.add_argument("--tolerance", type=float, default=0.15, help="the gate's tolerance (.ci/run: 15 %%)")
    parser.add_argument("--slower", type=Path, help="a slower model checked against the baseline under stress")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    if not args.model.is_file():
        parser.error(f"--model {args.model} does not exist; export one first (mobiledepth export --out runs/ci)")
    if args.slower and not args.slower.is_file():
        parser.error(f"--slower {args.slower} does not exist; export one first "
                     "(mobiledepth export --model mdepth-mnv2-fbnet-wide --out runs/wide)")

    from mobiledepth.gate import update_baseline

    tmp = Path(tempfile.mkdtemp(prefix="gate_under_load_"))
    baselines = {"reference network": tmp / "baseline.json", "calibration model": tmp / "legacy.json"}
    update_baseline(args.model, baselines["reference network"])
    legacy = json.loads(baselines["reference network"].read_text())
    legacy.pop("reference")  # what an older baseline holds: the calibration model decides
    baselines["calibration model"].write_text(json.dumps(legacy))
    print(f"baseline: {args.model}, p50 {legacy['median_us'] / 1000:.3f} ms (quiet), "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    trials = [(args.model, "same model", stress) for stress in [0] + [args.stress] * args.trials]
    if args.slower:
        trials += [(args.slower, "slower model", args.stress)] * args.trials
    rows = []
    for model, label, stress in trials:
        for row in _trial(model, baselines, stress, args.megabytes, args.tolerance, label):
            rows.append(row)
            print(f"{label:<12} stress {stress}  {row['way']:<18} ratio {row['ratio']:.3f} [{row['ci'][0]:.3f}, "
                  f"{row['ci'][1]:.3f}]  {row['verdict']:<12} runs {row['runs']:>3}  {row['seconds']:5.1f}s")
    _summary(rows, baselines)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
