"""Small faults through the real CLIs: no adb, a directory as the binary, corrupt checkpoints,
broken model YAML files. Each asserts exit 2, one "error: " line, no traceback, nothing written."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest

from cli_faults import assert_user_error, run_cli, tree

TESTS = Path(__file__).resolve().parents[1]
REPO_MODELS = TESTS.parent / "models"
BENCH_COMMANDS = {"mobiledepth": ["bench"], "android-bench": ["run"]}


@pytest.fixture
def phone_request(tmp_path):
    """A model file and a valid-looking arm64 benchmark_model: everything a phone run needs but adb."""
    model = tmp_path / "work" / "x.tflite"
    model.parent.mkdir()
    model.write_bytes(b"x")
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(arm64_stub_bytes())
    binary.chmod(0o755)
    return model, binary


def arm64_stub_bytes() -> bytes:
    """The arm64 ELF header of tests/android_bench/conftest.py (loaded by path: "conftest" is taken)."""
    spec = importlib.util.spec_from_file_location("android_bench_fixtures", TESTS / "android_bench" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.arm64_stub_bytes()


def no_adb_env(tmp_path, adb: str = "") -> dict:
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty), "ADB": adb, "ANDROID_HOME": str(tmp_path / "no-sdk"), "ANDROID_SDK_ROOT": ""}


@pytest.mark.parametrize("program", ["mobiledepth", "android-bench"])
@pytest.mark.parametrize("adb, message", [("", "adb not found in $ADB, PATH or $ANDROID_HOME"),
                                          ("/nowhere/adb", "$ADB is set to '/nowhere/adb'")])
def test_missing_adb_is_exit_2(tmp_path, phone_request, program, adb, message):
    model, binary = phone_request
    store = tmp_path / "s.sqlite"
    result = run_cli(*BENCH_COMMANDS[program], model, "--device", "S21", "--benchmark-binary", binary,
                     env=no_adb_env(tmp_path, adb), store=store, program=program)
    assert_user_error(result, message, "install Android platform-tools" if not adb else "fix $ADB")
    assert tree(model.parent) == {"x.tflite": 1} and not store.exists()


@pytest.mark.parametrize("program", ["mobiledepth", "android-bench"])
def test_directory_as_benchmark_binary_says_so(tmp_path, phone_request, program):
    model, _ = phone_request
    folder = tmp_path / "tools"
    folder.mkdir()
    store = tmp_path / "s.sqlite"
    result = run_cli(*BENCH_COMMANDS[program], model, "--device", "S21", "--benchmark-binary", folder,
                     store=store, program=program)
    assert_user_error(result, f"benchmark binary {folder} is a directory")
    assert tree(model.parent) == {"x.tflite": 1} and not store.exists()


# -- corrupt checkpoints ------------------------------------------------------------------------
class _RunsCode:
    """Pickles as a call to os.mkdir: a checkpoint that would run code if it were unpickled freely."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


def _real_checkpoint(path: Path) -> bytes:
    from mobiledepth.arch import build_model, save_checkpoint

    return save_checkpoint(path, build_model("mdepth-tiny")).read_bytes()


def make_bad_checkpoint(kind: str, folder: Path) -> tuple[Path, str]:
    """A broken checkpoint of one kind, and the words its error must contain."""
    bad = folder / f"{kind}.pt"
    if kind == "truncated":
        data = _real_checkpoint(folder / "good.pt")
        bad.write_bytes(data[: len(data) // 2])
        return bad, "empty, truncated or damaged"
    if kind == "random-bytes":
        bad.write_bytes(os.urandom(4096))
        return bad, "not a PyTorch checkpoint of tensors"
    if kind == "zip-with-garbage":
        with zipfile.ZipFile(bad, "w") as archive:
            archive.writestr("archive/data.pkl", os.urandom(300))
            archive.writestr("archive/version", "3\n")
        return bad, "not a PyTorch checkpoint of tensors"
    if kind == "raw-pickle":  # protocol 4: torch warns about it on stderr unless silenced
        bad.write_bytes(pickle.dumps(_RunsCode(folder / "pwned"), protocol=4))
        return bad, "not a PyTorch checkpoint of tensors"
    import torch

    torch.save({"state_dict": {}, "spec": None, "payload": _RunsCode(folder / "pwned")}, bad)
    return bad, "could run code (posix.mkdir)"


@pytest.mark.parametrize("kind", ["truncated", "random-bytes", "zip-with-garbage", "code-payload", "raw-pickle"])
def test_corrupt_checkpoint_is_one_readable_sentence(tmp_path, kind):
    inputs = tmp_path / "in"
    inputs.mkdir()
    bad, reason = make_bad_checkpoint(kind, inputs)
    out = tmp_path / "out" / "run"
    result = run_cli("export", "--model", "mdepth-tiny", "--checkpoint", bad, "--input-size", "64x64",
                     "--out", out, store=tmp_path / "s.sqlite")
    line = assert_user_error(result, f"checkpoint {bad} cannot be loaded safely: it ", reason)
    assert line.endswith("or use 'mobiledepth train'"), line  # the whole sentence, not cut mid-word
    assert "Warning" not in result.err and ".py:" not in result.err, result.err
    assert not (inputs / "pwned").exists()  # the payload never ran
    assert tree(tmp_path / "out") == {} and not (tmp_path / "s.sqlite").exists()


# -- broken model YAML files ---------------------------------------------------------------------
@pytest.fixture
def models_folder(tmp_path):
    """$MOBILEDEPTH_MODELS with one good spec and three broken files."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(REPO_MODELS / "mdepth-tiny.yaml", folder / "my-tiny.yaml")
    (folder / "bad-yaml.yaml").write_text("name: [unclosed\n  a: b: c\n")
    (folder / "no-arch.yaml").write_text("name: no-arch\ndescription: a card without a network\n")
    (folder / "not-text.yaml").write_bytes(b"\xff\xfe\x00\x81 binary")
    return folder


def test_broken_model_files_are_skipped_with_a_warning(tmp_path, models_folder):
    result = run_cli("models", "--json", env={"MOBILEDEPTH_MODELS": str(models_folder)}, store=tmp_path / "s.sqlite")
    assert result.code == 0 and "Traceback" not in result.err, result.err
    names = {row["name"] for row in json.loads(result.out)}
    assert {"my-tiny", "mdepth-tiny", "mdepth-mnv2-fbnet"} <= names
    assert not names & {"bad-yaml", "no-arch", "not-text"}
    warnings = result.error_lines
    assert len(warnings) == 3 and all(w.startswith("warning: skipped model '") for w in warnings), warnings
    assert "not valid YAML" in warnings[0] and "not UTF-8" in warnings[2] and "no 'architecture'" in warnings[1]


@pytest.mark.parametrize("args, message", [
    (["models", "bad-yaml"], "bad-yaml.yaml is not valid YAML"),
    (["models", "no-arch"], "no-arch.yaml has no 'architecture' section"),
    (["export", "--model", "no-arch", "--input-size", "64x64"], "no-arch.yaml has no 'architecture' section"),
])
def test_naming_a_broken_model_is_exit_2(tmp_path, models_folder, args, message):
    out = tmp_path / "out"
    extra = ["--out", out / "run"] if args[0] == "export" else []
    result = run_cli(*args, *extra, env={"MOBILEDEPTH_MODELS": str(models_folder)}, store=tmp_path / "s.sqlite")
    assert_user_error(result, message)
    assert tree(out) == {}


@pytest.mark.parametrize("args, fragment", [
    (["run"], "the following arguments are required: MODEL.tflite"),
    (["frob"], "invalid choice: 'frob'"),
    (["run", "m.tflite", "--threads", "many"], "argument --threads"),
])
def test_android_bench_usage_errors_are_one_line(args, fragment):
    line = assert_user_error(run_cli(*args, program="android-bench"), fragment, "--help")
    assert line.startswith("error: android-bench")
