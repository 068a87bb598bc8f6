"""Option parsing shared by commands (pure functions, no heavy imports)."""

from __future__ import annotations

from mobiledepth.sizes import check_input_size, parse_input_size  # noqa: F401 - re-exported for commands


def store_options(command):
    """``--store PATH`` / ``--no-store`` for commands whose records go to the shared store."""
    import click

    command = click.option("--no-store", "no_store", is_flag=True, help="Do not record the result in the store.")(command)
    return click.option("--store", "store_path", default=None, metavar="PATH",
                        help="Store to record into (default: $MOBILEDEPTH_STORE, else the default store).")(command)


def store_choice(store_path: str | None, no_store: bool):
    """What ``--store`` / ``--no-store`` ask of a stage: a path, None (the default store) or False (nowhere)."""
    return False if no_store else store_path
