"""Phone runs: pick the phones, push binary and model, run benchmark_model, build BenchResults.

Samples: benchmark_model prints only statistics of its timed runs, never the individual
times, so a phone result keeps one sample per *invocation* of the tool (that invocation's
``Inference (avg)``), ``samples_kind: "per_invocation_avg"``; ``stats`` are the tool's own
statistics of every timed run, pooled exactly across invocations (count/min/max/mean/std;
median/p5/p95 only when there was one invocation, because percentiles do not pool).
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from android_bench.adb import REMOTE_DIR, Adb, classify_adb_error, sha256_of
from android_bench.errors import BenchUserError, DeviceError, DeviceTimeout
from android_bench.flags import benchmark_flags, check_counts, device_command
from android_bench.parser import parse_output
from android_bench.profiles import DELEGATES, DeviceProfile, profile_for_model, profiles_named
from android_bench.result import apply_delegation_policy, mark_failed, new_result, pool_tool_stats

BINARY_ENV = "ANDROID_BENCH_BINARY"
REMOTE_BINARY = f"{REMOTE_DIR}/benchmark_model"
OFFICIAL_BINARY_URL = (
    "https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/"
    "nightly/latest/android_aarch64_benchmark_model"
)
SETUP_ALLOWANCE_S = 60.0  # model load, delegate compilation (GPU kernels can take tens of seconds)


@dataclass
class PhoneTarget:
    """A phone chosen for a run: its adb identity, what it is and which profile describes it."""

    serial: str
    state: str
    model_code: str | None = None
    android: str | None = None
    profile: DeviceProfile | None = None

    def label(self) -> str:
        what = self.profile.name if self.profile else (self.model_code or "unknown model")
        return f"{self.serial} ({what}, {self.state})"


@dataclass
class RunOptions:
    """Everything one benchmark_model run needs besides the phone."""

    delegate: str = "cpu"
    threads: int = 1
    runs: int = 50
    warmup: int = 5
    profile_ops: bool = False
    require_full_delegation: bool = False
    invocations: int = 1
    run_timeout_s: float = 30.0

    def validate(self) -> None:
        if self.delegate not in DELEGATES:
            raise BenchUserError(f"unknown delegate '{self.delegate}'; choose one of: {', '.join(DELEGATES)}")
        check_counts(self.threads, self.runs, self.warmup)
        if self.invocations < 1:
            raise BenchUserError(f"--invocations must be at least 1 (got {self.invocations})")
        if self.run_timeout_s <= 0:
            raise BenchUserError(f"--timeout must be positive seconds per run (got {self.run_timeout_s})")

    def command_timeout_s(self) -> float:
        """Time limit of one invocation: a setup allowance plus the per-run limit for every run."""
        return SETUP_ALLOWANCE_S + (self.runs + self.warmup) * self.run_timeout_s


# -- the benchmark binary ----------------------------------------------------------------------
def resolve_binary(explicit: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> Path:
    """The arm64 benchmark_model to push: ``--benchmark-binary`` or ``$ANDROID_BENCH_BINARY``."""
    env = os.environ if env is None else env
    given = explicit or env.get(BINARY_ENV)
    if not given:
        raise BenchUserError(
            "no benchmark_model binary given: download the official prebuilt android_aarch64_benchmark_model "
            f"({OFFICIAL_BINARY_URL}) and pass it with --benchmark-binary PATH or set ${BINARY_ENV}"
        )
    path = Path(given).expanduser()
    if path.is_dir():
        raise BenchUserError(
            f"benchmark binary {path} is a directory; pass the android_aarch64_benchmark_model file inside it"
        )
    if not path.is_file():
        raise BenchUserError(f"benchmark binary {path} does not exist; pass the downloaded android_aarch64_benchmark_model")
    check_arm64_elf(path)
    return path


def check_arm64_elf(path: Path) -> None:
    """Reject what cannot run on an arm64 phone (the APK, an x86-64 build, a script)."""
    head = path.read_bytes()[:20]
    if head[:2] == b"PK":
        raise BenchUserError(
            f"{path.name} is an APK; android-bench runs the native binary: download android_aarch64_benchmark_model (no .apk)"
        )
    if head[:4] != b"\x7fELF" or len(head) < 20 or head[4] != 2 or int.from_bytes(head[18:20], "little") != 183:
        raise BenchUserError(
            f"{path} is not an arm64 (aarch64) Linux executable; use the android_aarch64_benchmark_model build"
        )


# -- choosing phones ---------------------------------------------------------------------------
def attached_targets(adb: Adb, profiles: list[DeviceProfile]) -> list[PhoneTarget]:
    """Every phone adb sees, described (model code, Android version, profile) when usable."""
    targets = []
    for device in adb.devices():
        state = device.state
        if state == "device":
            try:
                adb.describe(device)
            except DeviceError as exc:
                state = exc.kind
        targets.append(
            PhoneTarget(device.serial, state, device.model_code, device.android, profile_for_model(profiles, device.model_code))
        )
    return targets


def select_targets(
    attached: list[PhoneTarget], profiles: list[DeviceProfile], devices: list[str], serial: str | None = None
) -> list[PhoneTarget]:
    """Phones for ``--device NAME…`` / ``all`` and ``--serial``; ambiguity and no-match are errors."""
    names = [d for d in devices if d.lower() != "host"]
    if serial is not None:
        chosen = [t for t in attached if t.serial == serial]
        if not chosen:
            raise BenchUserError(f"no phone with serial '{serial}' is attached; attached: {_listing(attached)}")
        target = chosen[0]
        wanted = [p for n in names if n.lower() != "all" for p in profiles_named(profiles, n)]
        if wanted and target.state == "device" and target.profile not in wanted:
            raise BenchUserError(
                f"phone {serial} is a {target.model_code or 'phone of unknown model'}, not a {'/'.join(names)}; "
                "drop --device or pick the matching --serial"
            )
        return [target]
    if any(n.lower() == "all" for n in names):
        if not attached:
            raise BenchUserError("no phone is attached: connect one with USB debugging on (see docs/bench.md)")
        return list(attached)
    selected: list[PhoneTarget] = []
    for name in names:
        wanted = profiles_named(profiles, name)
        matches = [t for t in attached if t.state == "device" and t.profile in wanted]
        if not matches:
            codes = ", ".join(c for p in wanted for c in p.model_codes)
            raise BenchUserError(
                f"no connected phone matches '{name}' (model codes {codes}); attached: {_listing(attached)}"
            )
        if len(matches) > 1:
            raise BenchUserError(
                f"{len(matches)} connected phones match '{name}': {', '.join(t.label() for t in matches)}; "
                "pick one with --serial SERIAL, or use --device all"
            )
        if matches[0] not in selected:
            selected.append(matches[0])
    return selected


def _listing(attached: list[PhoneTarget]) -> str:
    if not attached:
        return "none (check the cable, USB debugging and 'adb devices')"
    notes = []
    for target in attached:
        note = target.label()
        if target.state == "unauthorized":
            note += " - accept the USB debugging prompt on the phone"
        elif target.state == "offline":
            note += " - replug it"
        notes.append(note)
    return "; ".join(notes)


# -- one phone ---------------------------------------------------------------------------------
def check_delegate_for(target: PhoneTarget, delegate: str) -> None:
    if target.profile is not None:
        target.profile.check_delegate(delegate)


def run_on_phone(
    adb: Adb,
    target: PhoneTarget,
    model_path: str | os.PathLike,
    binary: Path,
    options: RunOptions,
    artifact_sha256: str | None = None,
) -> dict[str, Any]:
    """Benchmark one model on one phone; faults become a failed result, never an exception."""
    started = time.monotonic()
    model = Path(model_path)
    result = new_result(
        artifact_sha256=artifact_sha256 or sha256_of(model),
        model_path=str(model),
        device={
            "profile": target.profile.name if target.profile else None,
            "serial": target.serial,
            "model_code": target.model_code,
            "soc": target.profile.soc if target.profile else None,
            "android": target.android,
        },
        delegate=options.delegate,
        threads=options.threads,
        tool="benchmark_model",
        tool_version=f"sha256:{sha256_of(binary)[:16]}",
        runs=options.runs,
        warmup=options.warmup,
        samples_kind="per_invocation_avg",
    )
    try:
        if target.state != "device":
            problem = classify_adb_error(target.serial, target.state)
            raise problem or DeviceError(f"phone {target.serial} is in state '{target.state}'; wait until 'adb devices' shows 'device'")
        parsed_runs = _invoke(adb, target, model, binary, options)
    except DeviceError as exc:
        mark_failed(result, str(exc))
    else:
        _fill_from_parsed(result, parsed_runs, options)
    result["duration_s"] = round(time.monotonic() - started, 3)
    return result


def _invoke(adb: Adb, target: PhoneTarget, model: Path, binary: Path, options: RunOptions) -> list[dict[str, Any]]:
    """Push what changed and run benchmark_model ``options.invocations`` times; raise on faults."""
    serial = target.serial
    remote_model = f"{REMOTE_DIR}/{model.name}"
    adb.push_if_changed(serial, binary, REMOTE_BINARY, executable=True)
    adb.push_if_changed(serial, model, remote_model)
    flags = benchmark_flags(
        remote_model, options.delegate, options.threads, options.runs, options.warmup, options.profile_ops
    )
    mask = target.profile.big_core_mask if target.profile else None
    argv = device_command(REMOTE_BINARY, flags, mask)
    parsed_runs = []
    for _ in range(options.invocations):
        try:
            done = adb.shell(serial, argv, timeout_s=options.command_timeout_s())
        except DeviceTimeout:
            adb.kill_remote(serial, REMOTE_BINARY)
            raise DeviceTimeout(
                f"benchmark_model on {serial} did not finish within {options.command_timeout_s():.0f} s "
                f"({options.run_timeout_s:g} s per run + {SETUP_ALLOWANCE_S:g} s setup) and was stopped; "
                "the phone may be hung or throttled - check it, or raise --timeout",
                serial,
                "timeout",
            ) from None
        parsed = parse_output(done.stdout)
        if done.returncode != 0 or parsed["failed"]:
            raise _run_failure(adb, serial, done.returncode, parsed, done.stdout)
        parsed_runs.append(parsed)
    return parsed_runs


def _run_failure(adb: Adb, serial: str, returncode: int, parsed: dict[str, Any], output: str) -> DeviceError:
    """Explain a failed invocation: the phone went away, the tool crashed, or it reported failure."""
    state = adb.get_state(serial)
    if state != "device":
        return DeviceError(
            f"phone {serial} disconnected during the run (adb now reports: {state or 'not attached'}); "
            "reconnect it and run again",
            serial,
            "disconnected",
        )
    if returncode > 128 or returncode < 0:
        number = returncode - 128 if returncode > 128 else -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        detail = parsed["error"] or _last_line(output)
        return DeviceError(f"benchmark_model crashed on {serial} ({name}, exit {returncode}): {detail}", serial, "crash")
    detail = parsed["error"] or _last_line(output)
    code = f" (exit {returncode})" if returncode else ""
    return DeviceError(f"benchmark_model failed on {serial}{code}: {detail}", serial, "tool_failed")


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _fill_from_parsed(result: dict[str, Any], parsed_runs: list[dict[str, Any]], options: RunOptions) -> None:
    first = parsed_runs[0]
    result["samples_us"] = [p["inference_avg_us"] for p in parsed_runs if p["inference_avg_us"] is not None]
    result["stats"] = pool_tool_stats([p["stats"] for p in parsed_runs if p["stats"]])
    for key in ("init_us", "first_inference_us", "warmup_avg_us"):
        result[key] = first[key]
    result["memory"] = dict(first["memory"])
    delegation = first["delegation"]
    result["delegation"] = {k: delegation[k] for k in ("status", "delegated_nodes", "total_nodes", "kernels", "unsupported_ops")}
    if options.profile_ops:
        result["op_profile"] = first["op_profile"]
    apply_delegation_policy(result, options.require_full_delegation)


# -- several phones ----------------------------------------------------------------------------
def run_many(
    targets: list[PhoneTarget], job: Callable[[PhoneTarget], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Run ``job`` on every phone in parallel, one worker per phone; results in target order."""
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix="phone") as pool:
        per_phone = list(pool.map(job, targets))
    return [result for results in per_phone for result in results]


# -- the whole job -----------------------------------------------------------------------------
@dataclass
class ModelItem:
    """A model to benchmark, with what is known about it (linked to its export by sha256)."""

    path: Path
    sha256: str | None = None
    model_name: str | None = None
    precision: str | None = None


def benchmark(
    models: list[ModelItem],
    devices: list[str],
    options: RunOptions,
    serial: str | None = None,
    binary: str | os.PathLike | None = None,
    profiles_path: str | os.PathLike | None = None,
    adb: Adb | None = None,
) -> list[dict[str, Any]]:
    """Benchmark every model on every chosen device (``host``, phone names, ``all``).

    Everything that can be rejected is rejected before any run starts: unknown device or
    delegate, a delegate the device's profile lacks, a missing model or binary, no adb.
    Phones run in parallel (one worker per phone); run faults come back as failed results.
    """
    from android_bench.host import check_host_delegate, run_host
    from android_bench.profiles import load_profiles

    options.validate()
    if not devices and serial is None:
        raise BenchUserError("name a device: --device host, --device S21, --device all, or --serial SERIAL")
    for item in models:
        if not Path(item.path).is_file():
            raise BenchUserError(f"model {item.path} does not exist; pass a .tflite file or an export run directory")
        item.sha256 = item.sha256 or sha256_of(item.path)
    profiles = load_profiles(profiles_path)
    wants_host = any(d.lower() == "host" for d in devices)
    phone_names = [d for d in devices if d.lower() != "host"]
    for name in phone_names:
        if name.lower() != "all":
            profiles_named(profiles, name)  # unknown names fail before adb is touched
    if wants_host:
        check_host_delegate(options.delegate)
    targets: list[PhoneTarget] = []
    if phone_names or serial is not None:
        binary_path = resolve_binary(binary)
        adb = adb or Adb()
        targets = select_targets(attached_targets(adb, profiles), profiles, phone_names, serial)
        for target in targets:
            check_delegate_for(target, options.delegate)

    def phone_job(target: PhoneTarget) -> list[dict[str, Any]]:
        return [
            _with_model(run_on_phone(adb, target, item.path, binary_path, options, item.sha256), item)
            for item in models
        ]

    results = run_many(targets, phone_job)
    if wants_host:
        for item in models:
            host_result = run_host(item.path, options.threads, options.runs, options.warmup, options.require_full_delegation)
            results.append(_with_model(host_result, item))
    return results


def _with_model(result: dict[str, Any], item: ModelItem) -> dict[str, Any]:
    result["artifact_sha256"] = item.sha256 or result["artifact_sha256"]
    result["model_name"] = item.model_name
    result["precision"] = item.precision
    return result
