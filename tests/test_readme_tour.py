"""The README's 5-minute tour runs as written, in order (slow tier: it trains and exports)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def tour_commands() -> list[str]:
    """The command lines of the tour's first bash block (comments and `source` dropped, `\\` joined)."""
    section = README.read_text().split("## A 5-minute tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    commands = [line.split("  #", 1)[0].strip() for line in lines]
    return [c for c in commands if c and not c.startswith(("#", "source "))]


def test_the_tour_lists_every_stage():
    commands = tour_commands()
    used = {shlex.split(c)[1] for c in commands}
    assert {"models", "export", "bench", "data", "train", "eval", "check", "report"} <= used
    assert all(shlex.split(c)[0] == "mobiledepth" for c in commands)


@pytest.mark.slow
def test_the_tour_runs_as_written(tmp_path):
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "MOBILEDEPTH_STORE": str(tmp_path / "store.sqlite")}
    started = time.monotonic()
    for command in tour_commands():
        proc = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    print(f"tour: {time.monotonic() - started:.0f} s")
    assert (tmp_path / "runs" / "report.html").stat().st_size > 10_000
