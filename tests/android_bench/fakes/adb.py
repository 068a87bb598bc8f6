"""Stand-in for the adb client: emulates attached phones for the tests (no phone needed).

State lives in the JSON file named by $FAKE_ADB_STATE:
  {"root": DIR, "log": FILE, "devices": [{"serial", "state", "props": {...}, "fault": null|NAME}]}
Each device has a filesystem under DIR/<index>/ ; "/data/local/tmp" in pushes and shell
commands maps there. ``shell`` runs the command string through a real ``sh -c`` (like the
phone's shell), so quoting mistakes would really execute injected commands. Faults:
  unauthorized / offline (device state), full (push fails: no space), and the
  benchmark_model faults handled by fakes/benchmark_model.py (crash, failed, hang,
  disconnect, fallback_none, fallback_partial, refuses_depth_to_space, slow, old_format).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import zipfile
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REMOTE = "/data/local/tmp"


def load():
    return json.loads(Path(os.environ["FAKE_ADB_STATE"]).read_text())


def lab_server(argv):
    """``-H HOST -P PORT``: ask the fake lab server (a real TCP listener) for its state file, or fail like adb."""
    host, port = argv[argv.index("-H") + 1], int(argv[argv.index("-P") + 1])
    try:
        with socket.create_connection((host, port), timeout=5) as conn:
            state_path = conn.makefile().readline().strip()
    except OSError as exc:
        fail(f"* cannot connect to daemon at tcp:{host}:{port}: {exc.strerror or exc}")
    os.environ["FAKE_ADB_STATE"] = state_path
    return argv[4:]  # the client always puts "-H HOST -P PORT" first


def log(state, entry):
    with open(state["log"], "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def fail(message, code=1):
    sys.stderr.write(message + "\n")
    sys.exit(code)


def device_root(state, index):
    root = Path(state["root"]) / str(index)
    (root / REMOTE.lstrip("/")).mkdir(parents=True, exist_ok=True)
    return root


def to_local(root, remote_text):
    return remote_text.replace(REMOTE, str(root) + REMOTE)


def main(argv):
    if argv[:1] == ["-H"]:
        argv = lab_server(argv)
    state = load()
    log(state, {"adb": argv})
    serial = None
    if len(argv) >= 2 and argv[0] == "-s":
        serial, argv = argv[1], argv[2:]
    if not argv:
        fail("adb: no command")
    command, rest = argv[0], argv[1:]
    visible = [d for d in state["devices"] if d.get("state") != "gone"]
    if command == "devices":
        print("List of devices attached")
        for device in visible:
            print(f"{device['serial']}\t{device['state']}")
        print()
        return 0
    if serial is None:
        if len(visible) != 1:
            fail("error: more than one device/emulator" if visible else "error: no devices/emulators found")
        serial = visible[0]["serial"]
    matches = [(i, d) for i, d in enumerate(state["devices"]) if d["serial"] == serial and d.get("state") != "gone"]
    if not matches:
        fail(f"error: device '{serial}' not found")
    index, device = matches[0]
    if command == "get-state":
        if device["state"] != "device":
            fail(f"error: device {device['state']}")
        print("device")
        return 0
    if device["state"] == "unauthorized":
        fail(
            "error: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\n"
            "Try 'adb kill-server' if that seems wrong.\nOtherwise check for a confirmation dialog on your device."
        )
    if device["state"] == "offline":
        fail("error: device offline")
    root = device_root(state, index)
    if command == "push":
        local, remote = rest
        if device.get("fault") == "full":
            fail(f"adb: error: failed to copy '{local}' to '{remote}': remote write failed: No space left on device")
        target = Path(to_local(root, remote))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)
        print(f"{local}: 1 file pushed, 0 skipped. ({target.stat().st_size} bytes in 0.001s)")
        return 0
    if command == "install":
        apk = rest[-1]
        with zipfile.ZipFile(apk) as archive:
            manifest = archive.read("AndroidManifest.xml")
        package = "org.tensorflow.lite.benchmark"
        if package.encode("utf-16-le") not in manifest:
            fail("adb: failed to install: Failure [INSTALL_PARSE_FAILED_NO_CERTIFICATES]")
        with open(root / "installed.txt", "a") as handle:
            handle.write(package + "\n")
        print("Performing Streamed Install\nSuccess")
        return 0
    if command == "logcat":
        log_file = root / "logcat.txt"
        if "-c" in rest:
            log_file.write_text("")
        elif log_file.exists():
            print(log_file.read_text(), end="")
        return 0
    if command == "shell":
        text = to_local(root, " ".join(rest))
        binary = str(root) + REMOTE + "/benchmark_model"
        if os.access(binary, os.X_OK):
            # The pushed file is an arm64 stub; the stand-in tool runs in its place.
            stand_in = f"{sys.executable} {HERE / 'benchmark_model.py'}"
            text = re.sub(re.escape(binary) + r"(?= '?--)", lambda _: stand_in, text)
        env = {
            "PATH": f"{HERE / 'device_bin'}:{Path(sys.executable).parent}:/usr/bin:/bin",
            "FAKE_ADB_STATE": os.environ["FAKE_ADB_STATE"],
            "FAKE_DEVICE_INDEX": str(index),
            "FAKE_DEVICE_ROOT": str(root),
        }
        done = subprocess.run(["sh", "-c", text], cwd=root, env=env)
        return 255 if load()["devices"][index].get("state") == "gone" else done.returncode
    fail(f"fake adb: unsupported command {command}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
