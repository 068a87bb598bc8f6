"""The adb path against a stand-in adb that emulates phones (tests/android_bench/fakes/)."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest

from android_bench import runner
from android_bench.adb import find_adb, quote_command
from android_bench.cli import main
from android_bench.errors import AdbError, BenchUserError
from android_bench.runner import ModelItem, RunOptions, benchmark


def run(phones_models, devices, binary, **options):
    models = [ModelItem(Path(m)) for m in phones_models]
    serial = options.pop("serial", None)
    profiles = options.pop("profiles", None)
    opts = RunOptions(**{"runs": 8, "warmup": 2, **options})
    return benchmark(models, devices, opts, serial=serial, binary=binary, profiles_path=profiles)


def assert_failed_without_numbers(result, *fragments):
    assert result["failed"] is True
    for fragment in fragments:
        assert fragment in result["error"], result["error"]
    assert result["samples_us"] == []
    assert all(value is None for value in result["stats"].values())
    assert result["init_us"] is None and result["memory"]["peak_mb"] is None


# -- finding adb -------------------------------------------------------------------------------
def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_adb_order(tmp_path):
    explicit = _exe(tmp_path / "explicit" / "adb")
    on_path = _exe(tmp_path / "onpath" / "adb")
    sdk = _exe(tmp_path / "sdk" / "platform-tools" / "adb")
    assert find_adb({"ADB": str(explicit), "PATH": str(on_path.parent)}) == str(explicit)
    assert find_adb({"PATH": str(on_path.parent), "ANDROID_HOME": str(tmp_path / "sdk")}) == str(on_path)
    assert find_adb({"PATH": str(tmp_path / "empty"), "ANDROID_HOME": str(tmp_path / "sdk")}) == str(sdk)


def test_missing_adb_says_how_to_install(tmp_path):
    with pytest.raises(AdbError, match="apt install adb"):
        find_adb({"PATH": str(tmp_path)})
    with pytest.raises(AdbError, match=r"\$ADB is set to"):
        find_adb({"ADB": str(tmp_path / "nope")})


# -- listing -----------------------------------------------------------------------------------
def test_devices_lists_states_and_profiles(fake_phones, capsys):
    fake_phones.set([
        fake_phones.phone("R5CR10AAA", "SM-G991B"),
        fake_phones.phone("R58M20BBB", "SM-G975U"),
        fake_phones.phone("UNAUTH1", state="unauthorized"),
        fake_phones.phone("OFF1", state="offline"),
        fake_phones.phone("MYSTERY", "Nokia 3310"),
    ])
    assert main(["devices", "--json"]) == 0
    listed = {d["serial"]: d for d in json.loads(capsys.readouterr().out)}
    assert listed["R5CR10AAA"]["profile"] == "galaxy-s21-exynos" and listed["R5CR10AAA"]["android"] == "13"
    assert listed["R58M20BBB"]["profile"] == "galaxy-s10plus-snapdragon"
    assert listed["UNAUTH1"]["state"] == "unauthorized" and listed["UNAUTH1"]["model_code"] is None
    assert listed["OFF1"]["state"] == "offline"
    assert listed["MYSTERY"]["profile"] is None and listed["MYSTERY"]["model_code"] == "Nokia 3310"
    assert main(["devices"]) == 0
    table = capsys.readouterr().out
    assert "unauthorized" in table and "galaxy-s21-exynos" in table


# -- a normal run ------------------------------------------------------------------------------
def test_run_parses_real_format_and_pins_big_cores(fake_phones, arm64_binary, phone_model):
    fake_phones.set([fake_phones.phone("R5CR10AAA", "SM-G991B")])
    [result] = run([phone_model], ["S21"], arm64_binary, delegate="cpu", threads=4)
    truth = fake_phones.bench_runs(0)[0]
    assert not result["failed"] and not result["fallback"]
    assert result["device"] == {"profile": "galaxy-s21-exynos", "serial": "R5CR10AAA", "model_code": "SM-G991B",
                                "soc": "Exynos 2100", "android": "13"}
    assert result["stats"]["count"] == len(truth["samples"]) == 8
    assert result["stats"]["mean"] == pytest.approx(statistics.fmean(truth["samples"]), rel=1e-5)
    assert result["stats"]["std"] == pytest.approx(statistics.pstdev(truth["samples"]), rel=1e-5)
    assert (result["stats"]["min"], result["stats"]["max"]) == (min(truth["samples"]), max(truth["samples"]))
    assert result["init_us"] == truth["init_us"] and result["first_inference_us"] == truth["first"]
    assert result["samples_kind"] == "per_invocation_avg" and len(result["samples_us"]) == 1
    assert result["delegation"]["status"] == "full" and result["memory"]["peak_mb"] == 14.3828
    assert fake_phones.taskset_masks(0) == ["f0"]
    [argv] = fake_phones.bench_argv(0)
    assert "--use_xnnpack=true" in argv and "--num_threads=4" in argv and "--num_runs=8" in argv
    assert "--warmup_runs=2" in argv and "--report_peak_memory_footprint=true" in argv


def test_profile_ops_adds_the_operator_table(fake_phones, arm64_binary, phone_model):
    fake_phones.set([fake_phones.phone("R5CR10AAA", "SM-G991B")])
    [result] = run([phone_model], ["S21"], arm64_binary, profile_ops=True)
    assert "--enable_op_profiling=true" in fake_phones.bench_argv(0)[0]
    ops = result["op_profile"]["ops"]
    assert [op["node_type"] for op in ops] == ["CONV_2D", "RESIZE_BILINEAR"]
    assert ops[1]["avg_ms"] == 0.8 and ops[1]["name"] == "decoder/up" and not result["failed"]


def test_push_only_when_changed(fake_phones, arm64_binary, phone_model):
    fake_phones.set([fake_phones.phone("R5CR10AAA", "SM-G991B")])
    run([phone_model], ["S21"], arm64_binary)
    pushes_first = [c for c in fake_phones.adb_calls() if "push" in c]
    assert len(pushes_first) == 2  # binary and model
    run([phone_model], ["S21"], arm64_binary)
    assert len([c for c in fake_phones.adb_calls() if "push" in c]) == 2  # identical bytes: nothing pushed
    phone_model.write_bytes(phone_model.read_bytes() + b"changed")
    run([phone_model], ["S21"], arm64_binary)
    pushes = [c for c in fake_phones.adb_calls() if "push" in c]
    assert len(pushes) == 3 and pushes[-1][-1] == "/data/local/tmp/model_fp16.tflite"


def test_several_invocations_give_one_sample_each_and_pooled_stats(fake_phones, arm64_binary, phone_model):
    fake_phones.set([fake_phones.phone("R5CR10AAA", "SM-G991B")])
    [result] = run([phone_model], ["S21"], arm64_binary, invocations=3)
    truths = fake_phones.bench_runs(0)
    everything = [s for t in truths for s in t["samples"]]
    assert len(result["samples_us"]) == 3
    for sample, truth in zip(result["samples_us"], truths):
        assert sample == pytest.approx(statistics.fmean(truth["samples"]), rel=1e-5)
    assert result["stats"]["count"] == 24
    assert result["stats"]["mean"] == pytest.approx(statistics.fmean(everything), rel=1e-5)
    assert result["stats"]["std"] == pytest.approx(statistics.pstdev(everything), rel=1e-3)
    assert result["stats"]["median"] is None  # percentiles do not pool: null, not a guess


# -- quoting -----------------------------------------------------------------------------------
def test_names_with_spaces_and_semicolons_run_nothing_extra(fake_phones, arm64_binary, tmp_path):
    sneaky = tmp_path / "my model; touch PWNED; $(touch PWNED2).tflite"
    sneaky.write_bytes(b"TFL3 sneaky")
    serial = "lab phone;touch PWNED3"
    fake_phones.set([fake_phones.phone(serial, "SM-G991B")])
    [result] = run([sneaky], ["S21"], arm64_binary, serial=serial)
    assert not result["failed"], result["error"]
    device_root = fake_phones.device_root(0)
    assert not any(device_root.rglob("PWNED*")) and not any(Path.cwd().glob("PWNED*"))
    [argv] = fake_phones.bench_argv(0)
    assert argv[0] == f"--graph={device_root}/data/local/tmp/{sneaky.name}"
    assert (device_root / "data/local/tmp" / sneaky.name).read_bytes() == sneaky.read_bytes()


def test_quote_command_keeps_each_argument_one_word():
    import shlex

    argv = ["taskset", "f0", "/data/local/tmp/benchmark_model", "--graph=/data/local/tmp/a b;c$(d).tflite"]
    assert shlex.split(quote_command(argv)) == argv


# -- choosing phones ---------------------------------------------------------------------------
def test_two_matching_phones_without_serial_is_an_error_listing_both(fake_phones, arm64_binary, phone_model):
    fake_phones.set([fake_phones.phone("S21-ONE", "SM-G991B"), fake_phones.phone("S21-TWO", "SM-G991U")])
    with pytest.raises(BenchUserError) as info:
        run([phone_model], ["S21"], arm64_binary)
    assert "S21-ONE" in str(info.value) and "S21-TWO" in str(info.value) and "--serial" in str(info.value)
    [result] = run([phone_model], ["S21"], arm64_binary, serial="S21-TWO")
    assert result["device"]["profile"] == "galaxy-s21-snapdragon" and not result["failed"]


def test_no_matching_phone_names_what_is_attached(fake_phones, arm64_binary, phone_model):
    fake_phones.set([fake_phones.phone("PIX", "Pixel 6"), fake_phones.phone("LOCKED", state="unauthorized")])
    with pytest.raises(BenchUserError, match="no connected phone matches 'S21'.*PIX.*LOCKED.*accept the USB debugging prompt"):
        run([phone_model], ["S21"], arm64_binary)


def test_all_runs_every_phone_in_parallel(fake_phones, arm64_binary, phone_model):
    fake_phones.set([
        fake_phones.phone("A", "SM-G991B"), fake_phones.phone("B", "SM-G975F"), fake_phones.phone("C", "Pixel 6"),
        fake_phones.phone("D", "Nokia 3310"),
    ])
    results = run([phone_model], ["all"], arm64_binary)
    assert [r["device"]["serial"] for r in results] == ["A", "B", "C", "D"]
    assert all(not r["failed"] for r in results)
    assert [fake_phones.taskset_masks(i) for i in range(3)] == [["f0"]] * 3
    assert fake_phones.taskset_masks(3) == []  # no profile, no mask: not pinned
    means = {r["device"]["serial"]: r["stats"]["mean"] for r in results}
    assert len(set(means.values())) == 4  # each phone reported its own numbers


def test_unsupported_delegate_is_rejected_before_anything_runs(fake_phones, arm64_binary, phone_model, tmp_path):
    lab = tmp_path / "lab.yaml"
    lab.write_text("profiles:\n  - name: old-phone\n    model_codes: [SM-J500F]\n    big_core_mask: '0f'\n    delegates: [cpu]\n")
    fake_phones.set([fake_phones.phone("J5", "SM-J500F")])
    with pytest.raises(BenchUserError, match="does not support delegate 'gpu'; it supports: cpu"):
        run([phone_model], ["old-phone"], arm64_binary, delegate="gpu", profiles=lab)
    assert not [c for c in fake_phones.adb_calls() if "push" in c]


def test_host_rejects_gpu_in_one_line(phone_model):
    with pytest.raises(BenchUserError, match="device 'host' does not support delegate 'gpu'; it supports: cpu"):
        benchmark([ModelItem(phone_model)], ["host"], RunOptions(delegate="gpu"))


def test_missing_binary_points_to_the_official_download(fake_phones, phone_model):
    fake_phones.set([fake_phones.phone("A", "SM-G991B")])
    with pytest.raises(BenchUserError, match="android_aarch64_benchmark_model.*--benchmark-binary"):
        run([phone_model], ["S21"], None)


def test_binary_must_be_arm64(tmp_path, phone_model):
    apk = tmp_path / "benchmark.apk"
    apk.write_bytes(b"PK\x03\x04" + bytes(60))
    with pytest.raises(BenchUserError, match="is an APK"):
        runner.resolve_binary(apk)
    with pytest.raises(BenchUserError, match="not an arm64"):
        runner.resolve_binary(Path(os.__file__))


# -- silent fallback ---------------------------------------------------------------------------
@pytest.mark.parametrize("fault, status", [("fallback_none", "none"), ("fallback_partial", "partial")])
def test_silent_fallback_is_flagged(fake_phones, arm64_binary, phone_model, fault, status, capsys):
    fake_phones.set([fake_phones.phone("A", "SM-G991B", fault=fault)])
    [result] = run([phone_model], ["S21"], arm64_binary, delegate="gpu")
    assert result["fallback"] is True and result["delegation"]["status"] == status and not result["failed"]
    [failed] = run([phone_model], ["S21"], arm64_binary, delegate="gpu", require_full_delegation=True)
    assert_failed_without_numbers(failed, "--require-full-delegation")
    code = main(["run", str(phone_model), "-d", "S21", "--delegate", "gpu", "--benchmark-binary", str(arm64_binary), "--runs", "3"])
    out = capsys.readouterr().out
    assert code == 0 and "WARNING" in out and "NOT a GPU number" in out and "ran on the CPU" in out


# -- faults ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "state, fragments",
    [("unauthorized", ["unauthorized", "Allow USB debugging"]), ("offline", ["offline", "replug"])],
)
def test_unusable_phone_is_a_failed_result(fake_phones, arm64_binary, phone_model, state, fragments):
    fake_phones.set([fake_phones.phone("BAD1", state=state)])
    [result] = run([phone_model], [], arm64_binary, serial="BAD1")
    assert_failed_without_numbers(result, *fragments)
    assert result["device"]["serial"] == "BAD1"


@pytest.mark.parametrize(
    "fault, fragments",
    [
        ("crash", ["crashed", "SIGSEGV"]),
        ("failed", ["Benchmarking failed", "failed to invoke"]),
        ("disconnect", ["disconnected during the run", "reconnect"]),
        ("full", ["no space left in /data/local/tmp", "free space"]),
    ],
)
def test_run_faults_become_failed_results(fake_phones, arm64_binary, phone_model, fault, fragments):
    fake_phones.set([fake_phones.phone("A", "SM-G991B", fault=fault), fake_phones.phone("B", "SM-G975F")])
    results = run([phone_model], ["all"], arm64_binary)
    broken, healthy = results
    assert_failed_without_numbers(broken, *fragments)
    assert not healthy["failed"] and healthy["stats"]["count"] == 8  # one bad phone does not sink the others


def test_hang_is_stopped_by_the_per_run_timeout(fake_phones, arm64_binary, phone_model, monkeypatch):
    monkeypatch.setattr(runner, "SETUP_ALLOWANCE_S", 1.0)
    fake_phones.set([fake_phones.phone("A", "SM-G991B", fault="hang")])
    [result] = run([phone_model], ["S21"], arm64_binary, run_timeout_s=0.1, runs=2, warmup=1)
    assert_failed_without_numbers(result, "did not finish within", "--timeout")
    assert result["duration_s"] < 60


def test_cli_run_exit_codes(fake_phones, arm64_binary, phone_model, capsys):
    fake_phones.set([fake_phones.phone("A", "SM-G991B", fault="failed")])
    code = main(["run", str(phone_model), "-d", "S21", "--benchmark-binary", str(arm64_binary), "--runs", "3", "--json"])
    [result] = json.loads(capsys.readouterr().out)
    assert code == 2 and result["failed"]
    assert main(["run", str(phone_model), "-d", "nope-phone", "--benchmark-binary", str(arm64_binary)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown device 'nope-phone'") and len(err.strip().splitlines()) == 1


def test_host_and_a_phone_in_one_request(fake_phones, arm64_binary, tiny_tflite):
    fake_phones.set([fake_phones.phone("R5CR10AAA", "SM-G991B")])
    results = run([tiny_tflite], ["S21", "host"], arm64_binary, runs=4, warmup=1)
    assert [r["device"]["profile"] for r in results] == ["galaxy-s21-exynos", "host"]
    assert [r["samples_kind"] for r in results] == ["per_invocation_avg", "per_run"]
    assert results[0]["artifact_sha256"] == results[1]["artifact_sha256"]
    assert len(results[1]["samples_us"]) == 4 and not any(r["failed"] for r in results)


def test_serial_that_is_not_the_named_device(fake_phones, arm64_binary, phone_model):
    fake_phones.set([fake_phones.phone("PIX", "Pixel 6")])
    with pytest.raises(BenchUserError, match="not a S21"):
        run([phone_model], ["S21"], arm64_binary, serial="PIX")
    with pytest.raises(BenchUserError, match="no phone with serial 'NOPE'"):
        run([phone_model], [], arm64_binary, serial="NOPE")
