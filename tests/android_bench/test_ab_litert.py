"""Today's phones (issue 15): both benchmark_model generations, NPU, NNAPI deprecation, the APK, device labs."""

from __future__ import annotations

import socket
import threading
import zipfile
from pathlib import Path

import pytest

from android_bench import tools
from android_bench.errors import BenchUserError
from android_bench.runner import ModelItem, RunOptions, benchmark
from tests.android_bench.test_ab_phones import assert_failed_without_numbers


@pytest.fixture(autouse=True)
def fresh_probes():
    tools.forget_probes()
    yield
    tools.forget_probes()


def run(models, devices, binary, **options):
    servers = options.pop("adb_servers", None)
    serial = options.pop("serial", None)
    opts = RunOptions(**{"runs": 6, "warmup": 1, **options})
    return benchmark([ModelItem(Path(m)) for m in models], devices, opts, serial=serial, binary=binary,
                     adb_servers=servers)


def test_help_probe_decides_the_generation_once_per_binary(fake_phones, arm64_binary, phone_model):
    fake_phones.set([fake_phones.phone("A", "SM-S921U", tool="litert2", sdk=35)])
    run([phone_model], ["S24"], arm64_binary)
    [result] = run([phone_model], ["S24"], arm64_binary)
    assert len([a for a in fake_phones.bench_argv(0, probes=True) if "--help" in a]) == 1  # cached by sha256
    assert result["tool"] == "litert_benchmark_model" and result["tool_version"].startswith("2.1.0 sha256:")
    argv = fake_phones.bench_argv(0)[-1]
    assert "--use_cpu=true" in argv and not any("xnnpack" in a or "peak_memory" in a for a in argv)
    assert result["stats"]["count"] == 6 and result["delegation"]["api_level"] == 35


def test_classic_binary_is_recorded_as_classic(fake_phones, arm64_binary, phone_model):
    fake_phones.set([fake_phones.phone("A", "SM-G991B")])
    [result] = run([phone_model], ["S21"], arm64_binary)
    assert result["tool"] == "benchmark_model" and result["tool_version"].startswith("unknown sha256:")


def test_litert_binary_refuses_nnapi_before_any_run(fake_phones, arm64_binary, phone_model):
    fake_phones.set([fake_phones.phone("A", "SM-S921U", tool="litert2")])
    with pytest.raises(BenchUserError, match="has no NNAPI.*--delegate gpu"):
        run([phone_model], ["S24"], arm64_binary, delegate="nnapi")
    assert fake_phones.bench_argv(0) == []


@pytest.mark.parametrize("fault, status, strict", [(None, "full", "passed"), ("fallback_partial", "partial", "Model is not fully accelerated"),
                                                   ("not_loaded", "none", None)])
def test_litert_gpu_delegation_from_strict_run_and_load_failures(fake_phones, arm64_binary, phone_model, fault, status, strict):
    fake_phones.set([fake_phones.phone("A", "SM-S921U", tool="litert2", fault=fault)])
    [result] = run([phone_model], ["S24"], arm64_binary, delegate="gpu")
    assert result["delegation"]["status"] == status and result["fallback"] is (status != "full")
    assert (result["delegation"]["strict_check"] or "").startswith(strict or "") and not result["failed"]
    runs = fake_phones.bench_argv(0)
    if strict is None:
        assert len(runs) == 1  # the GPU never loaded: no strict run needed
    else:
        assert "--use_cpu=false" in runs[-1] and "--require_full_delegation=true" in runs[-1]


def test_nnapi_on_android_15_is_flagged_deprecated(fake_phones, arm64_binary, phone_model, capsys):
    from android_bench.cli import main

    fake_phones.set([fake_phones.phone("A", "SM-S921U", sdk=35)])
    [result] = run([phone_model], ["S24"], arm64_binary, delegate="nnapi")
    assert result["delegation"]["nnapi_deprecated"] is True and not result["failed"]
    fake_phones.set([fake_phones.phone("A", "SM-S921U", sdk=34)])
    [older] = run([phone_model], ["S24"], arm64_binary, delegate="nnapi")
    assert older["delegation"]["nnapi_deprecated"] is False
    fake_phones.set([fake_phones.phone("A", "SM-S921U", sdk=35)])
    main(["run", str(phone_model), "-d", "S24", "--delegate", "nnapi", "--benchmark-binary", str(arm64_binary), "--runs", "2"])
    assert "NNAPI is deprecated since Android 15" in capsys.readouterr().out


def _npu_folder(tmp_path, names):
    folder = tmp_path / "qnn"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"\x7fELF lib")
    return folder


def test_npu_needs_the_vendor_libraries(fake_phones, arm64_binary, phone_model, tmp_path):
    fake_phones.set([fake_phones.phone("A", "SM-S921U", tool="litert2")])
    with pytest.raises(BenchUserError, match="--npu-libs DIR"):
        run([phone_model], ["S24"], arm64_binary, delegate="npu")
    partial = _npu_folder(tmp_path, ["libLiteRtDispatch_Qualcomm.so"])
    with pytest.raises(BenchUserError, match="lacks libQnnHtp.so, libQnnSystem.so, libLiteRtCompilerPlugin_Qualcomm.so"):
        run([phone_model], ["S24"], arm64_binary, delegate="npu", npu_libs=str(partial))
    assert fake_phones.bench_argv(0) == []


def test_npu_run_pushes_libraries_and_sets_library_paths(fake_phones, arm64_binary, tmp_path):
    aot_model = tmp_path / "model_aot.tflite"
    aot_model.write_bytes(b"TFL3" + b"DISPATCH_OP" + bytes(64))  # AOT: no compiler plugin needed
    folder = _npu_folder(tmp_path, ["libLiteRtDispatch_Qualcomm.so", "libQnnHtp.so", "libQnnSystem.so"])
    fake_phones.set([fake_phones.phone("A", "SM-S921U", tool="litert2")])
    [result] = run([aot_model], ["S24"], arm64_binary, delegate="npu", npu_libs=str(folder))
    assert not result["failed"] and result["delegation"]["status"] == "full", result["error"]
    env = fake_phones.bench_runs(0)[0]["env"]
    assert env["LD_LIBRARY_PATH"].endswith("/data/local/tmp/npu_libs/qualcomm") and env["ADSP_LIBRARY_PATH"]
    assert not any("compiler_plugin" in a for a in fake_phones.bench_argv(0)[0])


def test_classic_binary_refuses_npu(fake_phones, arm64_binary, phone_model):
    fake_phones.set([fake_phones.phone("A", "SM-S921U")])
    with pytest.raises(BenchUserError, match="classic benchmark_model has no LiteRT NPU"):
        run([phone_model], ["S24"], arm64_binary, delegate="npu")


def _apk(tmp_path, package="org.tensorflow.lite.benchmark"):
    path = tmp_path / f"{package}.apk"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("AndroidManifest.xml", b"\x03\x00\x08\x00" + package.encode("utf-16-le"))
    return path


def test_apk_method_installs_starts_and_reads_logcat(fake_phones, phone_model, tmp_path):
    fake_phones.set([fake_phones.phone("A", "SM-G991B")])
    [result] = run([phone_model], ["S21"], None, method="apk", apk=str(_apk(tmp_path)))
    assert not result["failed"], result["error"]
    assert result["tool"] == "benchmark_apk" and result["stats"]["count"] == 6
    calls = fake_phones.adb_calls()
    assert ["-s", "A", "install", "-r", "-t", "-g", str(tmp_path / "org.tensorflow.lite.benchmark.apk")] in calls
    assert ["-s", "A", "logcat", "-d", "-s", "tflite"] in calls
    assert any(c[2] == "shell" and "BenchmarkModelActivity" in c[3] for c in calls if len(c) > 3)
    with pytest.raises(BenchUserError, match="is not TensorFlow Lite's benchmark APK"):
        run([phone_model], ["S21"], None, method="apk", apk=str(_apk(tmp_path, "com.example.game")))


class LabServer:
    """A second fake adb server on a loopback port: it answers with its own phones' state file."""

    def __init__(self, state_path: Path):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.state_path = state_path
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(f"{self.state_path}\n".encode())


def test_lab_server_phones_join_device_all(fake_phones, arm64_binary, phone_model, tmp_path):
    from tests.android_bench.conftest import FakePhones

    lab = FakePhones(tmp_path / "lab")
    lab.set([lab.phone("LAB-PIXEL", "Pixel 8", tool="classic")])
    server = LabServer(lab.state_path)
    fake_phones.set([fake_phones.phone("LOCAL", "SM-G991B"), fake_phones.phone("GONE", "SM-G975F", fault="disconnect")])
    results = run([phone_model], ["all"], arm64_binary, adb_servers=[f"127.0.0.1:{server.port}"])
    by_serial = {r["device"]["serial"]: r for r in results}
    assert set(by_serial) == {"LOCAL", "GONE", "LAB-PIXEL"}
    assert not by_serial["LOCAL"]["failed"] and not by_serial["LAB-PIXEL"]["failed"]
    assert by_serial["LAB-PIXEL"]["device"]["profile"] == "pixel-8"
    assert_failed_without_numbers(by_serial["GONE"], "disconnected")
    server.sock.close()


def test_unreachable_adb_server_is_one_line_exit_2(fake_phones, arm64_binary, phone_model):
    from tests.faults.cli_faults import assert_user_error, run_cli

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    fake_phones.set([fake_phones.phone("LOCAL", "SM-G991B")])
    import os

    done = run_cli("run", str(phone_model), "-d", "all", "--benchmark-binary", str(arm64_binary),
                   "--adb-server", f"127.0.0.1:{port}", program="android-bench", env=dict(os.environ))
    assert_user_error(done, "adb server 127.0.0.1:", "unreachable")


@pytest.mark.parametrize("case", ["litert-nnapi", "npu-without-libs", "not-the-benchmark-apk"])
def test_bad_phone_requests_are_one_line_exit_2_through_the_cli(fake_phones, arm64_binary, phone_model, tmp_path, case):
    """The real `android-bench` command refuses each before any timed run: exit 2, one line, no traceback."""
    import os

    from tests.faults.cli_faults import assert_user_error, run_cli

    fake_phones.set([fake_phones.phone("A", "SM-S921U", tool="litert2")])
    common = ["run", str(phone_model), "-d", "S24", "--runs", "2"]
    args, words = {
        "litert-nnapi": (["--benchmark-binary", str(arm64_binary), "--delegate", "nnapi"], ("has no NNAPI", "--delegate gpu")),
        "npu-without-libs": (["--benchmark-binary", str(arm64_binary), "--delegate", "npu"], ("--npu-libs DIR",)),
        "not-the-benchmark-apk": (["--method", "apk", "--benchmark-apk", str(_apk(tmp_path, "com.example.game"))],
                                  ("is not TensorFlow Lite's benchmark APK",)),
    }[case]
    done = run_cli(*common, *args, program="android-bench", env=dict(os.environ))
    assert_user_error(done, *words)
    assert fake_phones.bench_argv(0) == []  # nothing was timed
