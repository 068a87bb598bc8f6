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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from android_bench.adb import REMOTE_DIR, Adb, classify_adb_error, sha256_of
from android_bench.errors import BenchUserError, DeviceError, DeviceTimeout
from android_bench.flags import benchmark_flags, check_counts, device_command
from android_bench.npu import NpuSetup, is_aot_compiled, npu_setup
from android_bench.parser import parse_output
from android_bench.profiles import DELEGATES, DeviceProfile, profile_for_model, profiles_named
from android_bench.result import (
    apply_delegation_policy, flag_nnapi_deprecation, litert_status, mark_failed, new_result, pool_tool_stats,
)
from android_bench.thermal import WATCH, read_thermal, thermal_record
from android_bench.tools import CLASSIC, LITERT2, ToolInfo, delegate_flags, probe_once

METHODS = ("shell", "apk")  # adb shell benchmark_model, or the benchmark APK (in-app timing)
STRICT_RUNS = 3  # timed runs of the short strict LiteRT 2.x run that proves full delegation

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
    adb: Adb | None = None  # the adb server that sees this phone (a lab machine's, or the local one)
    api_level: int | None = None

    def label(self) -> str:
        what = self.profile.name if self.profile else (self.model_code or "unknown model")
        where = f" via {self.adb.server}" if self.adb is not None and self.adb.server else ""
        return f"{self.serial} ({what}, {self.state}{where})"


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
    method: str = "shell"
    host_runtime: str = "interpreter"  # host only: the TFLite Interpreter or LiteRT 2.x's CompiledModel
    apk: str | None = None  # the benchmark APK (method "apk")
    npu_libs: str | None = None  # folder of the NPU vendor's libraries (delegate "npu")

    def validate(self) -> None:
        if self.method not in METHODS:
            raise BenchUserError(f"unknown --method '{self.method}'; choose one of: {', '.join(METHODS)}")
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
        targets.append(PhoneTarget(device.serial, state, device.model_code, device.android,
                                   profile_for_model(profiles, device.model_code), adb, device.api_level))
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


@dataclass
class PhonePlan:
    """What every phone run shares, settled before the first run: the tool and the NPU setups."""

    binary: Path | None = None
    tool: ToolInfo | None = None  # None for the APK method
    npu: dict[str, NpuSetup] = field(default_factory=dict)  # by profile name

    def tool_fields(self, options: RunOptions) -> dict[str, str | None]:
        if options.method == "apk":
            return {"tool": "benchmark_apk", "tool_version": f"sha256:{sha256_of(options.apk)[:16]}"}
        return {"tool": self.tool.name, "tool_version": self.tool.version_label()}


def run_on_phone(
    target: PhoneTarget, model_path: str | os.PathLike, plan: PhonePlan, options: RunOptions,
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
        delegate=options.delegate, threads=options.threads, runs=options.runs, warmup=options.warmup,
        samples_kind="per_invocation_avg", **plan.tool_fields(options),
    )
    try:
        if target.state != "device":
            problem = classify_adb_error(target.serial, target.state)
            raise problem or DeviceError(f"phone {target.serial} is in state '{target.state}'; wait until 'adb devices' shows 'device'")
        thermal_before = read_thermal(target.adb, target.serial)
        parsed_runs, strict = _invoke(target, model, plan, options)
    except DeviceError as exc:
        mark_failed(result, str(exc))
    else:
        _fill_from_parsed(result, parsed_runs, options, strict)
        _record_thermal(result, target, thermal_before)
    flag_nnapi_deprecation(result, target.api_level)
    result["duration_s"] = round(time.monotonic() - started, 3)
    return result


def _record_thermal(result: dict[str, Any], target: PhoneTarget, before: dict[str, Any] | None) -> None:
    """The phone's thermal state before and after the timed block (in ``delegation.thermal``; the phone is
    read again only if it reported before), with one warning per phone when it reaches a throttling level."""
    after = read_thermal(target.adb, target.serial) if before is not None else None
    result["delegation"]["thermal"] = thermal_record(before, after)
    WATCH.observe(target.serial, result["delegation"]["thermal"])


def _invoke(target: PhoneTarget, model: Path, plan: PhonePlan, options: RunOptions):
    """Push what changed and run the tool ``options.invocations`` times (+ LiteRT's strict run); raise on faults."""
    if options.method == "apk":
        from android_bench.apk import run_apk

        remote_model = _push_model(target, model)
        return [run_apk(target.adb, target.serial, remote_model, options) for _ in range(options.invocations)], None
    adb, serial = target.adb, target.serial
    adb.push_if_changed(serial, plan.binary, REMOTE_BINARY, executable=True)
    remote_model = _push_model(target, model)
    npu = plan.npu.get(target.profile.name) if target.profile else None
    if npu is not None:
        for file in npu.files:
            adb.push_if_changed(serial, file, f"{npu.remote_dir}/{file.name}")
    generation = plan.tool.generation
    strict_first = generation == LITERT2 and options.require_full_delegation
    argv = _tool_argv(target, remote_model, options, generation, npu, strict_first, options.runs)
    parsed_runs = [_run_tool(adb, serial, argv, options) for _ in range(options.invocations)]
    strict: bool | str | None = True if strict_first and options.delegate != "cpu" else None
    if generation == LITERT2 and strict is None and _needs_strict_run(parsed_runs[0], options.delegate):
        strict = _strict_run(target, remote_model, options, npu)
    return parsed_runs, strict


def _push_model(target: PhoneTarget, model: Path) -> str:
    remote_model = f"{REMOTE_DIR}/{model.name}"
    target.adb.push_if_changed(target.serial, model, remote_model)
    return remote_model


def _tool_argv(target: PhoneTarget, remote_model: str, options: RunOptions, generation: str,
               npu: NpuSetup | None, strict: bool, runs: int) -> list[str]:
    flags = benchmark_flags(remote_model, options.delegate, options.threads, runs, options.warmup,
                            options.profile_ops, generation=generation, strict=strict,
                            npu_flags=npu.flags if npu else ())
    mask = target.profile.big_core_mask if target.profile else None
    return device_command(REMOTE_BINARY, flags, mask, dict(npu.env) if npu else None)


def _needs_strict_run(parsed: dict[str, Any], delegate: str) -> bool:
    """A lenient LiteRT 2.x accelerator run proves nothing about delegation, unless the accelerator never loaded."""
    return delegate != "cpu" and delegate not in parsed["delegation"]["not_loaded"]


def _strict_run(target: PhoneTarget, remote_model: str, options: RunOptions, npu: NpuSetup | None) -> bool | str:
    """A short ``--use_cpu=false --require_full_delegation=true`` run: True when it passes, else its error."""
    argv = _tool_argv(target, remote_model, options, LITERT2, npu, True, STRICT_RUNS)
    done = target.adb.shell(target.serial, argv, timeout_s=options.command_timeout_s())
    parsed = parse_output(done.stdout)
    if done.returncode == 0 and not parsed["failed"]:
        return True
    return parsed["error"] or _last_line(done.stdout)


def _run_tool(adb: Adb, serial: str, argv: list[str], options: RunOptions) -> dict[str, Any]:
    """One invocation of benchmark_model, parsed; a hang, crash or failure raises a DeviceError."""
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
    return parsed


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


def _fill_from_parsed(result: dict[str, Any], parsed_runs: list[dict[str, Any]], options: RunOptions,
                      strict: bool | str | None = None) -> None:
    first = parsed_runs[0]
    result["samples_us"] = [p["inference_avg_us"] for p in parsed_runs if p["inference_avg_us"] is not None]
    result["stats"] = pool_tool_stats([p["stats"] for p in parsed_runs if p["stats"]])
    for key in ("init_us", "first_inference_us", "warmup_avg_us"):
        result[key] = first[key]
    result["memory"] = dict(first["memory"])
    _fill_delegation(result["delegation"], first, options.delegate, strict)
    if options.profile_ops:
        result["op_profile"] = first["op_profile"]
    apply_delegation_policy(result, options.require_full_delegation)


def _fill_delegation(delegation: dict[str, Any], parsed: dict[str, Any], delegate: str, strict: bool | str | None) -> None:
    """The requested delegate's own status: from its line (classic) or from LiteRT 2.x's evidence."""
    found = parsed["delegation"]
    for key in ("status", "delegated_nodes", "total_nodes", "kernels", "unsupported_ops", "delegates",
                "fully_accelerated", "not_loaded"):
        delegation[key] = found[key]
    if parsed["format"] in ("litert", "litert_python"):
        delegation["status"] = litert_status(found, delegate, strict)
        delegation["strict_check"] = "passed" if strict is True else strict
    elif delegate in found["delegates"]:
        delegation["status"] = found["delegates"][delegate]  # two delegates in one run: this one's own status


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
    adb_servers: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Benchmark every model on every chosen device (``host``, phone names, ``all``).

    Everything that can be rejected is rejected before any run starts: unknown device or
    delegate, a delegate the device's profile or the tool generation lacks, a missing model,
    binary, APK or NPU library, no adb, an unreachable adb server. Phones (on this machine's adb
    server and on every ``adb_servers`` lab machine) run in parallel, one worker per phone; run
    faults come back as failed results.
    """
    from android_bench.host import check_host_runtime, run_host
    from android_bench.profiles import load_profiles

    options.validate()
    if not devices and serial is None:
        raise BenchUserError("name a device: --device host, --device S21, --device all, or --serial SERIAL")
    _hash_models(models)
    profiles = load_profiles(profiles_path)
    wants_host = any(d.lower() == "host" for d in devices)
    phone_names = [d for d in devices if d.lower() != "host"]
    for name in phone_names:
        if name.lower() != "all":
            profiles_named(profiles, name)  # unknown names fail before adb is touched
    if wants_host:
        check_host_runtime(options.delegate, options.host_runtime)
    targets: list[PhoneTarget] = []
    plan = PhonePlan()
    if phone_names or serial is not None:
        if options.method != "apk":
            resolve_binary(binary)  # a bad binary path is the user's input: say so before adb is touched
        attached = [t for client in _adb_clients(adb, adb_servers) for t in attached_targets(client, profiles)]
        targets = select_targets(attached, profiles, phone_names, serial)
        for target in targets:
            check_delegate_for(target, options.delegate)
        plan = plan_phone_runs(targets, models, binary, options)

    def phone_job(target: PhoneTarget) -> list[dict[str, Any]]:
        return [_with_model(run_on_phone(target, item.path, plan, options, item.sha256), item) for item in models]

    results = run_many(targets, phone_job)
    if wants_host:
        for item in models:
            host_result = run_host(item.path, options.threads, options.runs, options.warmup,
                                   options.require_full_delegation, runtime=options.host_runtime)
            results.append(_with_model(host_result, item))
    return results


def _hash_models(models: list[ModelItem]) -> None:
    for item in models:
        if not Path(item.path).is_file():
            raise BenchUserError(f"model {item.path} does not exist; pass a .tflite file or an export run directory")
        item.sha256 = item.sha256 or sha256_of(item.path)


def _adb_clients(adb: Adb | None, servers: list[str] | None) -> list[Adb]:
    """This machine's adb, then one client per lab machine's adb server (``--adb-server HOST:PORT``)."""
    local = adb or Adb()
    return [local, *(Adb(local.path, server=server) for server in dict.fromkeys(servers or ()))]


def plan_phone_runs(targets: list[PhoneTarget], models: list[ModelItem], binary, options: RunOptions) -> PhonePlan:
    """Settle the tool (probing its --help once), the APK or the NPU libraries before any timed run."""
    if options.method == "apk":
        from android_bench.apk import check_apk

        check_apk(options.apk, options.delegate)
        return PhonePlan()
    plan = PhonePlan(binary=resolve_binary(binary))
    plan.tool = probe_tool(targets, plan.binary)
    delegate_flags(plan.tool.generation, options.delegate)  # LiteRT 2.x + nnapi, classic + npu: one clear error
    if options.delegate == "npu":
        aot = all(is_aot_compiled(item.path) for item in models)
        for target in targets:
            if target.profile is not None and target.state == "device":
                plan.npu[target.profile.name] = npu_setup(target.profile, options.npu_libs, aot)
    return plan


def probe_tool(targets: list[PhoneTarget], binary: Path) -> ToolInfo:
    """Which benchmark_model ``binary`` is, from its --help on the first usable phone (cached per sha256)."""
    digest = sha256_of(binary)
    usable = [t for t in targets if t.state == "device"]
    if not usable:
        return ToolInfo(CLASSIC, None, digest)  # every run fails on its phone's state; nothing to probe

    def run_help() -> str:
        target = usable[0]
        try:
            target.adb.push_if_changed(target.serial, binary, REMOTE_BINARY, executable=True)
            return target.adb.shell(target.serial, [REMOTE_BINARY, "--help"], timeout_s=60).stdout
        except DeviceError as exc:
            raise BenchUserError(f"could not ask the benchmark binary for --help on {target.serial} ({exc}); "
                                 "fix that phone or pick another with --serial") from None

    return probe_once(digest, run_help)


def _with_model(result: dict[str, Any], item: ModelItem) -> dict[str, Any]:
    result["artifact_sha256"] = item.sha256 or result["artifact_sha256"]
    result["model_name"] = item.model_name
    result["precision"] = item.precision
    return result
