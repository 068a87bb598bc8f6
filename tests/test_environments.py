"""The two environments (issue 14): TensorFlow and onnx2tf only in the converter environment.

The main environment never imports TensorFlow: every TensorFlow user is a script that runs by
file path in the converter environment's python (``mobiledepth.converter_env``), and the
base install (no extras) still benches, checks, reports and evaluates .tflite / .onnx files.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mobiledepth import converter_env
from mobiledepth.errors import UserError

REPO = Path(__file__).resolve().parents[1]
TF_MODULES = {"tensorflow", "onnx2tf", "tf_keras", "keras"}
# Scripts that run in the converter environment, by path; they import no mobiledepth there.
CONVERTER_SCRIPTS = {"mobiledepth/export/quantize_worker.py", "mobiledepth/prune/layer_models.py",
                     "mobiledepth/gate/build_calibration.py"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_only_converter_scripts_import_tensorflow():
    for path in sorted((REPO / "mobiledepth").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative not in CONVERTER_SCRIPTS:
            assert not _imports(path) & TF_MODULES, relative


def test_worker_scripts_need_no_mobiledepth():
    for relative in CONVERTER_SCRIPTS - {"mobiledepth/gate/build_calibration.py"}:
        assert "mobiledepth" not in _imports(REPO / relative), relative


def test_lock_files_split_the_stacks():
    main = (REPO / "requirements/lock.txt").read_text().lower()
    converter = (REPO / "requirements/converter-lock.txt").read_text().lower()
    pins = {line.split("==")[0]: line.split("==")[1] for line in main.split() if "==" in line}
    assert not {"tensorflow", "onnx2tf", "tf-keras", "tf_keras"} & set(pins)
    assert int(pins["numpy"].split(".")[0]) >= 2 and pins["ai-edge-litert"].startswith("2.3.")
    assert "litert-torch" in pins and "onnxscript" in pins
    assert "onnx2tf==1.29.24" in converter and "tensorflow==2.19" in converter and "torch==" not in converter


def test_converter_python_from_the_variable(monkeypatch):
    monkeypatch.setenv(converter_env.ENV_VAR, sys.executable)
    assert converter_env.converter_python() == Path(sys.executable)
    monkeypatch.setenv(converter_env.ENV_VAR, "/nowhere/bin/python")
    with pytest.raises(UserError, match="does not exist; run scripts/bootstrap.sh"):
        converter_env.converter_python()


def test_converter_python_from_the_record_or_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv(converter_env.ENV_VAR, raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    with pytest.raises(UserError, match="no converter environment .*MOBILEDEPTH_CONVERTER_PYTHON"):
        converter_env.converter_python()
    (tmp_path / converter_env.RECORD_NAME).write_text(sys.__dict__.get("_base_executable", "/usr/bin/env") + "\n")
    assert converter_env.converter_python().is_file()


def test_worker_runs_by_path_without_its_folder_on_sys_path(monkeypatch, tmp_path):
    """A sibling file named like a stdlib module must not shadow it (export/ holds tflite.py)."""
    monkeypatch.setenv(converter_env.ENV_VAR, sys.executable)
    (tmp_path / "json.py").write_text("raise SystemExit('shadowed')\n")
    script = tmp_path / "worker.py"
    script.write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    done = subprocess.run(converter_env.worker_command(script, "a", "b c"), env=converter_env.converter_env(),
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '["a", "b c"]'


# A base install (`pip install mobiledepth`, no extras): the heavy packages cannot be imported.
_BLOCKER = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from mobiledepth.cli import main
sys.argv = ['mobiledepth'] + sys.argv[1:]
main()
"""
BLOCKED = {"torch", "onnx", "onnxscript", "litert_torch", "tensorflow", "onnx2tf", "tf_keras"}


def _base_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MOBILEDEPTH_STORE": str(cwd / "store.sqlite")}
    return subprocess.run([sys.executable, "-c", _BLOCKER.format(blocked=BLOCKED), *args], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=300)


def test_base_install_benches_checks_and_reports_tflite(tmp_path):
    calibration = REPO / "mobiledepth/gate/calibration.tflite"
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_fp32.tflite").write_bytes(calibration.read_bytes())
    steps = [("bench", str(run), "--device", "host", "--runs", "3", "--warmup", "1", "--store", str(tmp_path / "s.sqlite")),
             ("check", str(run / "model_fp32.tflite"), "--baseline", str(tmp_path / "base.json"), "--update-baseline",
              "--runs", "10"),
             ("report", "--store", str(tmp_path / "s.sqlite"), "--format", "md", "--out", str(tmp_path / "r.md"))]
    for step in steps:
        done = _base_cli(*step, cwd=tmp_path)
        assert done.returncode == 0, (step[0], done.stderr[-2000:])
        assert "Traceback" not in done.stderr
