"""Run the real `mobiledepth` CLI in a child process and assert the error contract.

The contract (docs/errors.md): exit 0 success, 1 only for `check`'s "regression", 2 for every
user or environment problem, with exactly one line on stderr that starts with "error: ",
names the problem and the fix; never a traceback; nothing half-written left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run_cli(*args: str, env: dict | None = None, cwd: str | os.PathLike | None = None,
            store: str | os.PathLike | None = None, timeout: float = 600, program: str = "mobiledepth") -> CliResult:
    """``python -m <program> *args`` with stdin closed; ``store`` sets MOBILEDEPTH_STORE."""
    child_env = {**os.environ, **(env or {})}
    if store is not None:
        child_env["MOBILEDEPTH_STORE"] = str(store)
    module = "mobiledepth" if program == "mobiledepth" else "android_bench"
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=child_env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_user_error(result: CliResult, *fragments: str, code: int = 2) -> str:
    """Exit ``code``, one "error: ..." line on stderr containing every fragment, no traceback."""
    text = result.out + result.err
    assert "Traceback" not in text, text[-3000:]
    assert result.code == code, f"exit {result.code}, wanted {code}: {text[-2000:]}"
    lines = result.error_lines
    assert len(lines) == 1, f"wanted one error line, got {len(lines)}: {lines}"
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def tree(path: str | os.PathLike) -> dict[str, int]:
    """Every file below ``path`` (relative name -> size): compare before and after a failing command."""
    root = Path(path)
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}
