"""LiteRT NPU runs: the vendor libraries from a user's folder, pushed once, and the run's environment.

A LiteRT 2.x NPU run needs the vendor's dispatch library (and, for a model that is not
AOT-compiled, its compiler plugin) on the phone, with ``LD_LIBRARY_PATH`` pointing at them;
Qualcomm's DSP also reads ``ADSP_LIBRARY_PATH``. Which vendor a phone has is its profile's
``npu:`` (android_bench/profiles.py ``NPU_VENDORS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from android_bench.adb import REMOTE_DIR
from android_bench.errors import BenchUserError
from android_bench.profiles import NPU_VENDORS, DeviceProfile

AOT_MARK = b"DISPATCH_OP"  # the custom op an AOT-compiled LiteRT model calls into the NPU with


@dataclass(frozen=True)
class NpuSetup:
    """The files to push for one vendor, where they go, and the flags and environment of the run."""

    vendor: str
    files: tuple[Path, ...]
    remote_dir: str
    flags: tuple[str, ...]
    env: tuple[tuple[str, str], ...]


def is_aot_compiled(model: str | Path) -> bool:
    """True for a model compiled ahead of time for an NPU (it carries the dispatch op)."""
    return AOT_MARK in Path(model).read_bytes()


def npu_setup(profile: DeviceProfile | None, libs_dir: str | Path | None, aot: bool) -> NpuSetup:
    """Check the vendor libraries for ``profile``'s NPU in ``libs_dir``; one clear error when they are missing."""
    vendor_key = profile.npu if profile else None
    if vendor_key is None:
        raise BenchUserError("--delegate npu needs a phone whose profile names its NPU vendor (npu: qualcomm, "
                             "mediatek or google); add it to a profiles YAML (docs/devices.md)")
    vendor = NPU_VENDORS[vendor_key]
    if libs_dir is None or not Path(libs_dir).is_dir():
        raise BenchUserError(
            f"--delegate npu on {profile.name} needs the {vendor.display} libraries: pass the folder holding "
            f"{vendor.dispatch_library} with --npu-libs DIR (docs/devices.md, NPU setup)"
        )
    folder = Path(libs_dir)
    needed = [vendor.dispatch_library, *vendor.required] + ([] if aot else [vendor.compiler_plugin])
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        why = "" if aot else " (the model is not AOT-compiled, so the compiler plugin is needed too)"
        raise BenchUserError(f"{folder} lacks {', '.join(missing)} for {vendor.display}{why}; copy them from the "
                             "vendor's SDK / the LiteRT NPU release into that folder")
    remote = f"{REMOTE_DIR}/npu_libs/{vendor_key}"
    flags = [f"--dispatch_library_path={remote}", *profile.npu_flags]
    if not aot:
        flags.append(f"--compiler_plugin_library_path={remote}")
    env = [("LD_LIBRARY_PATH", remote)]
    if vendor.adsp:
        env.append(("ADSP_LIBRARY_PATH", remote))
    files = tuple(sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix == ".so" or ".so." in p.name)))
    return NpuSetup(vendor_key, files, remote, tuple(flags), tuple(env))
