"""`mobiledepth --help` and `mobiledepth models` must start in under 1 s (issue 2 §4).

Usage: .venv/bin/python benchmarks/startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics

from common import REPO, python, timed_command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    timed_command([python(), "-m", "mobiledepth", "models"], cwd=REPO)  # fill the stats cache once
    for label, argv in (("mobiledepth --help", ["--help"]), ("mobiledepth models", ["models"])):
        times = [timed_command([python(), "-m", "mobiledepth", *argv], cwd=REPO) for _ in range(args.repeats)]
        print(f"{label:<20} median {statistics.median(times):.3f} s  (min {min(times):.3f}, max {max(times):.3f}, n={len(times)})")


if __name__ == "__main__":
    main()
