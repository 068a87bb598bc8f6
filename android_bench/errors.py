"""Errors of android_bench: one line naming the problem and the fix, with an exit code.

android_bench cannot import mobiledepth, so it has its own base class; the mobiledepth CLI
catches ``BenchError`` and prints it the same way as its own errors.
"""

from __future__ import annotations


class BenchError(Exception):
    """A benchmark could not run; the message names the problem and the fix (exit 2, as every problem)."""

    exit_code = 2


class BenchUserError(BenchError):
    """Bad input: unknown device or delegate, missing model or binary, impossible combination."""

    exit_code = 2


class AdbError(BenchError):
    """adb itself failed or is missing."""


class AdbMissing(AdbError, BenchUserError):
    """adb cannot be found or started: an environment problem the user fixes (exit 2)."""


class DeviceError(BenchError):
    """A phone is unusable (unauthorized, offline, disconnected, storage full, ...)."""

    def __init__(self, message: str, serial: str | None = None, kind: str = "device"):
        super().__init__(message)
        self.serial = serial
        self.kind = kind


class DeviceTimeout(DeviceError):
    """A command on the phone did not finish within its time limit."""
