"""``android-bench``: list phones, benchmark a TFLite model on them (or on host), parse outputs.

    android-bench devices [--profiles FILE] [--json]
    android-bench run MODEL.tflite [MODEL…] --device S21 [--device host] [--serial S]
                      [--delegate cpu|gpu|nnapi] [--threads N] [--runs N] [--warmup N]
                      [--profile-ops] [--require-full-delegation] [--benchmark-binary PATH]
                      [--invocations N] [--timeout S] [--profiles FILE] [--json]
    android-bench parse FILE|- [--json]

Standard library only (argparse); exit 0 when every run succeeded, 1 when one failed,
2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from android_bench import __version__
from android_bench.errors import BenchError
from android_bench.profiles import DELEGATES


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _ms(us: float | None) -> str:
    if us is None:
        return "-"
    return f"{us / 1000:.3f}" if us < 1000 else f"{us / 1000:.2f}"


def cmd_devices(args: argparse.Namespace) -> int:
    from android_bench.adb import Adb
    from android_bench.profiles import load_profiles
    from android_bench.runner import attached_targets

    profiles = load_profiles(args.profiles)
    targets = attached_targets(Adb(), profiles)
    if args.json:
        print(json.dumps([_target_dict(t) for t in targets], indent=2))
        return 0
    if not targets:
        print("no phone attached (check the cable, USB debugging, and 'adb devices')")
        return 0
    rows = [
        [t.serial, t.state, t.model_code or "-", t.profile.name if t.profile else "(no profile)", t.android or "-"]
        for t in targets
    ]
    print(_table(rows, ["serial", "state", "model", "profile", "android"]))
    return 0


def _target_dict(target) -> dict[str, Any]:
    return {
        "serial": target.serial,
        "state": target.state,
        "model_code": target.model_code,
        "android": target.android,
        "profile": target.profile.name if target.profile else None,
        "soc": target.profile.soc if target.profile else None,
    }


def cmd_run(args: argparse.Namespace) -> int:
    from android_bench.runner import ModelItem, RunOptions, benchmark

    options = RunOptions(
        delegate=args.delegate,
        threads=args.threads,
        runs=args.runs,
        warmup=args.warmup,
        profile_ops=args.profile_ops,
        require_full_delegation=args.require_full_delegation,
        invocations=args.invocations,
        run_timeout_s=args.timeout,
        method=args.method,
        host_runtime=args.host_runtime,
        apk=args.benchmark_apk,
        npu_libs=args.npu_libs,
    )
    models = [ModelItem(Path(m)) for m in args.models]
    results = benchmark(models, args.device or [], options, args.serial, args.benchmark_binary, args.profiles,
                        adb_servers=args.adb_server)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(render_results(results))
    failed = sum(1 for r in results if r["failed"])
    if failed:  # exit 2: a run that could not be measured is an environment problem (1 is never used here)
        print(f"error: {failed} of {len(results)} benchmark runs failed (see above); fix the device, "
              "delegate or model and run again", file=sys.stderr)
        return 2
    return 0


def render_results(results: list[dict[str, Any]]) -> str:
    """Plain-text table of BenchResults plus one plain-words line per fallback or failure."""
    from android_bench.result import describe_delegation

    rows = []
    notes = []
    for r in results:
        device = r["device"]["profile"] or r["device"]["model_code"] or "?"
        where = f"{device} {r['device']['serial'] or ''}".strip()
        s = r["stats"]
        status = "FAILED" if r["failed"] else ("FALLBACK" if r["fallback"] else "ok")
        rows.append(
            [Path(r["model_path"]).name, where, r["delegate"], str(r["threads"]), _ms(s["median"]), _ms(s["mean"]),
             _ms(s["min"]), str(s["count"] or "-"), r["delegation"]["status"] or "-", status]
        )
        if r["delegation"].get("nnapi_deprecated"):
            notes.append(f"NOTE {where}: {deprecation_note(r)}")
        if r["failed"]:
            notes.append(f"FAILED {where}: {r['error']}")
        elif r["fallback"]:
            notes.append(
                f"WARNING {where}: {describe_delegation(r)} - this is NOT a {r['delegate'].upper()} number"
            )
    table = _table(rows, ["model", "device", "delegate", "thr", "median ms", "mean ms", "min ms", "runs", "delegation", "status"])
    return "\n".join([table, *notes])


def deprecation_note(result: dict[str, Any]) -> str:
    """What to use instead of NNAPI on Android 15+ (one sentence, shared with mobiledepth bench)."""
    from android_bench.result import NNAPI_INSTEAD

    return (f"NNAPI is deprecated since Android 15 and this phone runs API {result['delegation']['api_level']}; "
            f"{NNAPI_INSTEAD}")


def cmd_parse(args: argparse.Namespace) -> int:
    from android_bench.parser import parse_output

    if args.file == "-":
        text = sys.stdin.read()
    else:
        path = Path(args.file)
        if not path.is_file():
            raise BenchError(f"{path} does not exist; pass a saved benchmark_model output (or - for stdin)")
        text = path.read_text(errors="replace")
    parsed = parse_output(text)
    if args.json:
        print(json.dumps(parsed, indent=2))
    else:
        s = parsed["stats"] or {}
        print(f"inference avg: {_ms(parsed['inference_avg_us'])} ms   init: {_ms(parsed['init_us'])} ms   "
              f"runs: {s.get('count', '-')}   delegation: {parsed['delegation']['status'] or '-'}")
        if parsed["failed"]:
            print(f"failed: {parsed['error']}")
    if parsed["failed"]:
        print(f"error: the saved run failed: {parsed['error']}", file=sys.stderr)
        return 2
    return 0


DESCRIPTION = "android-bench: list phones, benchmark TFLite models on them (or on this machine), parse outputs."
PROFILES_HELP = "extra device profiles YAML (default: $ANDROID_BENCH_PROFILES)"


class _OneLineParser(argparse.ArgumentParser):
    """argparse with the house's usage errors: one ``error:`` line naming the fix, exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``android-bench`` argument parser: ``devices``, ``run`` and ``parse``."""
    parser = _OneLineParser(prog="android-bench", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"android-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    devices = sub.add_parser("devices", help="list attached phones, their state and matched profile",
                             description="List attached phones, their state and matched profile.")
    devices.add_argument("--profiles", metavar="FILE", help=PROFILES_HELP)
    devices.add_argument("--json", action="store_true", help="print JSON instead of a table")
    devices.set_defaults(func=cmd_devices)

    _add_run_parser(sub)

    parse = sub.add_parser("parse", help="turn a saved benchmark_model output into JSON",
                           description="Turn a saved benchmark_model output into numbers "
                                       "(exit 1 if it records a failure).")
    parse.add_argument("file", metavar="FILE", help="saved benchmark_model output, or - for stdin")
    parse.add_argument("--json", action="store_true", help="print every parsed field as JSON instead of a summary line")
    parse.set_defaults(func=cmd_parse)
    return parser


def _add_run_parser(sub) -> None:
    """The ``run`` subcommand: every option with its help and default."""
    run = sub.add_parser("run", help="benchmark TFLite models on phones (benchmark_model) or on host",
                         description="Benchmark TFLite models on phones (benchmark_model over adb) or on this machine.")
    run.add_argument("models", nargs="+", metavar="MODEL.tflite", help="TFLite model file(s) to time")
    run.add_argument("--device", "-d", action="append", metavar="NAME",
                     help="profile name/alias (S21, S10+, pixel-6), host, or all; repeatable")
    run.add_argument("--serial", "-s", metavar="SERIAL", help="pick the phone with this adb serial")
    run.add_argument("--delegate", default="cpu", choices=DELEGATES,
                     help="cpu (XNNPACK), gpu, nnapi or npu (LiteRT 2.x) (default: %(default)s)")
    run.add_argument("--threads", type=int, default=1, metavar="N",
                     help="--num_threads of benchmark_model / the interpreter (default: %(default)s)")
    run.add_argument("--runs", type=int, default=50, metavar="N", help="timed runs (default: %(default)s)")
    run.add_argument("--warmup", type=int, default=5, metavar="N",
                     help="untimed warm-up runs (default: %(default)s)")
    run.add_argument("--profile-ops", action="store_true", help="add benchmark_model's per-op table")
    run.add_argument("--require-full-delegation", action="store_true",
                     help="fail unless the delegate takes the whole graph")
    run.add_argument("--benchmark-binary", metavar="PATH",
                     help="arm64 benchmark_model to push (default: $ANDROID_BENCH_BINARY)")
    run.add_argument("--invocations", type=int, default=1, metavar="N",
                     help="repeat benchmark_model this many times, one sample each (default: %(default)s)")
    run.add_argument("--timeout", type=float, default=30.0, metavar="S",
                     help="seconds allowed per run before a hang is declared (default: %(default)s)")
    run.add_argument("--method", choices=("shell", "apk"), default="shell",
                     help="shell: benchmark_model over adb shell; apk: the benchmark APK, in-app timing (default: %(default)s)")
    run.add_argument("--benchmark-apk", metavar="APK", help="the TensorFlow Lite benchmark APK for --method apk")
    run.add_argument("--npu-libs", metavar="DIR", help="folder of the NPU vendor's libraries for --delegate npu")
    run.add_argument("--adb-server", action="append", metavar="HOST:PORT",
                     help="also use the phones of a lab machine's adb server; repeatable")
    run.add_argument("--host-runtime", choices=("interpreter", "compiled_model"), default="interpreter",
                     help="host only: TFLite Interpreter or LiteRT 2.x CompiledModel (default: %(default)s)")
    run.add_argument("--profiles", metavar="FILE", help=PROFILES_HELP)
    run.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    run.set_defaults(func=cmd_run)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: BenchErrors become one line on stderr and their exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
