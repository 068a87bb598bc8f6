"""``mobiledepth bench``: time a TFLite model (or an export run's artifacts) on phones or host."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from android_bench.profiles import DELEGATES, delegate_help
from mobiledepth.cli.options import store_choice, store_options


def _ms(us) -> str:
    if us is None:
        return "-"
    return f"{us / 1000:.3f}" if us < 1000 else f"{us / 1000:.2f}"


def render(results: list[dict], console: Console) -> None:
    """A rich table of results, then one plain-words line per silent fallback or failure."""
    from android_bench.result import describe_delegation

    table = Table(title="benchmark results (ms)")
    for column in ("model", "precision", "device", "delegate", "thr", "median", "p90", "mean", "std", "runs", "delegation", "status"):
        table.add_column(column, justify="right" if column in ("thr", "median", "p90", "mean", "std", "runs") else "left")
    for r in results:
        s, d = r["stats"], r["device"]
        where = " ".join(x for x in (d["profile"] or d["model_code"] or "?", d["serial"] or "") if x)
        status = "[red]FAILED[/]" if r["failed"] else ("[yellow]CPU FALLBACK[/]" if r["fallback"] else "[green]ok[/]")
        table.add_row(
            Path(r["model_path"]).name, r["precision"] or "-", where, r["delegate"], str(r["threads"]),
            _ms(s["median"]), _ms(s["p90"]), _ms(s["mean"]), _ms(s["std"]), str(s["count"] or "-"),
            r["delegation"]["status"] or "-", status,
        )
    console.print(table)
    for r in results:
        where = r["device"]["profile"] or r["device"]["serial"] or "?"
        if r["delegation"].get("nnapi_deprecated"):
            from android_bench.cli import deprecation_note

            console.print(f"[yellow]note[/]: on {where}, {deprecation_note(r)}.", highlight=False)
        if r["failed"]:
            console.print(f"[red]failed[/] on {where} ({Path(r['model_path']).name}): {r['error']}", highlight=False)
        elif r["fallback"]:
            console.print(
                f"[yellow]warning[/]: on {where}, {describe_delegation(r)}. This is not a "
                f"{r['delegate'].upper()} number; use --require-full-delegation to make it an error.",
                highlight=False,
            )
            if any(o["op"] == "DEPTH_TO_SPACE" for o in r["delegation"].get("unsupported_ops") or []):
                console.print(
                    f"[yellow]hint[/]: this {r['delegate'].upper()} delegate build does not take DEPTH_TO_SPACE, which "
                    "the export's phase-split upsampling uses; re-export with 'mobiledepth export --no-rewrites' "
                    "for this delegate (docs/export.md).",
                    highlight=False,
                )
        elif r["delegate"] != "cpu" and r["delegation"]["status"] is None:
            console.print(
                f"[yellow]note[/]: on {where}, {describe_delegation(r)}; check the raw output before trusting it.",
                highlight=False,
            )
    kinds = {r["samples_kind"] for r in results if not r["failed"]}
    if "per_invocation_avg" in kinds:
        console.print(
            "phone rows: median/p5/p95 are benchmark_model's own statistics of the timed runs; "
            "p90 is not printed by the tool.",
            style="dim",
        )



@click.command("bench")
@click.argument("target", metavar="MODEL.tflite|RUN_DIR", type=click.Path(path_type=Path))
@click.option("--device", "-d", "devices", multiple=True, default=("host",), show_default=True,
              help="host, a phone profile or alias (S21, S10+, pixel-6), or all; repeatable.")
@click.option("--serial", "-s", default=None, help="Pick the phone with this adb serial.")
@click.option("--delegate", type=click.Choice(DELEGATES), default="cpu", show_default=True, help=delegate_help())
@click.option("--threads", type=int, default=1, show_default=True, help="Threads (benchmark_model --num_threads / the interpreter).")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed runs.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Warm-up runs (not timed).")
@click.option("--profile-ops", is_flag=True, help="Add benchmark_model's per-operator table (phones).")
@click.option("--require-full-delegation", is_flag=True,
              help="Fail (record as failed) unless the delegate takes the whole graph.")
@click.option("--benchmark-binary", type=click.Path(path_type=Path), default=None,
              help="arm64 benchmark_model to push (default: $ANDROID_BENCH_BINARY).")
@click.option("--invocations", type=int, default=1, show_default=True,
              help="Run benchmark_model this many times per phone (one sample each).")
@click.option("--timeout", "run_timeout_s", type=float, default=30.0, show_default=True,
              help="Seconds allowed per run on a phone before it counts as hung.")
@click.option("--profiles", "profiles_path", type=click.Path(path_type=Path), default=None,
              help="Extra device profiles YAML (default: $ANDROID_BENCH_PROFILES).")
@click.option("--method", type=click.Choice(["shell", "apk"]), default="shell", show_default=True,
              help="Phones: benchmark_model over adb shell, or the benchmark APK (in-app timing).")
@click.option("--benchmark-apk", type=click.Path(path_type=Path), default=None, help="The benchmark APK for --method apk.")
@click.option("--npu-libs", type=click.Path(path_type=Path), default=None,
              help="Folder of the NPU vendor's libraries for --delegate npu (LiteRT 2.x).")
@click.option("--adb-server", "adb_servers", multiple=True, metavar="HOST:PORT",
              help="Also use the phones of a lab machine's adb server; repeatable.")
@click.option("--host-runtime", type=click.Choice(["interpreter", "compiled_model"]), default="interpreter",
              show_default=True, help="Host: the TFLite Interpreter or LiteRT 2.x's CompiledModel.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
@store_options
def bench(target, devices, serial, delegate, threads, runs, warmup, profile_ops, require_full_delegation,
          benchmark_binary, invocations, run_timeout_s, profiles_path, method, benchmark_apk, npu_libs, adb_servers,
          host_runtime, as_json, store_path, no_store):
    """Time MODEL.tflite, or every TFLite artifact of an export RUN_DIR, and write bench.json beside it."""
    from mobiledepth.bench import bench as run_bench
    from mobiledepth.errors import UserError

    if serial and devices == ("host",):
        devices = ()  # --serial alone means that phone, not host
    run = run_bench(
        target, devices=list(devices), delegate=delegate, threads=threads, runs=runs, warmup=warmup,
        serial=serial, profile_ops=profile_ops, require_full_delegation=require_full_delegation,
        benchmark_binary=benchmark_binary, invocations=invocations, run_timeout_s=run_timeout_s,
        profiles_path=profiles_path, store=store_choice(store_path, no_store), method=method,
        benchmark_apk=benchmark_apk, npu_libs=npu_libs, adb_servers=adb_servers, host_runtime=host_runtime,
    )
    if as_json:
        click.echo(json.dumps({"record_path": str(run.record_path), "results": run.results}, indent=2))
    else:
        console = Console()
        if not console.is_terminal:  # piped or captured: do not squeeze the table to 80 columns
            console = Console(width=160)
        render(run.results, console)
        console.print(f"wrote {run.record_path}" + (f"; recorded in {run.stored}" if run.stored else ""), style="dim")
    if run.failed:  # exit 2 like every problem; exit 1 is check's "regression" alone
        failed = sum(1 for r in run.results if r["failed"])
        raise UserError(f"{failed} of {len(run.results)} benchmark runs failed (see {run.record_path}); "
                        "fix the device, delegate or model and run again")
    return 0
