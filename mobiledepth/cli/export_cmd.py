"""`mobiledepth export`: PyTorch → ONNX → TFLite with parity proven."""

from __future__ import annotations

import json

import click

from mobiledepth.cli.options import store_options


@click.command("export")
@click.option("--model", "model", default=None, metavar="NAME|SPEC.yaml|module:factory",
              help="Zoo name, spec YAML or your own factory (default: the paper's mdepth-mnv2-fbnet).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Weights to load (torch.save'd state_dict or a mobiledepth checkpoint).")
@click.option("--input-size", default=None, metavar="HxW", help="Input size, multiples of 32 (default: the spec's, 256x256).")
@click.option("--precision", "precision", default="fp32,fp16", show_default=True,
              help="Comma-separated: fp32, fp16, int8 (full integer, per-channel), int16x8.")
@click.option("--calibration-data", type=click.Path(file_okay=False), default=None,
              help="Folder of real images for parity checks and int8 calibration (default: generated scenes).")
@click.option("--eval-data", "eval_data", type=click.Path(), default=None,
              help="Held-out DIW-format data (folder with a test split, or a CSV) for the int8 WHDR bar.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run directory (default: runs/<model>-<HxW>).")
@click.option("--quiet", is_flag=True, help="Print only the run directory (for CI).")
@click.option("--json", "as_json", is_flag=True, help="Print the export record as JSON.")
@click.option("--converter", default=None, metavar="onnx2tf|litert-torch|all",
              help="Converter route(s); with several, the fastest artifact per precision that passes parity is "
                   "model_<precision>.tflite (default: every installed route; docs/export.md).")
@click.option("--no-rewrites", is_flag=True,
              help="Export the graph exactly as PyTorch writes it, without the exact speed rewrites "
                   "(phase-split upsampling; docs/export.md).")
@store_options
def export(model, checkpoint, input_size, precision, calibration_data, out, quiet, as_json, converter, no_rewrites,
           store_path, no_store, eval_data=None):
    """Export a depth model to ONNX and TFLite (NHWC), training-only heads stripped, with parity
    against PyTorch measured for every artifact."""
    from rich.console import Console

    from mobiledepth.cli.options import parse_input_size, store_choice
    from mobiledepth.export import export_model, parse_precisions

    # progress and the summary go to stdout (silent with --quiet / --json); stderr carries only
    # warnings and, on failure, the one "error: " line
    console = Console(quiet=quiet or as_json)
    if not console.is_terminal:  # piped or captured: do not squeeze the table to 80 columns
        console = Console(quiet=quiet or as_json, width=120)
    size = parse_input_size(input_size) if input_size else None
    precisions = parse_precisions(precision)
    status = console.status("starting")

    def progress(event) -> None:
        if event.event == "start":
            status.update(f"[bold]{event.stage}[/]: {event.detail}")
        else:
            mark = "[green]✓[/]" if event.event == "done" else "[red]✗[/]"
            console.print(f"{mark} {event.stage:<8} {event.seconds:6.1f} s  {event.detail}")

    with status:
        result = export_model(model=model, checkpoint=checkpoint, input_size=size, precisions=precisions,
                              calibration_data=calibration_data, out=out, progress=progress,
                              rewrites=not no_rewrites, store=store_choice(store_path, no_store),
                              converter=converter, eval_data=eval_data)
    warn = Console(stderr=True, soft_wrap=True)  # one line each, never cut, shown with --quiet / --json too
    for warning in result.warnings:
        warn.print(f"[yellow]warning:[/] {warning}")
    if as_json:
        click.echo(json.dumps(result.record, indent=2))
    elif quiet:
        click.echo(str(result.run_dir))
    else:
        _print_summary(console, result)
        if result.stored:
            console.print(f"recorded in {result.stored}", style="dim")


def _print_summary(console, result) -> None:
    from rich.table import Table

    from mobiledepth.export.parity import parity_warning

    record = result.record
    info = record["model"]
    console.print(f"\n[bold]{info['name']}[/] {record['input_size'][0]}x{record['input_size'][1]}: "
                  f"{info['params']:,} parameters, {info['macs'] / 1e9:.3f} GMACs")
    table = Table(title=f"artifacts in {result.run_dir}")
    table.add_column("artifact", no_wrap=True)
    table.add_column("route")
    table.add_column("layout")
    for column in ("size", "max err / range", "mean err / range", "ordinal agreement", "parity"):
        table.add_column(column, justify="right")
    for art in result.artifacts:
        parity = art["parity"]
        verdict = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "reported"}[parity["passed"]]
        if parity.get("enforced") is False:
            verdict = "[yellow]below bar (untrained)[/]"
        elif parity["passed"] is None and parity_warning(art["precision"], parity):
            verdict = "[yellow]reported, warning[/]"
        elif parity.get("rule") == "noise_floor" and parity["passed"] is not None:
            verdict += " (noise floor)"  # the limit is the model's own response to ±0.5/255 input noise
        route = art.get("route", "") + (" [green]★[/]" if art.get("recommended") and len(record["converters"]) > 1 else "")
        table.add_row(art["path"], route, art["layout"], f"{art['size_bytes'] / 1e6:.2f} MB",
                      f"{parity['max_abs_err_rel']:.2e}", f"{parity['mean_abs_err_rel']:.2e}",
                      f"{parity['ordinal_agreement']:.5f}", verdict)
    console.print(table)
    for art in result.artifacts:
        floor = art["parity"].get("noise_floor") if art["parity"].get("rule") == "noise_floor" else None
        if floor:
            limit = art["parity"]["limit"]
            console.print(f"{art['path']}: bar relative to the model's own noise floor (±{floor['grey_levels']}/255 "
                          f"input noise moves it {floor['max_abs_err_rel']:.2e}, ordinal {floor['ordinal_agreement']:.4f}):"
                          f" max err <= {limit['max_abs_err_rel']:.2e}, ordinal >= {limit['ordinal_agreement']:.4f}",
                          highlight=False)
