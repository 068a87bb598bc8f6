"""`mobiledepth report`: latency / accuracy tables and the latency-vs-WHDR plot from the store."""

from __future__ import annotations

import click

FORMATS = ("md", "html", "json", "csv")


@click.command("report")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True,
              help="Markdown, self-contained HTML (with the plot), JSON or CSV.")
@click.option("--out", "out", default=None, metavar="PATH",
              help="Write here (default: stdout; for html: report.html).")
@click.option("--device", "devices", multiple=True, metavar="GLOB",
              help="Only these devices (profile name, glob, repeatable; 'galaxy s21' matches 'galaxy_s21').")
@click.option("--model", "models", multiple=True, metavar="GLOB", help="Only these models (glob, repeatable).")
@click.option("--plot", "plot", default=None, metavar="PNG", help="Also save the latency-vs-WHDR plot as a PNG.")
@click.option("--store", "store_path", default=None, metavar="PATH",
              help="Store file (default: $MOBILEDEPTH_STORE, else $XDG_DATA_HOME/mobiledepth/store.sqlite).")
def report(fmt: str, out: str | None, devices: tuple[str, ...], models: tuple[str, ...], plot: str | None,
           store_path: str | None) -> None:
    """Render the store as the paper's Table 7 / Table 8 / Figure 1, for your models and phones."""
    from pathlib import Path

    from mobiledepth.io import atomic_path, check_writable, write_text_atomic
    from mobiledepth.report.report import build_report, render, render_plot_png
    from mobiledepth.store import open_store

    if fmt == "html" and out is None:
        out = "report.html"
    if out is not None and out != "-":
        check_writable(out, what="--out")
    if plot:
        check_writable(plot, what="--plot")
    with open_store(store_path, readonly=True) as st:  # reading only: a store on a read-only mount is fine
        rep = build_report(st, devices=devices, models=models)
    text = render(rep, fmt)
    if plot:
        with atomic_path(plot) as tmp:
            tmp.write_bytes(render_plot_png(rep))
        click.echo(f"wrote plot {plot}", err=True)
    if out is None or out == "-":
        click.echo(text, nl=False)
        return
    write_text_atomic(out, text)
    measured = len(rep.measured)
    click.echo(f"wrote {fmt} report {Path(out).resolve()} ({measured} measured rows, "
               f"{len(rep.rows) - measured} reported rows)", err=True)
