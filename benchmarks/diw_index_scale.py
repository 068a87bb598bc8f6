"""The DIW annotation index at full scale: seconds and peak memory to read a 495K-image CSV.

    .venv/bin/python benchmarks/diw_index_scale.py [--images 495000] [--what parse|dataset|both]

Run it from another checkout's folder to measure that checkout's code (the child imports
``mobiledepth`` from its working folder first); the output names the file it measured.

Writes a DIW-format CSV of ``--images`` samples (one pair each, the training split's size), then, in a
fresh child process each: ``read_annotations`` (parse + validate every line, no image files), and
building the trainer's ``DiwDataset`` index over it (flat numpy arrays of pairs and paths). Reports
wall and CPU seconds (CPU time is what to compare on a shared machine) and the child's peak RSS
(``ru_maxrss``) above a bare interpreter with numpy imported.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])  # user + system CPU seconds (load-proof)
from mobiledepth.data.diw import DiwData, read_annotations
start, cpu0 = time.perf_counter(), cpu()
samples, problems, counts = read_annotations(sys.argv[1], sys.argv[2], check_files=False)
parsed, parsed_cpu = time.perf_counter() - start, cpu() - cpu0
built = None
if sys.argv[3] == "dataset":
    from mobiledepth.data.dataset import DiwDataset
    start = time.perf_counter()
    DiwDataset(DiwData(None, None, samples, None), (224, 448))
    built = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"code": __import__("mobiledepth.data.diw").data.diw.__file__, "samples": len(samples),
                  "problems": len(problems), "parse_s": parsed, "parse_cpu_s": parsed_cpu, "dataset_s": built,
                  "peak_rss_mb": peak / 1024, "above_base_mb": (peak - base) / 1024}))
"""


def write_csv(path: Path, n: int) -> None:
    with open(path, "w") as handle:
        for i in range(n):
            handle.write(f"./DIW_train_val/{i:040x}.thumb\n{1 + i % 333},{1 + i % 500},{1 + (i * 7) % 333},"
                         f"{1 + (i * 13) % 500},{'><'[i % 2]},500,333\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=495_000)
    parser.add_argument("--what", choices=["parse", "dataset", "both"], default="both",
                        help="parse: read_annotations alone; dataset: then the trainer's index (each in a fresh child)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "DIW_train_val.csv"
        write_csv(csv, args.images)
        out = {}
        for what in ("parse", "dataset") if args.what == "both" else (args.what,):
            done = subprocess.run([sys.executable, "-c", CHILD, str(csv), tmp, what], capture_output=True, text=True,
                                  check=True)
            out[what] = json.loads(done.stdout)
    print(json.dumps({"images": args.images, **out}, indent=2))


if __name__ == "__main__":
    main()
