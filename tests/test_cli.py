"""The `mobiledepth` command: startup cost, listing, one-line errors with exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mobiledepth.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_and_models_do_not_import_heavy_backends(tmp_path):
    """`mobiledepth --help` / `models` must stay fast: no torch/tensorflow/onnxruntime at startup."""
    code = ("import sys; from mobiledepth.cli import main; main(['--help']); "
            "print(sorted(m for m in ('torch', 'tensorflow', 'onnxruntime', 'onnx2tf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_models_lists_the_zoo_as_json(capsys):
    code, out, _ = run_cli(capsys, "models", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0
    assert rows["mdepth-mnv2-fbnet"]["params"] == 2_633_801
    assert rows["mdepth-mnv2-fbnet"]["reported_whdr"] == 0.1156
    assert rows["mdepth-tiny"]["input_size"] == [64, 64]


@pytest.mark.parametrize("args, message", [
    (["export", "--model", "mdepth-mnv2-fbnte"], "unknown model 'mdepth-mnv2-fbnte': did you mean 'mdepth-mnv2-fbnet'?"),
    (["export", "--input-size", "250x256"], "multiples of 32"),
    (["export", "--precision", "fp8"], "unknown precision 'fp8'"),
    (["export", "--model", "nowhere_module:make"], "cannot import 'nowhere_module'"),
    (["models", "--input-size", "abc"], "is not HxW"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_missing_checkpoint_and_corrupt_checkpoint(capsys, tmp_path):
    code, _, err = run_cli(capsys, "export", "--model", "mdepth-tiny", "--checkpoint", str(tmp_path / "none.pt"))
    assert code == 2 and "does not exist" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    code, _, err = run_cli(capsys, "export", "--model", "mdepth-tiny", "--checkpoint", str(bad), "--out", str(tmp_path / "r"))
    assert code == 2 and "cannot be loaded safely" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob(".r.*"))


def test_unknown_command_suggests_the_closest(capsys):
    code, _, err = run_cli(capsys, "exprot")
    assert code == 2 and "(did you mean 'export'?)" in err
