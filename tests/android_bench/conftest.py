"""Fixtures for android_bench: emulated phones behind a stand-in adb, and tiny real models."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FAKES = HERE / "fakes"


def arm64_stub_bytes() -> bytes:
    """The first 64 bytes of an arm64 ELF executable (enough for the binary check)."""
    header = bytearray(64)
    header[0:4] = b"\x7fELF"
    header[4], header[5], header[6] = 2, 1, 1  # 64-bit, little-endian, version 1
    header[16:18] = (2).to_bytes(2, "little")  # ET_EXEC
    header[18:20] = (183).to_bytes(2, "little")  # EM_AARCH64
    return bytes(header)


class FakePhones:
    """Control panel of the stand-in adb: which phones exist, their faults, what was run."""

    def __init__(self, root: Path):
        self.root = root
        self.state_path = root / "adb_state.json"
        self.log_path = root / "adb_log.jsonl"
        self.devices_root = root / "phones"
        self.devices_root.mkdir(parents=True)
        self.log_path.touch()
        self.set([])

    def set(self, devices: list[dict]) -> None:
        state = {"root": str(self.devices_root), "log": str(self.log_path), "devices": devices}
        self.state_path.write_text(json.dumps(state))

    def phone(self, serial: str, model: str = "SM-G991B", state: str = "device", fault: str | None = None,
              sdk: int = 33, tool: str = "classic") -> dict:
        """One emulated phone; ``tool`` is the personality of the benchmark_model it runs (classic | litert2)."""
        return {
            "serial": serial,
            "state": state,
            "fault": fault,
            "tool": tool,
            "props": {"ro.product.model": model, "ro.build.version.release": str(sdk - 20), "ro.build.version.sdk": str(sdk)},
        }

    def device_root(self, index: int) -> Path:
        return self.devices_root / str(index)

    def adb_calls(self) -> list[list[str]]:
        return [json.loads(line)["adb"] for line in self.log_path.read_text().splitlines() if line.strip()]

    def bench_runs(self, index: int) -> list[dict]:
        file = self.device_root(index) / "bench_runs.jsonl"
        return [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []

    def bench_argv(self, index: int, probes: bool = False) -> list[list[str]]:
        """argv of every benchmark_model run on the phone (its --help probes only when asked)."""
        file = self.device_root(index) / "bench_argv.jsonl"
        runs = [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []
        return [argv for argv in runs if probes or "--help" not in argv]

    def taskset_masks(self, index: int) -> list[str]:
        file = self.device_root(index) / "taskset.log"
        return file.read_text().split() if file.exists() else []


@pytest.fixture
def fake_phones(tmp_path, monkeypatch) -> FakePhones:
    """A stand-in ``adb`` on $ADB and PATH, with no phones until the test adds some."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKES / "adb.py"}" "$@"\n')
    adb.chmod(0o755)
    phones = FakePhones(tmp_path / "fake")
    monkeypatch.setenv("ADB", str(adb))
    monkeypatch.setenv("FAKE_ADB_STATE", str(phones.state_path))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("ANDROID_BENCH_PROFILES", raising=False)
    monkeypatch.delenv("ANDROID_BENCH_BINARY", raising=False)
    return phones


@pytest.fixture
def arm64_binary(tmp_path) -> Path:
    path = tmp_path / "android_aarch64_benchmark_model"
    path.write_bytes(arm64_stub_bytes())
    return path


@pytest.fixture
def phone_model(tmp_path) -> Path:
    """A model file for phone runs (the stand-in tool only needs it to exist on the 'phone')."""
    path = tmp_path / "model_fp16.tflite"
    path.write_bytes(b"TFL3" + bytes(range(256)) * 8)
    return path


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory) -> Path:
    """A real tiny conv TFLite model, built once per session with tensorflow's converter."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ab_tflite_models", HERE / "ab_tflite_models.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    return builder.build_conv_tflite(tmp_path_factory.mktemp("tflite") / "tiny_conv.tflite")
