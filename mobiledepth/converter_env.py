"""The converter environment: the one place that knows where onnx2tf and TensorFlow live.

onnx2tf 1.29.24 pins numpy 1.26, tensorflow 2.19 and an old ai-edge-litert exactly, so it lives
in a second virtual environment (``scripts/bootstrap.sh`` makes ``.venv-convert`` from
``requirements/converter-lock.txt``) and runs only as a child process: the main environment
never imports TensorFlow. Its python is found, in order, at:

1. ``$MOBILEDEPTH_CONVERTER_PYTHON``;
2. the path in ``<sys.prefix>/mobiledepth-converter-python`` (written by the bootstrap);
3. this interpreter, when ``onnx2tf`` is installed beside it (one environment with everything).

Worker scripts run there by file path (``worker_command``), so that environment needs no
mobiledepth: only numpy and TensorFlow. Only the standard library is imported here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mobiledepth.errors import UserError

ENV_VAR = "MOBILEDEPTH_CONVERTER_PYTHON"
RECORD_NAME = "mobiledepth-converter-python"
FIX = f"run scripts/bootstrap.sh (it builds .venv-convert) or set {ENV_VAR} to a python with onnx2tf==1.29.24"
# Runs a script by path without putting its folder on sys.path (a sibling module named like a
# package, e.g. export/tflite.py, must not shadow anything TensorFlow imports).
_RUN_BY_PATH = "import runpy, sys; sys.path[:] = [p for p in sys.path if p]; sys.argv = sys.argv[1:]; " \
               "runpy.run_path(sys.argv[0], run_name='__main__')"


def _recorded() -> str | None:
    record = Path(sys.prefix) / RECORD_NAME
    return record.read_text().strip() or None if record.is_file() else None


def converter_python() -> Path:
    """The python of the converter environment; UserError (with the fix) when there is none."""
    chosen = os.environ.get(ENV_VAR) or _recorded()
    if chosen:
        path = Path(chosen)
        if not (path.is_file() and os.access(path, os.X_OK)):
            source = ENV_VAR if os.environ.get(ENV_VAR) else str(Path(sys.prefix) / RECORD_NAME)
            raise UserError(f"the converter python {path} (from {source}) does not exist; {FIX}")
        return path
    here = Path(sys.executable)
    if (here.parent / "onnx2tf").exists():
        return here
    raise UserError(f"no converter environment (onnx2tf + tensorflow) is installed; {FIX}")


def converter_tool(name: str) -> Path:
    """An executable of the converter environment (``onnx2tf``), beside its python."""
    tool = converter_python().parent / name
    if not tool.exists():
        raise UserError(f"{name} is not installed in the converter environment ({tool.parent}); {FIX}")
    return tool


def converter_env() -> dict[str, str]:
    """The environment for converter children: its bin folder first on PATH (onnx2tf shells out to
    onnxsim), quiet TensorFlow, no GPU, and no PYTHON* variables of the main environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = str(converter_python().parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    return env


def worker_command(script: str | os.PathLike, *args: str) -> list[str]:
    """The command that runs ``script`` (a file) with ``args`` in the converter environment."""
    return [str(converter_python()), "-c", _RUN_BY_PATH, str(script), *map(str, args)]


CONVERTER_DISTS = ("onnx2tf", "tensorflow", "tf-keras")
_VERSIONS = "import importlib.metadata as m, json, sys\n" \
            "def v(d):\n    try:\n        return m.version(d)\n    except m.PackageNotFoundError:\n        return None\n" \
            "print(json.dumps({d: v(d) for d in sys.argv[1:]}))"


def converter_versions(timeout_s: float = 60) -> dict[str, str | None]:
    """Versions of onnx2tf, tensorflow and tf-keras in the converter environment (read from its
    package metadata, nothing imported); all ``None`` when there is none."""
    import json
    import subprocess

    try:
        done = subprocess.run([str(converter_python()), "-c", _VERSIONS, *CONVERTER_DISTS], capture_output=True,
                              text=True, timeout=timeout_s, env=converter_env())
        return json.loads(done.stdout)
    except (UserError, OSError, ValueError, subprocess.SubprocessError):
        return dict.fromkeys(CONVERTER_DISTS)
