"""`mobiledepth check`: the CI latency gate (exit 0 pass, 1 regression, 2 usage error / unmeasurable)."""

from __future__ import annotations

import click


@click.command("check")
@click.argument("model", type=click.Path(path_type=str))
@click.option("--against", "against", default=None, metavar="OLD.tflite",
              help="A/B mode: time MODEL and OLD interleaved in this run.")
@click.option("--baseline", "baseline", default=None, metavar="FILE",
              help="Baseline mode: compare with a baseline file (timed against the baseline's own network).")
@click.option("--update-baseline", "update", is_flag=True, help="Measure MODEL and (re)write --baseline FILE.")
@click.option("--device", "device", default="host", show_default=True,
              help="Where to time (the gate times on this machine: host).")
@click.option("--tolerance", "tolerance", default="5%", show_default=True,
              help="Allowed slowdown before the gate fails (5% or 0.05).")
@click.option("--runs", "runs", type=int, default=None,
              help="Timed runs per model in the first batch [default: 40; 200 with --update-baseline].")
@click.option("--max-runs", "max_runs", type=int, default=None,
              help="While undecided, keep adding batches of 20 runs up to this many [default: 200].")
@click.option("--warmup", "warmup", type=int, default=None, help="Untimed runs per model first [default: 5].")
@click.option("--threads", "threads", type=int, default=None,
              help="Interpreter threads [default: 1, or the baseline's].")
@click.option("--model-name", "model_name", default=None,
              help="Name to match the baseline against (default: the store's name for the file, else the file name).")
@click.option("--allow-different-model", "allow_different", is_flag=True,
              help="Compare even when the model's network, precision or input size differs from the baseline's "
                   "(A/B: precision or input size).")
@click.option("--json", "json_out", default=None, metavar="FILE", help="Also write the result as JSON.")
@click.option("--store", "store_path", default=None, metavar="PATH",
              help="Store used to look up the model's name (default: $MOBILEDEPTH_STORE or the default store).")
def check(model: str, against: str | None, baseline: str | None, update: bool, device: str, tolerance: str,
          runs: int | None, max_runs: int | None, warmup: int | None, threads: int | None, model_name: str | None,
          allow_different: bool, json_out: str | None, store_path: str | None) -> int:
    """Fail (exit 1) when MODEL is slower than OLD / the baseline by more than --tolerance."""
    from mobiledepth import gate

    _check_usage(device, against, baseline, update, json_out, store_path, model_name)
    tol = gate.parse_tolerance(tolerance)
    warm = gate.DEFAULT_WARMUP if warmup is None else warmup
    if against is not None:
        result = gate.check_ab(model, against, runs=runs or gate.DEFAULT_RUNS, threads=threads or 1,
                               tolerance=tol, warmup=warm, max_runs=max_runs, allow_different_model=allow_different)
    elif update:
        result = gate.update_baseline(model, baseline, runs=runs or gate.DEFAULT_MAX_RUNS, threads=threads or 1,
                                      warmup=warm, model_name=model_name, store_path=store_path)
    else:
        result = gate.check_baseline(model, baseline, runs=runs or gate.DEFAULT_RUNS, threads=threads,
                                     tolerance=tol, warmup=warm, model_name=model_name, store_path=store_path,
                                     max_runs=max_runs, allow_different_model=allow_different)
    _render(result)
    if json_out:
        from mobiledepth.io import write_json_atomic

        write_json_atomic(json_out, result.to_dict())
    return result.exit_code


def _check_usage(device: str, against: str | None, baseline: str | None, update: bool, json_out: str | None,
                 store_path: str | None, model_name: str | None) -> None:
    """Refuse impossible option sets, an unwritable --json FILE and a store that cannot be opened, before timing."""
    from android_bench.profiles import HOST
    from mobiledepth.errors import UserError

    if device != HOST:
        raise UserError(f"--device '{device}': the gate times on this machine only; use --device host "
                        "(phones: run 'mobiledepth bench' and compare in 'mobiledepth report')")
    if (against is None) == (baseline is None):
        raise UserError("give exactly one of --against OLD.tflite (A/B) or --baseline FILE")
    if update and baseline is None:
        raise UserError("--update-baseline needs --baseline FILE (the file to write)")
    if json_out:
        from mobiledepth.io import check_writable

        check_writable(json_out, what="--json")
    if baseline is not None and model_name is None:  # the store names the model for the baseline
        from mobiledepth.store import check_store_writable

        check_store_writable(store_path)


def _render(result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console = Console(width=max(console.width, 120))  # keep the verdict column readable in CI logs
    if result.comparison is None:
        console.print(f"baseline written to {result.baseline_path}: {result.new_label}, {result.runs} runs, "
                      f"{result.threads} thread(s); calibration median {result.calibration['new_us'] / 1000:.3f} ms")
        return
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)  # one line, however long
    c = result.comparison
    title = {"ab": "A/B, interleaved"}.get(result.mode) or (
        "against baseline, relative to the calibration model" if result.calibration
        else "against baseline, interleaved with the baseline's network")
    table = Table(title=f"latency gate ({title}; tolerance {c.tolerance:.0%}, alpha {c.alpha:.2g} per look)")
    for column in ("model", "old p50", "new p50", "ratio", "95% CI", "p (slower)", "runs", "verdict"):
        table.add_column(column, justify="left" if column in ("model", "verdict") else "right")
    style = {"regression": "bold red", "improvement": "green"}.get(c.verdict, "")
    table.add_row(c.name, f"{c.old_median_us / 1000:.3f} ms", f"{c.new_median_us / 1000:.3f} ms",
                  f"{c.ratio:.3f}", f"[{c.ci_low:.3f}, {c.ci_high:.3f}]", f"{c.p_value:.2g}",
                  f"{c.n_old}/{c.n_new}", f"[{style}]{c.verdict}[/{style}]" if style else c.verdict)
    console.print(table)
    if result.calibration and "baseline_us" in result.calibration:
        console.print(f"calibration p50: baseline {result.calibration['baseline_us'] / 1000:.3f} ms, "
                      f"now {result.calibration['new_us'] / 1000:.3f} ms")
    for note in result.notes:
        console.print(f"note: {note}")
    console.print("[bold red]FAIL[/]: slower beyond tolerance" if c.regression else "[green]PASS[/]")
