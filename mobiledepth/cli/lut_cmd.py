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
@click.option("--model", "-m", default="mdepth-mnv2-fbnet", show_default=True,
              help="Zoo name, spec YAML, or your own module:factory (layers traced from the model).")
@click.option("--input-size", default=None, help="HxW at deploy time (default: the spec's).")
@click.option("--device", "-d", default="host", show_default=True, help="host or a phone profile (S21, S10+, ...).")
@click.option("--delegate", type=click.Choice(DELEGATES), default="cpu", show_default=True, help=delegate_help())
@click.option("--threads", type=int, default=1, show_default=True, help="Threads (benchmark_model --num_threads / the interpreter).")
@click.option("--multiple", default="8", show_default=True,
              help="Grid channel counts are multiples of this; 'auto': the target's channel tile, measured first "
                   "(4, 8, 16 or 32; recorded in the table, prune keeps widths on it).")
@click.option("--points", type=int, default=5, show_default=True, help="Grid points per channel dimension.")
@click.option("--runs", type=int, default=30, show_default=True, help="Timed runs per layer model.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed warm-up runs per layer model.")
@click.option("--statistic", type=click.Choice(["median", "p5", "min"]), default="median", show_default=True,
              help="Which statistic of the raw samples the estimates use (p5/min resist a busy machine).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Measurement cache (default: $MOBILEDEPTH_LUT_CACHE or ~/.cache/mobiledepth/lut).")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Table JSON (default: runs/lut/<model>-<HxW>-<device>-<delegate>.json).")
@click.option("--calibrate", default="1.0,0.6,0.4", show_default=True,
              help="Uniform width multipliers of the whole-model variants the graph correction is fitted on "
                   "('none': no correction). Validation holds these out.")
@click.option("--calibrate-random", type=click.IntRange(min=0), default=2, show_default=True,
              help="Random per-group width variants (seed 1) fitted beside the --calibrate widths.")
@click.option("--work-dir", type=click.Path(path_type=Path), default=None,
              help="Where exported variants go (default: beside the table, <table>-variants/; reused).")
def build(model, input_size, device, delegate, threads, multiple, points, runs, warmup, statistic, cache_dir, out,
          calibrate, calibrate_random, work_dir) -> None:
    """Measure single-layer models over a channel grid, fit the graph correction, write the table."""
    from rich.progress import Progress

    from mobiledepth.prune.lut import build_lut

    calibrate_at = () if calibrate.strip().lower() in ("", "none") else _multipliers(calibrate, "--calibrate")
    multiple = _multiple(multiple)
    console = Console()
    with Progress(console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(event) -> None:
            if event.stage in ("probe", "stream") and event.event == "done":
                console.print(event.detail, highlight=False)
                return
            if event.stage not in ("convert", "time"):
                console.print(f"{event.detail} ...", style="dim")
                return
            label = {"convert": "building layer models", "time": f"timing on {device}"}[event.stage]
            if event.stage not in tasks:
                tasks[event.stage] = bar.add_task(label, total=event.total)
            bar.update(tasks[event.stage], completed=event.done)

        result = build_lut(model, _size(input_size), device, delegate, threads, out, multiple, points, runs, warmup,
                           cache_dir=cache_dir, progress=progress, statistic=statistic, calibrate_at=calibrate_at,
                           work_dir=work_dir, calibrate_random=calibrate_random)
    fix = result.table.correction
    console.print(f"[green]wrote[/] {result.path}: {len(result.table.entries)} entries "
                  f"({result.measured} measured now, {result.reused} from the cache); "
                  f"build {result.convert_s:.1f} s, timing {result.time_s:.1f} s, calibration {result.calibrate_s:.1f} s"
                  + (f", tile probe {0.0 if result.probe.reused else result.probe.seconds:.1f} s" if result.probe else "")
                  + f", weight-streaming probe {result.table.meta['build_s']['stream']:.1f} s"
                  + f"; multiple {result.table.meta['multiple']}; "
                  f"graph correction x{fix.factor:.3f} + {fix.per_op_us:.2f} µs/op", highlight=False)


def _multiple(text: str) -> int | str:
    """``--multiple``: 'auto' or a whole number."""
    from mobiledepth.errors import UserError

    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise UserError(f"--multiple '{text}' is neither 'auto' nor a whole number; e.g. --multiple 16") from None


def _multipliers(text: str, option: str) -> tuple[float, ...]:
    from mobiledepth.errors import UserError

    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"{option} '{text}' is not a comma-separated list of numbers; e.g. 1.0,0.5") from None
    if not values or any(not 0 < m <= 1 for m in values):
        raise UserError(f"{option} must be numbers in (0, 1] (got {text})")
    return values


@lut.command("show")
@click.argument("table", type=click.Path(path_type=Path))
@click.option("--model", "-m", default=None, help="Estimate this spec or module:factory (default: the table's spec).")
@click.option("--json", "as_json", is_flag=True, help="Print the per-layer estimate as JSON.")
def show(table, model, as_json) -> None:
    """Show a table's metadata and the per-layer latency estimate of a spec."""
    from mobiledepth.arch import spec_from_record
    from mobiledepth.prune.lut import load_table, lut_target

    lut_table = load_table(table)
    meta = lut_table.meta
    named = model if model else spec_from_record(meta["model"], f"lookup table {table}")
    estimate = lut_table.estimate_layers(lut_target(named, tuple(meta["input_size"])).layers)
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
    fix = lut_table.correction
    console.print(f"graph correction: x{fix.factor:.3f} on the layer sum + {fix.per_op_us:.2f} µs per layer "
                  f"({len(fix.points)} whole-model variants)", highlight=False)
    stream = lut_table.weight_stream
    console.print(stream.line() if stream else "weight streaming: not measured (a table from before it; rebuild to "
                  "add it)", highlight=False)
    console.print("by op (µs): " + ", ".join(f"{k} {v:.1f}" for k, v in estimate.by_op().items()), highlight=False)


@lut.command("validate")
@click.argument("table", type=click.Path(path_type=Path))
@click.option("--model", "-m", default=None,
              help="Spec to vary (default: the table's), or the table's module:factory (given again).")
@click.option("--random", "random_count", type=int, default=3, show_default=True, help="Random per-group width variants.")
@click.option("--multipliers", default="1.0,0.75,0.5,0.35", show_default=True, help="Uniform width multipliers.")
@click.option("--runs", type=int, default=300, show_default=True,
              help="Timed runs per model before the first look (interleaved turns of 9; more while the CI is wide).")
@click.option("--work-dir", type=click.Path(path_type=Path), default=None,
              help="Where the exported variants go (default: <table>-variants/; an export already there is reused).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random width variants.")
def validate(table, model, random_count, multipliers, runs, work_dir, seed) -> None:
    """LUT estimate vs end-to-end measurement, every variant side by side with the unpruned model."""
    from mobiledepth.prune.variants import validate_lut

    mults = _multipliers(multipliers, "--multipliers")
    console = Console()
    report = validate_lut(table, model, random_count, mults, runs, work_dir, seed,
                          progress=lambda event: console.print(f"{event.detail} ...", style="dim"))
    grid = Table(title=f"LUT validation on {report['device']}/{report['delegate']}, {report['rounds']} rounds, "
                       f"reference {report['reference']} = {report['reference_us'] / 1000:.3f} ms this session")
    for column in ("variant", "estimate ms", "est. ratio", "measured ratio (95 % CI)", "ratio error (95 % CI)",
                   "measured ms", "ms error (95 % CI)"):
        grid.add_column(column, justify="left" if column == "variant" else "right")
    for row in report["rows"]:
        grid.add_row(row["name"] + ("" if row["held_out"] else " (fit)"), f"{row['estimate_us'] / 1000:.3f}",
                     f"{row['estimate_ratio']:.3f}", _ratio_cell(row), _error_cell(row["ratio_error"], row["ratio_error_interval"]),
                     f"{row['measured_us'] / 1000:.3f}", _error_cell(row["ms_error"], row["ms_error_interval"]))
    console.print(grid)
    drift = report["session_drift"]
    console.print(f"ratio error: max |error| {report['max_abs_error'] * 100:.1f} %, median {report['median_abs_error'] * 100:.1f} %; "
                  f"ms error: max {report['max_abs_ms_error'] * 100:.1f} %, median {report['median_abs_ms_error'] * 100:.1f} %"
                  + (f"; reference {drift * 100:+.1f} % vs the calibration session" if drift is not None else "")
                  + " (goal: every ratio error within 10 %)", highlight=False)


def _ratio_cell(row: dict) -> str:
    if row["measured_ratio"] is None:
        return "1 (reference)"
    low, high = row["measured_ratio_interval"]
    return f"{row['measured_ratio']:.3f} ({low:.3f}-{high:.3f})"


def _error_cell(error, interval) -> str:
    if error is None:
        return "-"
    return f"{error * 100:+.1f} % ({interval[0] * 100:+.1f} to {interval[1] * 100:+.1f})"
