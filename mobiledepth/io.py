"""Small file helpers shared by every stage: atomic writes, output checks, content hashes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from mobiledepth.errors import UserError


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex sha256 of an object's canonical JSON form (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike) -> None:
    """Give a file or folder made by mkstemp/mkdtemp (0600/0700) the mode the user's umask asks for."""
    base = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, base & ~current_umask())


def _first_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def check_writable(path: str | os.PathLike, what: str, folder: bool = False) -> Path:
    """Fail now with a one-line UserError if ``path`` could not be written later (call before long work).

    ``what`` names the option (``--out``), ``folder`` says the path is a folder to create or fill.
    Nothing is created: the nearest existing ancestor is probed with a temporary file."""
    target = Path(path)
    if target.exists() and not folder and target.is_dir():
        raise UserError(f"{what} {target} is a folder; give a file name")
    if target.exists() and folder and not target.is_dir():
        raise UserError(f"{what} {target} is a file, not a folder; choose another path")
    anchor = _first_existing(target if folder else target.parent)
    if not anchor.is_dir():
        raise UserError(f"{what} {target} cannot be created: {anchor} is a file, not a folder; choose another path")
    probe_dir = target if (folder and target.is_dir()) else anchor
    if target.exists() and not folder and not os.access(target, os.W_OK):
        raise UserError(f"{what} {target} is not writable; check its permissions or choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".mobiledepth-probe.", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise UserError(f"{what} {target} cannot be written ({probe_dir}: {reason.lower()}); "
                        "choose a writable location") from None
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            apply_umask(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write text so that readers see either the old file or the complete new one."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write an object as indented JSON, atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
