"""The adb transport: find adb, list phones, push files only when they changed, run commands.

We drive the platform-tools ``adb`` client (Google's platform-tools, or Debian/Ubuntu's
``adb`` package) as a subprocess: it is the tool phone labs already trust and keep up to
date, and it talks to the one adb server that owns the USB devices. adb is looked up in
``$ADB``, then ``PATH``, then ``$ANDROID_HOME`` / ``$ANDROID_SDK_ROOT`` ``/platform-tools``.

Safety: host-side commands are argv lists (no host shell). The device side always runs a
shell, so every argument sent to it is quoted with ``shlex.quote``: a file name or serial
with spaces or ``;`` stays one argument and never runs anything.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from android_bench.errors import AdbError, AdbMissing, DeviceError, DeviceTimeout

REMOTE_DIR = "/data/local/tmp"
INSTALL_HINT = (
    "install Android platform-tools (Debian/Ubuntu: 'sudo apt install adb'; or Google's "
    "platform-tools zip from https://developer.android.com/tools/releases/platform-tools) "
    "and put adb on PATH, or set $ADB to its path"
)


def find_adb(env: dict[str, str] | None = None) -> str:
    """Path of the adb client: ``$ADB``, then PATH, then ``$ANDROID_HOME/platform-tools``."""
    env = os.environ if env is None else env
    explicit = env.get("ADB")
    if explicit:
        if Path(explicit).is_file() and os.access(explicit, os.X_OK):
            return explicit
        raise AdbMissing(f"$ADB is set to '{explicit}', which is not an executable file; fix $ADB or unset it")
    on_path = shutil.which("adb", path=env.get("PATH"))
    if on_path:
        return on_path
    for var in ("ANDROID_HOME", "ANDROID_SDK_ROOT"):
        root = env.get(var)
        if root:
            candidate = Path(root) / "platform-tools" / "adb"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    raise AdbMissing(f"adb not found in $ADB, PATH or $ANDROID_HOME/platform-tools: {INSTALL_HINT}")


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def quote_command(argv: list[str]) -> str:
    """One device-shell command line in which every argument is a single quoted word."""
    return " ".join(shlex.quote(str(arg)) for arg in argv)


def classify_adb_error(serial: str | None, text: str) -> DeviceError | None:
    """Turn adb's own error text into a DeviceError with a message naming the fix."""
    lowered = text.lower()
    who = f"phone {serial}" if serial else "the phone"
    if "unauthorized" in lowered:
        return DeviceError(
            f"{who} is unauthorized: unlock it and accept the 'Allow USB debugging?' prompt "
            "(tick 'Always allow from this computer'), then retry",
            serial,
            "unauthorized",
        )
    if "no space left on device" in lowered:
        return DeviceError(
            f"no space left in {REMOTE_DIR} on {who}: free space on the phone "
            f"(e.g. 'adb -s {serial} shell rm {REMOTE_DIR}/<old file>') and retry",
            serial,
            "storage_full",
        )
    if "offline" in lowered:
        return DeviceError(
            f"{who} is offline: replug the USB cable (or run 'adb reconnect'), wait for 'device' "
            "in 'adb devices', then retry",
            serial,
            "offline",
        )
    if any(s in lowered for s in ("not found", "no devices", "closed", "protocol fault", "connection reset", "device still connecting")):
        first = text.strip().splitlines()[0] if text.strip() else "no response"
        return DeviceError(
            f"{who} disconnected or is not attached (adb: {first}); check the cable and "
            "'adb devices', then retry",
            serial,
            "disconnected",
        )
    return None


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class AttachedDevice:
    """One line of ``adb devices``: serial and state (device, unauthorized, offline, ...)."""

    serial: str
    state: str
    model_code: str | None = None
    android: str | None = None
    api_level: int | None = None


def parse_server(text: str) -> tuple[str, int]:
    """``HOST:PORT`` of an adb server (``--adb-server``) -> (host, port); a bad value is a user error."""
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise AdbMissing(f"--adb-server '{text}' is not HOST:PORT; give e.g. lab-pc.local:5037")
    return host.strip("[]"), int(port)


class Adb:
    """A thin, timeout-aware wrapper over the adb client."""

    def __init__(self, path: str | None = None, env: dict[str, str] | None = None, timeout_s: float = 60.0,
                 server: str | None = None):
        self.path = path or find_adb(env)
        self.timeout_s = timeout_s
        self.server = server  # "HOST:PORT" of another machine's adb server (a device lab), None: the local one
        self._server_args = []
        if server is not None:
            host, port = parse_server(server)
            self._server_args = ["-H", host, "-P", str(port)]

    def run(self, args: list[str], timeout_s: float | None = None, serial: str | None = None) -> Completed:
        """Run ``adb [-s serial] args…``; on timeout kill adb and everything it started."""
        argv = [self.path, *self._server_args, *(["-s", serial] if serial else []), *args]
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise AdbMissing(f"cannot run adb at {self.path} ({exc}); {INSTALL_HINT}") from exc
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            what = " ".join(args[:1] + (["…"] if len(args) > 1 else []))
            raise DeviceTimeout(
                f"'adb {what}' on {serial or 'the phone'} did not finish within {timeout:.0f} s and was "
                "stopped; check the phone is awake and responsive, or raise --timeout",
                serial,
                "timeout",
            ) from None
        return Completed(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def checked(self, args: list[str], serial: str | None = None, timeout_s: float | None = None) -> Completed:
        """Run adb and raise a DeviceError/AdbError when adb itself reports a failure."""
        done = self.run(args, timeout_s=timeout_s, serial=serial)
        if done.returncode != 0:
            text = (done.stderr + "\n" + done.stdout).strip()
            raise classify_adb_error(serial, text) or AdbError(
                f"adb {' '.join(args[:1])} failed on {serial or 'the host'}: {text.splitlines()[-1] if text else 'exit ' + str(done.returncode)}"
            )
        return done

    # -- devices -------------------------------------------------------------------------
    def devices(self) -> list[AttachedDevice]:
        """Attached devices with their state, from ``adb devices`` (TAB-separated)."""
        try:
            done = self.checked(["devices"])
        except (AdbError, DeviceError) as exc:
            if self.server is None:
                raise
            raise AdbMissing(f"the adb server {self.server} is unreachable ({str(exc)[:160]}); check that the lab "
                             "machine runs 'adb -a nodaemon server' (or 'adb -a start-server') and the port is open") from None
        found = []
        for line in done.stdout.splitlines():
            if not line.strip() or line.startswith(("List of devices", "*")) or "\t" not in line:
                continue
            serial, _, state = line.partition("\t")
            found.append(AttachedDevice(serial=serial, state=state.strip().split()[0] if state.strip() else "unknown"))
        return found

    def describe(self, device: AttachedDevice) -> AttachedDevice:
        """Fill model code and Android version for a device in state ``device``."""
        if device.state == "device":
            device.model_code = self.getprop(device.serial, "ro.product.model") or None
            device.android = self.getprop(device.serial, "ro.build.version.release") or None
            sdk = self.getprop(device.serial, "ro.build.version.sdk")
            device.api_level = int(sdk) if sdk.isdigit() else None
        return device

    def get_state(self, serial: str) -> str | None:
        """The device's state now, or None when adb no longer sees it."""
        done = self.run(["get-state"], serial=serial, timeout_s=15)
        if done.returncode != 0:
            text = (done.stderr + done.stdout).lower()
            for state in ("unauthorized", "offline"):
                if state in text:
                    return state
            return None
        return done.stdout.strip() or None

    # -- shell -----------------------------------------------------------------------------
    def shell(self, serial: str, argv: list[str], timeout_s: float | None = None, merge_stderr: bool = True) -> Completed:
        """Run one command on the phone, every argument quoted; device stderr merged into stdout."""
        command = quote_command(argv) + (" 2>&1" if merge_stderr else "")
        done = self.run(["shell", command], timeout_s=timeout_s, serial=serial)
        adb_problem = classify_adb_error(serial, done.stderr) if done.stderr.strip() else None
        if adb_problem is not None:
            raise adb_problem
        return done

    def getprop(self, serial: str, prop: str) -> str:
        done = self.shell(serial, ["getprop", prop], timeout_s=15)
        return done.stdout.strip()

    def remote_sha256(self, serial: str, remote: str) -> str | None:
        """sha256 of a file on the phone, or None if it is missing (or sha256sum is absent)."""
        done = self.shell(serial, ["sha256sum", remote], timeout_s=60)
        first = done.stdout.strip().split()
        if done.returncode == 0 and first and len(first[0]) == 64:
            return first[0].lower()
        return None

    def push(self, serial: str, local: str | os.PathLike, remote: str, timeout_s: float = 300) -> None:
        done = self.run(["push", str(local), remote], timeout_s=timeout_s, serial=serial)
        text = done.stderr + "\n" + done.stdout
        if done.returncode != 0 or "error:" in text.lower():
            raise classify_adb_error(serial, text) or DeviceError(
                f"adb push of {Path(local).name} to {serial} failed ({text.strip().splitlines()[-1] if text.strip() else 'no output'}); "
                "check free space and permissions on the phone",
                serial,
                "push",
            )

    def push_if_changed(self, serial: str, local: str | os.PathLike, remote: str, executable: bool = False) -> bool:
        """Push ``local`` to ``remote`` unless the phone already has identical bytes.

        The comparison is sha256 on both sides; after a push the phone's copy is verified,
        so a truncated copy (e.g. storage filled up mid-push) is an error, not a silent run.
        Returns True when the file was pushed.
        """
        local_sha = sha256_of(local)
        if self.remote_sha256(serial, remote) == local_sha:
            return False
        self.push(serial, local, remote)
        after = self.remote_sha256(serial, remote)
        if after is not None and after != local_sha:
            raise DeviceError(
                f"the copy of {Path(local).name} on {serial} is incomplete (sha256 differs after push); "
                f"free space in {REMOTE_DIR} on the phone and retry",
                serial,
                "storage_full",
            )
        if executable:
            self.shell(serial, ["chmod", "755", remote], timeout_s=30)
        return True

    def install(self, serial: str, apk: str | os.PathLike) -> None:
        """``adb install -r -t -g APK``: replace, allow test APKs, grant runtime permissions."""
        self.checked(["install", "-r", "-t", "-g", str(apk)], serial=serial, timeout_s=300)

    def logcat(self, serial: str, *args: str) -> str:
        """``adb logcat ARGS…`` (dump or clear; never a following read)."""
        return self.checked(["logcat", *args], serial=serial, timeout_s=30).stdout

    def kill_remote(self, serial: str, pattern: str) -> None:
        """Best effort: stop a process left running on the phone after a timeout."""
        try:
            self.shell(serial, ["pkill", "-f", pattern], timeout_s=10)
        except Exception:  # noqa: BLE001 - cleanup must never mask the original failure
            pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
