"""The phone's thermal state, where it reports one: ``adb shell dumpsys thermalservice``.

Android's ThermalManagerService (Android 10+) dumps, in this order (AOSP
``services/core/java/com/android/server/power/ThermalManagerService.java``, ``dump``):
``IsStatusOverride``, the listener lists, ``Thermal Status: N``, ``Cached temperatures:``,
``HAL Ready: true|false``, then, when the HAL is ready, ``HAL connection:``, ``Current
temperatures from HAL:``, ``Current cooling devices from HAL:`` and ``Temperature static
thresholds from HAL:``. Each temperature is one tab-indented ``Temperature{mValue=44.8,
mType=0, mName=AP, mStatus=0}`` line (``android.os.Temperature.toString``).

The status and every sensor's ``mStatus`` are throttling levels (``android.os.Temperature``):
0 none, 1 light, 2 moderate, 3 severe, 4 critical, 5 emergency, 6 shutdown. Sensor types:
0 CPU, 1 GPU, 2 battery, 3 skin, 4 USB port, 5 power amplifier, 6-8 BCL, 9 NPU, ...

A phone that does not report (no such service on Android 9 and older, ``Permission Denial``
on a locked-down build, the HAL not connected, adb failing) gives ``None``, never an error:
the thermal state is evidence beside a latency, not a condition for measuring one.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from android_bench.errors import BenchError

STATUS_NAMES = ("none", "light", "moderate", "severe", "critical", "emergency", "shutdown")
# the status from which a latency is suspect: any throttling at all (light already lowers clocks on
# many phones; Android documents it as "UX not impacted", not "performance not impacted")
THROTTLING_STATUS = 1
SENSOR_TYPES = {0: "cpu", 1: "gpu", 2: "battery", 3: "skin", 4: "usb_port", 5: "power_amplifier",
                6: "bcl_voltage", 7: "bcl_current", 8: "bcl_percentage", 9: "npu", 10: "tpu", 11: "display",
                12: "modem", 13: "soc", 14: "wifi", 15: "camera", 16: "flashlight", 17: "speaker",
                18: "ambient", 19: "pogo"}
HAL_SECTION = "Current temperatures from HAL:"
CACHED_SECTION = "Cached temperatures:"
_STATUS = re.compile(r"^Thermal Status:\s*(-?\d+)\s*$", re.MULTILINE)
_TEMPERATURE = re.compile(r"Temperature\{mValue=([^,]+), mType=(-?\d+), mName=([^,]*), mStatus=(-?\d+)\}")
_BOUNDARY = re.compile(r"\S")  # a line starting at column 0 ends a tab-indented section

log = logging.getLogger("android_bench.thermal")


def status_name(status: int | None) -> str | None:
    """``2`` -> ``"moderate"`` (None for None or an unknown code)."""
    return STATUS_NAMES[status] if status is not None and 0 <= status < len(STATUS_NAMES) else None


def _section(text: str, header: str) -> list[str] | None:
    """The indented lines under ``header`` (None when the header is absent)."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == header)
    except StopIteration:
        return None
    body = []
    for line in lines[start + 1:]:
        if _BOUNDARY.match(line):
            break
        body.append(line)
    return body


def _sensors(lines: list[str]) -> list[dict[str, Any]]:
    """Every well-formed, finite ``Temperature{...}`` line as {name, type, celsius, status}."""
    found = []
    for line in lines:
        match = _TEMPERATURE.search(line)
        if not match:
            continue
        try:
            celsius = float(match.group(1))
        except ValueError:
            continue
        if not math.isfinite(celsius):
            continue
        kind = int(match.group(2))
        found.append({"name": match.group(3).strip(), "type": SENSOR_TYPES.get(kind, f"type_{kind}"),
                      "celsius": celsius, "status": int(match.group(4))})
    return found


def parse_thermalservice(text: str) -> dict[str, Any] | None:
    """The thermal state in a ``dumpsys thermalservice`` output, or None when it reports none.

    ``status``: the system's thermal status (0-6), ``status_name``; ``sensors``: the HAL's current
    temperatures (the cached ones when the HAL is not connected; ``source`` says which);
    ``celsius``: the hottest sensor per type (cpu, gpu, skin, battery, ...); ``throttling``: the
    sensors whose own status is at a throttling level."""
    match = _STATUS.search(text)
    status = int(match.group(1)) if match else None
    hal = _section(text, HAL_SECTION)
    source, lines = ("hal", hal) if hal else ("cached", _section(text, CACHED_SECTION) or [])
    sensors = _sensors(lines)
    if status is None and not sensors:
        return None
    celsius: dict[str, float] = {}
    for sensor in sensors:
        celsius[sensor["type"]] = max(celsius.get(sensor["type"], -math.inf), sensor["celsius"])
    return {"status": status, "status_name": status_name(status), "source": source if sensors else None,
            "celsius": celsius, "throttling": [s["name"] for s in sensors if s["status"] >= THROTTLING_STATUS],
            "sensors": sensors}


def read_thermal(adb, serial: str, timeout_s: float = 15.0) -> dict[str, Any] | None:
    """The phone's thermal state now (``dumpsys thermalservice`` over ``adb``), or None where it reports none."""
    if adb is None:
        return None
    try:
        done = adb.shell(serial, ["dumpsys", "thermalservice"], timeout_s=timeout_s)
    except BenchError:
        return None  # adb trouble is reported by the benchmark step itself, not here
    return parse_thermalservice(done.stdout) if done.returncode == 0 else None


def thermal_record(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any] | None:
    """The thermal state around one timed block: both readings, the highest status seen and whether
    it reached a throttling level (None when the phone reported neither time)."""
    if before is None and after is None:
        return None
    statuses = [r["status"] for r in (before, after) if r is not None and r["status"] is not None]
    peak = max(statuses) if statuses else None
    return {"before": before, "after": after, "max_status": peak, "max_status_name": status_name(peak),
            "throttled": peak is not None and peak >= THROTTLING_STATUS}


class ThermalWatch:
    """Warns once per phone per level: when a phone's status first reaches a throttling level in this
    session, and again only if it climbs higher (an interleaved session reads the phone every turn)."""

    def __init__(self):
        self.warned: dict[str, int] = {}

    def observe(self, serial: str, record: dict[str, Any] | None) -> str | None:
        """The warning for this reading (also logged), or None."""
        peak = record["max_status"] if record else None
        if peak is None or peak < THROTTLING_STATUS or peak <= self.warned.get(serial, 0):
            return None
        self.warned[serial] = peak
        hot = ", ".join(sorted({name for r in (record["before"], record["after"]) if r for name in r["throttling"]}))
        hot = hot or "none named"
        message = (f"phone {serial} reports thermal status {peak} ({status_name(peak)}; throttling sensors: {hot}): "
                   "its latencies are throttled; let it cool (screen off, off the charger) and re-run, "
                   "or lengthen the cool-down between blocks")
        log.warning(message)
        return message


WATCH = ThermalWatch()  # the process's session: one warning per phone and level
