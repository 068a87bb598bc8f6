"""``mobiledepth lut build|show|validate``: latency lookup tables measured on a device."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from android_bench.profiles import DELEGATES, delegate_help


def _size(text: str | None):
    from mobiledepth.cli.options import parse_input_size

    return parse_input_size(text) if text else None


@click.group("lut")
def lut() -> None:
    """Latency lookup tables: build on a device, show, validate against end-to-end timings."""


@lut.command("build")
@click.option("--model", "-m", default="mdepth-mnv2-fbnet", show_default=True, help="Zoo name or spec YAML.")
@click.option("--input-size", default=None, help="HxW at deploy time (default: the spec's).")
@click.option("--device", "-d", default="host", show_default=True, help="host or a phone profile (S21, S10+, ...).")
@click.option("--delegate", type=click.Choice(DELEGATES), default="cpu", show_default=True, help=delegate_help())
@click.option("--threads", type=int, default=1, show_default=True, help="Threads (benchmark_model --num_threads / the interpreter).")
@click.option("--multiple", type=int, default=8, show_default=True, help="Grid channel counts are multiples of this.")
@click.option("--points", type=int, default=5, show_default=True, help="Grid points per channel dimension.")
@click.option("--runs", type=int, default=30, show_default=True, help="Timed runs per layer model.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed warm-up runs per layer model.")
@click.option("--statistic", type=click.Choice(["median", "p5", "min"]), default="median", show_default=True,
              help="Which statistic of the raw samples the estimates use (p5/min resist a busy machine).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Measurement cache (default: $MOBILEDEPTH_LUT_CACHE or ~/.cache/mobiledepth/lut).")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Table JSON (default: runs/lut/<model>-<HxW>-<device>-<delegate>.json).")
def build(model, input_size, device, delegate, threads, multiple, points, runs, warmup, statistic, cache_dir, out) -> None:
    """Measure single-layer models over a channel grid and write the table."""
    from rich.progress import Progress

    from mobiledepth.prune.lut import build_lut

    console = Console()
    with Progress(console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(event) -> None:
            label = {"convert": "building layer models", "time": f"timing on {device}"}[event.stage]
            if event.stage not in tasks:
                tasks[event.stage] = bar.add_task(label, total=event.total)
            bar.update(tasks[event.stage], completed=event.done)

        result = build_lut(model, _size(input_size), device, delegate, threads, out, multiple, points, runs, warmup,
                           cache_dir=cache_dir, progress=progress, statistic=statistic)
    console.print(f"[green]wrote[/] {result.path}: {len(result.table.entries)} entries "
                  f"({result.measured} measured now, {result.reused} from the cache); "
                  f"build {result.convert_s:.1f} s, timing {result.time_s:.1f} s", highlight=False)


@lut.command("show")
@click.argument("table", type=click.Path(path_type=Path))
@click.option("--model", "-m", default=None, help="Estimate this spec (default: the table's).")
@click.option("--json", "as_json", is_flag=True, help="Print the per-layer estimate as JSON.")
def show(table, model, as_json) -> None:
    """Show a table's metadata and the per-layer latency estimate of a spec."""
    from mobiledepth.arch import resolve_spec, spec_from_record
    from mobiledepth.prune.lut import load_table

    lut_table = load_table(table)
    meta = lut_table.meta
    estimate = lut_table.estimate(resolve_spec(model) if model else spec_from_record(meta["model"], f"lookup table {table}"))
    if as_json:
        click.echo(json.dumps({"meta": meta, "total_us": estimate.total_us, "by_op": estimate.by_op(),
                               "layers": [{**layer.to_dict(), "us": us} for layer, us in estimate.per_layer]}, indent=2))
        return
    console = Console()
    console.print(f"{table}: {meta['device']}/{meta['delegate']} ({meta['runtime']}), threads {meta['threads']}, "
                  f"input {meta['input_size'][0]}x{meta['input_size'][1]}, {len(lut_table.entries)} entries, "
                  f"model {meta['model']}", highlight=False)
    grid = Table(title=f"estimate of {model or meta['model']}: {estimate.total_us / 1000:.3f} ms")
    for column in ("#", "op", "k/s", "HxW", "channels", "µs"):
        grid.add_column(column, justify="right" if column in ("#", "µs") else "left")
    for index, (layer, us) in enumerate(estimate.per_layer):
        grid.add_row(str(index), layer.op, f"{layer.kernel}/{layer.stride}", f"{layer.h}x{layer.w}",
                     "x".join(map(str, layer.channels)), f"{us:.1f}")
    console.print(grid)
    console.print("by op (µs): " + ", ".join(f"{k} {v:.1f}" for k, v in estimate.by_op().items()), highlight=False)


@lut.command("validate")
@click.argument("table", type=click.Path(path_type=Path))
@click.option("--model", "-m", default=None, help="Spec to vary (default: the table's).")
@click.option("--random", "random_count", type=int, default=3, show_default=True, help="Random per-group width variants.")
@click.option("--multipliers", default="1.0,0.75,0.5,0.35", show_default=True, help="Uniform width multipliers.")
@click.option("--runs", type=int, default=50, show_default=True,
              help="Timed runs per model before the first look (interleaved turns of 9; more while the CI is wide).")
@click.option("--work-dir", type=click.Path(path_type=Path), default=None,
              help="Where the exported variants go (an export already there is reused).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random width variants.")
def validate(table, model, random_count, multipliers, runs, work_dir, seed) -> None:
    """LUT estimate vs end-to-end measurement on the same device for width variants."""
    from mobiledepth.errors import UserError
    from mobiledepth.prune.lut import validate_lut

    try:
        mults = tuple(float(x) for x in multipliers.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--multipliers '{multipliers}' is not a comma-separated list of numbers; e.g. 1.0,0.5") from None
    if any(not 0 < m <= 1 for m in mults):
        raise UserError(f"--multipliers must be in (0, 1] (got {multipliers})")
    console = Console()
    report = validate_lut(table, model, random_count, mults, runs, work_dir, seed,
                          progress=lambda event: console.print(f"{event.detail} ...", style="dim"))
    grid = Table(title=f"LUT validation on {report['device']}/{report['delegate']}")
    for column in ("variant", "estimate ms", "measured ms (95 % CI)", "error (95 % CI)"):
        grid.add_column(column, justify="left" if column == "variant" else "right")
    for row in report["rows"]:
        low, high = row["measured_interval_us"]
        err_low, err_high = row["error_interval"]
        grid.add_row(row["name"], f"{row['estimate_us'] / 1000:.3f}",
                     f"{row['measured_us'] / 1000:.3f} ({low / 1000:.3f}-{high / 1000:.3f})",
                     f"{row['error'] * 100:+.1f} % ({err_low * 100:+.1f} to {err_high * 100:+.1f})")
    console.print(grid)
    console.print(f"max |error| {report['max_abs_error'] * 100:.1f} %, median {report['median_abs_error'] * 100:.1f} % "
                  "(goal: every estimate within 10 %, median under 5 %)", highlight=False)
