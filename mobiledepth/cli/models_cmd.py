"""`mobiledepth models`: list the zoo with parameters and MACs."""

from __future__ import annotations

import json

import click


def _spec_or_warning(name: str, explicit: bool) -> dict | None:
    """The named spec; a broken file met while listing a glob is skipped with one warning line."""
    from mobiledepth.arch.spec import resolve_spec
    from mobiledepth.errors import UserError

    try:
        return resolve_spec(name)
    except UserError as exc:
        if explicit:
            raise
        click.echo(f"warning: skipped model '{name}': {exc}", err=True)
        return None


@click.command("models")
@click.argument("pattern", default="*")
@click.option("--input-size", "input_size", default=None, metavar="HxW",
              help="Count MACs at this size instead of each model's default.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(pattern: str, input_size: str | None, as_json: bool) -> None:
    """List the named model variants with parameters and MACs (PATTERN: a glob, e.g. '*fbnet*')."""
    from mobiledepth.arch.spec import list_models
    from mobiledepth.arch.stats import model_stats
    from mobiledepth.sizes import parse_input_size

    size = parse_input_size(input_size) if input_size else None
    rows = []
    for name in list_models(pattern):
        spec = _spec_or_warning(name, explicit=not any(c in pattern for c in "*?["))
        if spec is None:
            continue
        hw = size or tuple(spec.get("input_size", (256, 256)))
        stats = model_stats(spec, hw)
        reported = (spec.get("card") or {}).get("reported") or {}
        rows.append({"name": name, "params": stats["params"], "macs": stats["macs"],
                     "input_size": list(hw), "reported_params_m": reported.get("params_m"),
                     "reported_whdr": reported.get("whdr"), "description": spec.get("description", "")})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mobiledepth model zoo (params without training-only heads)")
    table.add_column("name", no_wrap=True)
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    table.add_column("input")
    table.add_column("paper (reported)")
    for row in rows:
        paper = ", ".join(x for x in (
            f"{row['reported_params_m']} M" if row["reported_params_m"] else "",
            f"WHDR {row['reported_whdr']}" if row["reported_whdr"] else "") if x)
        table.add_row(row["name"], f"{row['params'] / 1e6:.3f} M", f"{row['macs'] / 1e9:.3f} G",
                      "x".join(map(str, row["input_size"])), paper or "-")
    Console().print(table)
