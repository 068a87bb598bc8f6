"""`mobiledepth.child.run_child`: converters run guarded, with a log, a timeout, and die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mobiledepth.child import run_child
from mobiledepth.errors import StageFailed

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")

# a converter-like tree: the command starts a long grandchild and waits; both write their pid
TREE = "sleep 300 & echo $! > {dir}/grandchild.pid; echo $$ > {dir}/child.pid; echo started; wait"


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_for(predicate, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def tree_pids(folder: Path) -> list[int]:
    assert wait_for(lambda: (folder / "grandchild.pid").exists() and (folder / "child.pid").exists())
    assert wait_for(lambda: all((folder / n).read_text().strip() for n in ("child.pid", "grandchild.pid")))
    return [int((folder / n).read_text()) for n in ("child.pid", "grandchild.pid")]


def test_exit_code_and_output_go_to_the_log(tmp_path):
    log = tmp_path / "tool.log"
    code = run_child(["sh", "-c", "echo out; echo err >&2; exit 3"], log, 60, "the tool")
    assert code == 3
    assert log.read_text().split() == ["out", "err"]


def test_on_line_gets_every_stdout_line_and_stderr_is_logged(tmp_path):
    lines: list[str] = []
    code = run_child(["sh", "-c", "printf 'done a\\ndone b\\nfail c'; echo chatter >&2"], tmp_path / "b.log", 60,
                     "the builder", on_line=lines.append)
    assert code == 0 and lines == ["done a\n", "done b\n", "fail c"]
    assert (tmp_path / "b.log").read_text().strip() == "chatter"


def test_a_missing_program_is_an_exit_code_not_a_crash(tmp_path):
    assert run_child(["/no/such/tool"], tmp_path / "x.log", 60, "the tool") == 127
    assert "cannot start /no/such/tool" in (tmp_path / "x.log").read_text()


def test_timeout_kills_the_whole_tree(tmp_path):
    with pytest.raises(StageFailed, match=r"the tool did not finish in 1 s; see t.log"):
        run_child(["sh", "-c", TREE.format(dir=tmp_path)], tmp_path / "t.log", 1, "the tool")
    for pid in tree_pids(tmp_path):
        assert wait_for(lambda: not alive(pid)), f"pid {pid} survived the timeout"


def test_an_exception_in_the_caller_kills_the_whole_tree(tmp_path):
    def interrupt(line):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_child(["sh", "-c", TREE.format(dir=tmp_path)], tmp_path / "k.log", 60, "the tool", on_line=interrupt)
    for pid in tree_pids(tmp_path):
        assert wait_for(lambda: not alive(pid)), f"pid {pid} survived the interrupt"


def test_kill_9_of_the_parent_takes_the_child_tree_along(tmp_path):
    """The parent has no terminal (its own session), as on a CI runner or under the OOM killer."""
    parent_code = textwrap.dedent(f"""
        from mobiledepth.child import run_child
        run_child(["sh", "-c", {TREE.format(dir=tmp_path)!r}], {str(tmp_path / "p.log")!r}, 600, "the tool")
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code], start_new_session=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pids = tree_pids(tmp_path)
        assert all(alive(pid) for pid in pids)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        for pid in pids:
            assert wait_for(lambda: not alive(pid)), f"pid {pid} outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
