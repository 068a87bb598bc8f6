"""Run a converter (onnx2tf, the TFLite quantiser, the layer-model builder) as a guarded child.

``run_child`` starts a small guard process (``python -m mobiledepth.child``) as the leader of a
new process group; the guard starts the real command in that group and waits for it.

- The child tree dies with its parent, even on ``kill -9`` of the parent with no terminal (CI
  runners, the OOM killer): the guard asks Linux for SIGTERM when its parent dies
  (``prctl(PR_SET_PDEATHSIG)`` via ctypes) and answers it by SIGKILLing its whole process group;
  the command gets SIGKILL if the guard itself dies.
- On timeout, exception or Ctrl-C in the parent, the parent SIGKILLs the group.
- Output goes to a log file (a pipe that nobody reads fills up and blocks a chatty child);
  with ``on_line`` the command's stdout is read line by line instead and only stderr is logged.

Only the standard library is imported here: the guard starts in a few tens of milliseconds.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from mobiledepth.errors import StageFailed

PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int, expected_parent: int) -> None:
    """Ask the kernel for ``sig`` when this process's parent dies; if it already has, act now."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != expected_parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)


def kill_group(pgid: int) -> None:
    """SIGKILL every process of a group (gone already: nothing to do)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_child(command: Sequence[str], log: str | os.PathLike, timeout_s: float, what: str,
              cwd: str | os.PathLike | None = None, env: dict | None = None,
              on_line: Callable[[str], None] | None = None) -> int:
    """Run ``command`` guarded (see the module doc); returns its exit code.

    Call it from the main thread: Linux signals a parent's death when the *thread* that started
    the child ends. Raises StageFailed naming ``what`` and the log when the command runs past
    ``timeout_s``; on any exception (KeyboardInterrupt included) the whole child tree is killed
    before it propagates."""
    log = Path(log)
    deadline = time.monotonic() + timeout_s
    guard = [sys.executable, "-m", "mobiledepth.child", str(os.getpid()), "--", *map(str, command)]
    with open(log, "w") as handle:
        proc = subprocess.Popen(guard, cwd=cwd, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                                stdout=subprocess.PIPE if on_line else handle, stderr=handle)
        try:
            if on_line:
                _read_lines(proc, on_line, deadline)
            return proc.wait(timeout=_remaining(deadline) + (5 if on_line else 0))
        except subprocess.TimeoutExpired:
            raise StageFailed(f"{what} did not finish in {timeout_s:.0f} s; see {log.name}") from None
        finally:
            kill_group(proc.pid)  # timeout, error, Ctrl-C; after a normal exit: anything it left running
            proc.wait()
            if proc.stdout:
                proc.stdout.close()


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _read_lines(proc: subprocess.Popen, on_line: Callable[[str], None], deadline: float) -> None:
    """Hand each stdout line to ``on_line`` until the child closes stdout; TimeoutExpired past ``deadline``."""
    fd, pending = proc.stdout.fileno(), b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            if not selector.select(timeout=_remaining(deadline)):
                raise subprocess.TimeoutExpired(proc.args, 0)
            chunk = os.read(fd, 65536)
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                on_line(line.decode(errors="replace") + "\n")
            if not chunk:
                if pending:
                    on_line(pending.decode(errors="replace"))
                return


def _guard(parent: int, command: list[str]) -> int:
    """The guard process: die with ``parent``, take the whole group along, return the command's code."""
    def take_group_down(signum, frame):
        kill_group(os.getpgid(0))

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, take_group_down)
    set_parent_death_signal(signal.SIGTERM, parent)
    me = os.getpid()
    try:
        proc = subprocess.Popen(command, preexec_fn=lambda: set_parent_death_signal(signal.SIGKILL, me))
    except OSError as exc:
        print(f"cannot start {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    code = proc.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: python -m mobiledepth.child PARENT_PID -- COMMAND...")
    sys.exit(_guard(int(sys.argv[1]), sys.argv[3:]))
