"""`mobiledepth store`: bring JSON records into the store (import) and take them out (export)."""

from __future__ import annotations

import click

STORE_HELP = "Store file (default: $MOBILEDEPTH_STORE, else $XDG_DATA_HOME/mobiledepth/store.sqlite)."


@click.group("store")
def store() -> None:
    """The shared latency / accuracy store (one SQLite file)."""


@store.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--store", "store_path", default=None, metavar="PATH", help=STORE_HELP)
def import_(files: tuple[str, ...], store_path: str | None) -> None:
    """Add export.json / bench.json / eval records (or directories of them, or a store export)."""
    from rich.console import Console
    from rich.table import Table

    from mobiledepth.store import iter_record_files, open_store

    table = Table(title="imported")
    table.add_column("file", overflow="fold")
    for column in ("kind", "artifacts", "bench results", "evals", "prune steps", "already there"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    paths = list(iter_record_files(files))
    with open_store(store_path) as st:
        for path in paths:
            summary = st.ingest_file(path)
            table.add_row(str(path), summary.kind, str(summary.artifacts), str(summary.bench_results),
                          str(summary.evals), str(summary.prune_steps), str(summary.duplicates))
        counts, location = st.counts(), st.path
    console = Console()
    console = Console(width=max(console.width, 120))  # full paths in CI logs
    console.print(table)
    console.print(f"store {location}: {counts['artifacts']} artifacts, {counts['bench_results']} bench results, "
                  f"{counts['evals']} evals, {counts['prune_runs']} pruning runs ({counts['prune_steps']} steps)")


@store.command("export")
@click.option("--out", "out", required=True, type=click.Path(path_type=str), metavar="FILE",
              help="JSON file to write ('-' for stdout); 'mobiledepth store import' reads it back.")
@click.option("--store", "store_path", default=None, metavar="PATH", help=STORE_HELP)
def export(out: str, store_path: str | None) -> None:
    """Write the whole store as one JSON file for sharing."""
    import json

    from mobiledepth.io import check_writable, write_json_atomic
    from mobiledepth.store import open_store

    if out != "-":
        check_writable(out, what="--out")
    with open_store(store_path, readonly=True) as st:
        data = st.export_records()
    if out == "-":
        click.echo(json.dumps(data, indent=2))
        return
    write_json_atomic(out, data)
    click.echo(f"wrote {out} ({len(data['records'])} records)", err=True)
