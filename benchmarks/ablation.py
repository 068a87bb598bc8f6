"""Ablation of the paper's training ingredients on generated data, the same budget per row.

    .venv/bin/python benchmarks/ablation.py [--minutes 3 | --steps N] [--model mdepth-mnv2-fbnet]
                                            [--teacher NAME|model.pt]

Rows (each trained from the same seed for ``--minutes`` of wall time, or ``--steps`` optimizer
steps, then test WHDR in PyTorch):

1. plain ranking loss (no intermediate heads)
2. + intermediate heads (0.5 / 0.25 / 0.25)
3. + distillation from a teacher (RMSE to its depth + pair-wise KD on features), fixed equal weights
4. + loss rebalancing (Lee & Kim, 5 times per epoch, ``--order`` fast-first = the official schedule)

The teacher (default the wider zoo variant, since no pre-trained EncDecResNet is available) is
first trained with ranking + heads for ``--teacher-minutes``; its own WHDR is reported too.
A trained checkpoint may be given instead (e.g. the paper model from train_synth.py, with
``--model mdepth-tiny`` as the student). With a wall-time budget, distillation rows spend part
of it on the teacher's forward pass (the real cost of the method); with a step budget they get
the same number of updates and the table shows the extra seconds. The table is printed and written to ``--out``; whatever
direction it shows is the result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS = [
    ("plain ranking", {"loss": {"intermediate": False}}),
    ("+ intermediate heads", {"loss": {"intermediate": True}}),
    ("+ distillation", {"loss": {"intermediate": True}, "teacher": "TEACHER"}),
    ("+ rebalancing", {"loss": {"intermediate": True}, "teacher": "TEACHER", "rebalance": {"enabled": True, "order": "ORDER"}}),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/tmp/mobiledepth-synth-128")
    parser.add_argument("--out", default="runs/bench-ablation")
    parser.add_argument("--model", default="mdepth-mnv2-fbnet")
    parser.add_argument("--teacher", default="mdepth-mnv2-fbnet-wide", help="zoo name (trained here) or checkpoint")
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per row (wall time)")
    parser.add_argument("--steps", type=int, default=None,
                        help="budget per row in optimizer steps instead of minutes (teacher rows then cost more time)")
    parser.add_argument("--teacher-minutes", type=float, default=None, help="[default: --minutes]")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-n", type=int, default=2000)
    parser.add_argument("--test-n", type=int, default=500)
    parser.add_argument("--order", default="fast-first", choices=["fast-first", "slow-first"],
                        help="rebalancing order (docs/train.md)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (see docs/train.md, performance note)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from benchmarks.train_synth import ensure_data
    from mobiledepth.evaluate.evaluate import evaluate
    from mobiledepth.train.trainer import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_root = Path(args.data)
    ensure_data(data_root, args.train_n, args.test_n, args.size, args.seed)
    base = {
        "model": args.model, "seed": args.seed, "input_size": [args.size, args.size], "batch_size": args.batch_size,
        "epochs": 50, "optimizer": {"lr": args.lr}, "scheduler": {"step_epochs": 2, "gamma": 0.5},
        "data": {"val_split": None}, "checkpoint": {"every_steps": None}, "log_every": 25,
        "threads": args.threads,
    }

    def run(name: str, config: dict, minutes: float) -> dict:
        run_dir = out / name
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        budget = {"max_steps": args.steps} if args.steps else {"max_minutes": minutes}
        result = train({**config, **budget}, data=str(data_root), out=str(run_dir))
        ev = evaluate(str(result.model_path), data_root, split="test", batch_size=16)
        row = {"whdr": ev.value, "steps": result.steps, "seconds": round(result.seconds, 1),
               "final_weights": result.weights}
        print(f"{name}: WHDR {ev.value:.4f} after {result.steps} steps ({result.seconds:.0f} s) "
              f"weights {result.weights}", flush=True)
        return row

    teacher = args.teacher
    report: dict = {"model": args.model, "budget": f"{args.steps} steps" if args.steps else f"{args.minutes:g} min",
                    "rows": {}}
    report["teacher_ref"] = teacher
    if not Path(teacher).suffix:
        teacher_cfg = {**base, "model": teacher, "loss": {"intermediate": True}}
        row = run("teacher", teacher_cfg, args.teacher_minutes or args.minutes)
        report["teacher"] = {"model": teacher, **row}
        teacher = str(out / "teacher" / "model.pt")
    for index, (label, patch) in enumerate(ROWS):
        config = json.loads(json.dumps({**base, **patch}).replace('"TEACHER"', json.dumps(teacher))
                            .replace('"ORDER"', json.dumps(args.order)))
        config["loss"] = {**patch["loss"]}
        report["rows"][label] = run(f"row{index + 1}", config, args.minutes)

    lines = [f"| row ({args.model}, budget {report['budget']}) | test WHDR | steps | seconds | final loss weights |",
             "|---|---|---|---|---|"]
    for label, row in report["rows"].items():
        weights = ", ".join(f"{k} {v:.3f}" for k, v in row["final_weights"].items())
        lines.append(f"| {label} | {row['whdr']:.4f} | {row['steps']} | {row['seconds']:.0f} | {weights} |")
    table = "\n".join(lines)
    report["table"] = table
    (out / "ablation.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "ablation.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
