"""A default export (fp32 + fp16) must cost at most 1.3x what onnx2tf alone takes on the same
ONNX file (issue 2 §4). Both are timed as whole commands, alternating, in one run.

Usage: .venv/bin/python benchmarks/export_speed.py [--model mdepth-mnv2-fbnet] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from common import REPO, python, timed_command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="mdepth-mnv2-fbnet")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from mobiledepth.export.calibration import generated_images
    from mobiledepth.export.tflite import _onnx2tf_command, _tool_env, write_onnx2tf_sample

    work = Path(tempfile.mkdtemp(prefix="export-speed-"))
    export_cmd = [python(), "-m", "mobiledepth", "export", "--model", args.model, "--quiet"]
    timed_command(export_cmd + ["--out", str(work / "warm")], cwd=REPO)  # warm caches, get the ONNX file
    onnx_file = work / "warm" / "model.onnx"
    write_onnx2tf_sample(work, generated_images(4, (256, 256)))
    ours, alone = [], []
    for i in range(args.repeats):
        ours.append(timed_command(export_cmd + ["--out", str(work / f"ours{i}")], cwd=REPO))
        alone.append(timed_command(_onnx2tf_command() + ["-i", str(onnx_file), "-o", str(work / f"alone{i}")],
                                   cwd=work, env=_tool_env()))
    o, a = statistics.median(ours), statistics.median(alone)
    print(f"model {args.model}, {args.repeats} alternating repeats")
    print(f"mobiledepth export (fp32+fp16, parity, record): median {o:.1f} s  {[round(t, 1) for t in ours]}")
    print(f"onnx2tf alone on the same ONNX file:           median {a:.1f} s  {[round(t, 1) for t in alone]}")
    print(f"ratio {o / a:.2f} (goal <= 1.30)")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
