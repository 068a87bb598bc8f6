"""The phone's thermal state (``dumpsys thermalservice``): parsing, recording around a run, the warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from android_bench import runner
from android_bench.adb import Completed
from android_bench.errors import DeviceError
from android_bench.runner import ModelItem, RunOptions, benchmark
from android_bench.thermal import ThermalWatch, parse_thermalservice, read_thermal, thermal_record

OUTPUTS = Path(__file__).resolve().parent / "outputs"


def fixture(name: str) -> str:
    return (OUTPUTS / f"thermalservice_{name}.txt").read_text()


# -- parsing -----------------------------------------------------------------------------------
def test_aidl_hal_moderate_throttling():
    state = parse_thermalservice(fixture("aidl_moderate"))
    assert state["status"] == 2 and state["status_name"] == "moderate" and state["source"] == "hal"
    # the HAL's current values, not the older cached ones (BIG 69.8 cached, 71.5 now); hottest per type
    assert state["celsius"] == {"cpu": 71.5, "gpu": 63.375, "npu": 52.125, "battery": 35.6, "skin": 41.735,
                                "usb_port": 33.2}
    assert state["throttling"] == ["BIG", "MID", "G3D", "VIRTUAL-SKIN"]
    assert "disp_therm" not in {s["name"] for s in state["sensors"]}  # NaN: no reading
    assert {"name": "LITTLE", "type": "cpu", "celsius": 58.875, "status": 0} in state["sensors"]


def test_cool_phone_and_hal_1_0():
    cool = parse_thermalservice(fixture("aidl_cool"))
    assert cool["status"] == 0 and cool["throttling"] == [] and cool["celsius"]["skin"] == 33.901
    old_hal = parse_thermalservice(fixture("hal10"))
    assert old_hal["status"] == 0 and old_hal["celsius"]["cpu"] == 48.1 and old_hal["celsius"]["gpu"] == 43.9


def test_hal_not_ready_falls_back_to_cached_temperatures():
    state = parse_thermalservice(fixture("hal_not_ready"))
    assert state["source"] == "cached" and state["status"] == 0
    assert state["celsius"] == {"cpu": 38.1, "battery": 32.2, "skin": 34.0}


@pytest.mark.parametrize("text", [fixture("permission_denied"), fixture("missing"), "", "/system/bin/sh: dumpsys: not found"])
def test_a_phone_that_does_not_report_gives_none(text):
    assert parse_thermalservice(text) is None


def test_status_alone_is_a_reading():
    state = parse_thermalservice("IsStatusOverride: true\nThermal Status: 3\nCached temperatures:\nHAL Ready: false\n")
    assert state["status"] == 3 and state["sensors"] == [] and state["source"] is None


# -- reading over adb ----------------------------------------------------------------------------
class ScriptedAdb:
    def __init__(self, outcome):
        self.outcome, self.calls = outcome, []

    def shell(self, serial, argv, timeout_s=None):
        self.calls.append((serial, argv))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def test_read_thermal_runs_dumpsys_and_never_fails():
    adb = ScriptedAdb(Completed(0, fixture("aidl_moderate"), ""))
    assert read_thermal(adb, "R58M")["status"] == 2
    assert adb.calls == [("R58M", ["dumpsys", "thermalservice"])]
    assert read_thermal(ScriptedAdb(DeviceError("phone R58M is offline", "R58M", "offline")), "R58M") is None
    assert read_thermal(ScriptedAdb(Completed(255, fixture("aidl_moderate"), "")), "R58M") is None
    assert read_thermal(None, "R58M") is None


# -- a block's record and the warning -------------------------------------------------------------
def test_thermal_record_peak_and_throttled():
    cool, hot = parse_thermalservice(fixture("aidl_cool")), parse_thermalservice(fixture("aidl_moderate"))
    record = thermal_record(cool, hot)
    assert record["before"] is cool and record["after"] is hot
    assert record["max_status"] == 2 and record["max_status_name"] == "moderate" and record["throttled"] is True
    assert thermal_record(cool, cool)["throttled"] is False
    assert thermal_record(None, None) is None
    assert thermal_record(None, hot)["max_status"] == 2


def test_watch_warns_once_per_phone_and_level(caplog):
    cool, hot = parse_thermalservice(fixture("aidl_cool")), parse_thermalservice(fixture("aidl_moderate"))
    severe = {**hot, "status": 3}
    watch = ThermalWatch()
    with caplog.at_level(logging.WARNING, logger="android_bench.thermal"):
        assert watch.observe("A", thermal_record(cool, cool)) is None
        first = watch.observe("A", thermal_record(cool, hot))
        assert watch.observe("A", thermal_record(hot, hot)) is None  # same level: said already
        assert "thermal status 3 (severe;" in watch.observe("A", thermal_record(hot, severe))
        assert watch.observe("B", thermal_record(cool, hot)) is not None  # another phone
        assert watch.observe("A", None) is None
    assert "phone A reports thermal status 2 (moderate;" in first and "BIG, G3D, MID, VIRTUAL-SKIN" in first
    assert "let it cool" in first
    assert len([r for r in caplog.records if r.name == "android_bench.thermal"]) == 3


# -- the phone run records it (stand-in adb and phones) -------------------------------------------
def _run(model, binary):
    return benchmark([ModelItem(Path(model))], ["S21"], RunOptions(runs=8, warmup=2), binary=binary)


def test_phone_run_records_thermal_before_and_after(fake_phones, phone_model, arm64_binary, monkeypatch, caplog):
    monkeypatch.setattr(runner, "WATCH", ThermalWatch())
    phone = fake_phones.phone("A", "SM-G991B")
    phone["thermal"] = ["thermalservice_aidl_cool.txt", "thermalservice_aidl_moderate.txt"]
    fake_phones.set([phone])
    with caplog.at_level(logging.WARNING, logger="android_bench.thermal"):
        [result] = _run(phone_model, arm64_binary)
    assert not result["failed"], result["error"]
    thermal = result["delegation"]["thermal"]
    assert thermal["before"]["status"] == 0 and thermal["after"]["status"] == 2 and thermal["throttled"] is True
    assert thermal["after"]["celsius"]["cpu"] == 71.5
    calls = [c for c in fake_phones.adb_calls() if c[2:3] == ["shell"] and "dumpsys" in c[3]]
    assert len(calls) == 2  # before and after the timed block
    shell = [c[3] for c in fake_phones.adb_calls() if c[2:3] == ["shell"]]
    bench_at = next(i for i, c in enumerate(shell) if "benchmark_model" in c and "--graph" in c)
    reads = [i for i, c in enumerate(shell) if "dumpsys" in c]
    assert reads[0] < bench_at and reads[1] == bench_at + 1
    assert any("phone A reports thermal status 2" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("thermal", [None, "thermalservice_permission_denied.txt", "thermalservice_missing.txt"])
def test_phone_that_does_not_report_runs_normally(fake_phones, phone_model, arm64_binary, monkeypatch, thermal):
    monkeypatch.setattr(runner, "WATCH", ThermalWatch())
    phone = fake_phones.phone("A", "SM-G991B")
    if thermal:
        phone["thermal"] = thermal
    fake_phones.set([phone])
    [result] = _run(phone_model, arm64_binary)
    assert not result["failed"], result["error"]
    assert result["delegation"]["thermal"] is None and result["stats"]["count"]
    dumpsys = [c for c in fake_phones.adb_calls() if c[2:3] == ["shell"] and "dumpsys" in c[3]]
    assert len(dumpsys) == 1  # no second read of a phone that did not report
