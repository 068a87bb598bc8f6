"""Option parsing shared by commands (pure functions, no heavy imports)."""

from __future__ import annotations

from mobiledepth.sizes import check_input_size, parse_input_size  # noqa: F401 - re-exported for commands


def store_options(command):
    """``--store PATH`` / ``--no-store`` for commands whose records go to the shared store."""
    import click

    command = click.option("--no-store", "no_store", is_flag=True, help="Do not record the result in the store.")(command)
    return click.option("--store", "store_path", default=None, metavar="PATH",
                        help="Store to record into (default: $MOBILEDEPTH_STORE, else the default store).")(command)


def ingest_into_store(record: dict, store_path: str | None, no_store: bool, base_dir=None):
    """Record a stage's JSON record in the shared store (created on first use); returns its path."""
    if no_store:
        return None
    from mobiledepth.report.store import open_store

    with open_store(store_path) as store:
        store.ingest(record, base_dir=base_dir)
    return store.path
