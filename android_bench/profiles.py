"""Device profiles as data: which phone is which, its big-core mask and its delegates.

Built-in profiles live in ``android_bench/profiles/*.yaml``. Users add phones in their own
YAML file (same format, a top-level ``profiles:`` list) given by ``--profiles FILE`` or
``$ANDROID_BENCH_PROFILES``; a user profile with the same name replaces the built-in one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from android_bench.errors import BenchUserError

# The delegates there are, and what each runs the model on: the one table the command lines
# derive their --delegate choices and help from. A profile lists the ones its device has.
DELEGATE_RUNTIMES = {"cpu": "XNNPACK", "gpu": "GPU delegate", "nnapi": "NNAPI delegate", "npu": "LiteRT NPU accelerator"}
DELEGATES = tuple(DELEGATE_RUNTIMES)
HOST = "host"


@dataclass(frozen=True)
class NpuVendor:
    """A LiteRT NPU vendor: its dispatch library, the libraries a run needs, and its environment."""

    display: str
    dispatch_library: str
    compiler_plugin: str
    required: tuple[str, ...] = ()
    adsp: bool = False  # Qualcomm's DSP loads its skeleton libraries from ADSP_LIBRARY_PATH


# The one table of LiteRT NPU vendors (SPEC §7b); profiles name a key of it with ``npu:``.
NPU_VENDORS = {
    "qualcomm": NpuVendor("Qualcomm AI Engine Direct (QNN)", "libLiteRtDispatch_Qualcomm.so",
                          "libLiteRtCompilerPlugin_Qualcomm.so", ("libQnnHtp.so", "libQnnSystem.so"), adsp=True),
    "mediatek": NpuVendor("MediaTek NeuroPilot", "libLiteRtDispatch_MediaTek.so", "libLiteRtCompilerPlugin_MediaTek.so"),
    "google": NpuVendor("Google Tensor (Edge TPU)", "libLiteRtDispatch_GoogleTensor.so",
                        "libLiteRtCompilerPlugin_GoogleTensor.so"),
}
PROFILES_ENV = "ANDROID_BENCH_PROFILES"
BUILTIN_DIR = Path(__file__).parent / "profiles"


@dataclass(frozen=True)
class DeviceProfile:
    """One kind of phone (or ``host``): how to recognise it and how to run on it."""

    name: str
    display: str
    aliases: tuple[str, ...] = ()
    model_codes: tuple[str, ...] = ()
    soc: str | None = None
    cores: str | None = None
    big_core_mask: str | None = None
    gpu: str | None = None
    delegates: tuple[str, ...] = ("cpu",)
    npu: str | None = None  # the NPU vendor (a key of NPU_VENDORS) when "npu" is among the delegates
    npu_flags: tuple[str, ...] = ()  # extra LiteRT flags of this SoC's NPU (e.g. MediaTek's NeuroPilot version)
    source: str = field(default="", compare=False)

    @property
    def is_host(self) -> bool:
        return self.name == HOST

    def names(self) -> set[str]:
        """Lower-cased names a user may type for this profile."""
        return {n.lower() for n in (self.name, *self.aliases)}

    def matches_model(self, model_code: str | None) -> bool:
        return bool(model_code) and model_code.strip().lower() in {c.lower() for c in self.model_codes}

    def check_delegate(self, delegate: str) -> None:
        """Reject a delegate this device cannot run, naming the ones it can and the closest of them."""
        if delegate not in self.delegates:
            supported = ", ".join(self.delegates)
            raise BenchUserError(
                f"device '{self.name}' does not support delegate '{delegate}'; it supports: {supported} "
                f"(try --delegate {closest_delegate(delegate, self.delegates)})"
            )


def delegate_help() -> str:
    """The --delegate help line, from the delegates table."""
    names = [f"{name} ({runtime})" for name, runtime in DELEGATE_RUNTIMES.items()]
    return f"Where the model runs: {', '.join(names[:-1])} or {names[-1]}."


def closest_delegate(delegate: str, supported: Iterable[str]) -> str:
    """The supported delegate nearest to ``delegate``: a near spelling, else another accelerator, else the first."""
    import difflib

    supported = list(supported)
    spelled = difflib.get_close_matches(delegate, supported, n=1)
    if delegate not in DELEGATES and spelled:
        return spelled[0]
    accelerators = [d for d in supported if d != "cpu"]
    return accelerators[0] if delegate != "cpu" and accelerators else supported[0]


def check_device_delegate(device: str, delegate: str, profiles: list[DeviceProfile] | None = None) -> None:
    """Before any work: ``device`` names known profiles (or ``all``) and each can run ``delegate``."""
    if delegate not in DELEGATES:
        raise BenchUserError(f"unknown delegate '{delegate}'; choose one of: {', '.join(DELEGATES)} "
                             f"(try --delegate {closest_delegate(delegate, DELEGATES)})")
    profiles = load_profiles() if profiles is None else profiles
    if device.strip().lower() == "all":
        return
    for profile in profiles_named(profiles, device):
        profile.check_delegate(delegate)


def _profile_from_dict(raw: dict[str, Any], source: str) -> DeviceProfile:
    if not isinstance(raw, dict) or not raw.get("name"):
        raise BenchUserError(f"{source}: every profile needs a 'name'; see docs/devices.md for the format")
    name = str(raw["name"])
    delegates = tuple(str(d).lower() for d in raw.get("delegates") or ("cpu",))
    unknown = [d for d in delegates if d not in DELEGATES]
    if unknown:
        raise BenchUserError(
            f"{source}: profile '{name}' lists unknown delegate(s) {', '.join(unknown)}; use {', '.join(DELEGATES)}"
        )
    mask = raw.get("big_core_mask")
    if mask is not None:
        mask = str(mask).lower().removeprefix("0x")
        if not re.fullmatch(r"[0-9a-f]+", mask) or int(mask, 16) == 0:
            raise BenchUserError(
                f"{source}: profile '{name}' has big_core_mask '{raw.get('big_core_mask')}'; "
                "give a non-zero hex CPU mask such as f0 (cpu4-7)"
            )
    npu = _npu_vendor(raw, name, delegates, source)
    return DeviceProfile(
        name=name,
        display=str(raw.get("display") or name),
        aliases=tuple(str(a) for a in raw.get("aliases") or ()),
        model_codes=tuple(str(c) for c in raw.get("model_codes") or ()),
        soc=raw.get("soc"),
        cores=raw.get("cores"),
        big_core_mask=mask,
        gpu=raw.get("gpu"),
        delegates=delegates,
        npu=npu,
        npu_flags=tuple(str(f) for f in raw.get("npu_flags") or ()),
        source=source,
    )


def _npu_vendor(raw: dict[str, Any], name: str, delegates: tuple[str, ...], source: str) -> str | None:
    """The profile's NPU vendor; "npu" in delegates needs one of NPU_VENDORS."""
    vendor = raw.get("npu")
    if vendor is None and "npu" not in delegates:
        return None
    if vendor not in NPU_VENDORS or "npu" not in delegates:
        raise BenchUserError(
            f"{source}: profile '{name}' needs both 'npu' in its delegates and npu: one of "
            f"{', '.join(NPU_VENDORS)} (got npu: {vendor!r})"
        )
    return str(vendor)


def read_profile_file(path: str | os.PathLike) -> list[DeviceProfile]:
    """Read one profiles YAML file (a mapping with a ``profiles:`` list)."""
    try:
        import yaml  # PyYAML: the only dependency of android_bench besides the stdlib
    except ImportError as exc:  # pragma: no cover - PyYAML is a declared dependency
        raise BenchUserError("reading device profiles needs PyYAML: pip install pyyaml") from exc
    file = Path(path)
    if not file.is_file():
        raise BenchUserError(f"profiles file {file} does not exist; pass an existing YAML file to --profiles")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise BenchUserError(f"profiles file {file} is not valid YAML ({str(exc).splitlines()[0]}); fix its syntax") from exc
    entries = data.get("profiles") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise BenchUserError(f"profiles file {file} needs a top-level 'profiles:' list; see docs/devices.md")
    return [_profile_from_dict(entry, str(file)) for entry in entries]


def load_profiles(extra: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> list[DeviceProfile]:
    """Built-in profiles, then the user's file (``extra`` or ``$ANDROID_BENCH_PROFILES``)."""
    env = os.environ if env is None else env
    profiles: dict[str, DeviceProfile] = {}
    for file in sorted(BUILTIN_DIR.glob("*.yaml")):
        for profile in read_profile_file(file):
            profiles[profile.name] = profile
    user_files: Iterable[str] = [str(extra)] if extra else [p for p in env.get(PROFILES_ENV, "").split(os.pathsep) if p]
    for file in user_files:
        for profile in read_profile_file(file):
            profiles[profile.name] = profile
    return list(profiles.values())


def host_profile(profiles: list[DeviceProfile]) -> DeviceProfile:
    for profile in profiles:
        if profile.is_host:
            return profile
    raise BenchUserError("no 'host' profile is defined; do not remove android_bench/profiles/host.yaml")


def profiles_named(profiles: list[DeviceProfile], name: str) -> list[DeviceProfile]:
    """Profiles a ``--device NAME`` refers to (by name, alias or model code); error if none."""
    wanted = name.strip().lower()
    found = [p for p in profiles if wanted in p.names() or p.matches_model(name)]
    if not found:
        import difflib

        known = sorted({n for p in profiles for n in (p.name, *p.aliases)})
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise BenchUserError(
            f"unknown device '{name}'{hint}; known: {', '.join(known)}, or 'all'; "
            "add a phone in a profiles YAML (see docs/devices.md)"
        )
    return found


def profile_for_model(profiles: list[DeviceProfile], model_code: str | None) -> DeviceProfile | None:
    """The profile whose model codes include this ``ro.product.model`` value, if any."""
    for profile in profiles:
        if profile.matches_model(model_code):
            return profile
    return None
