"""Option parsing shared by commands (pure functions, no heavy imports)."""

from __future__ import annotations

import re

from mobiledepth.errors import UserError


def parse_input_size(text: str, multiple: int = 32) -> tuple[int, int]:
    """'256x256' / '224x448' / '256' -> (H, W), each a positive multiple of ``multiple``."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", text)
    if not match:
        raise UserError(f"input size '{text}' is not HxW; write it like 256x256 or 224x448")
    h = int(match.group(1))
    w = int(match.group(2) or h)
    if h <= 0 or w <= 0 or h % multiple or w % multiple:
        fix = "x".join(str(max(multiple, round(v / multiple) * multiple)) for v in (h, w))
        raise UserError(f"input size {h}x{w}: both sides must be multiples of {multiple} "
                        f"(the encoder downsamples by {multiple}); try {fix}")
    return h, w


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

    store = open_store(store_path)
    try:
        store.ingest(record, base_dir=base_dir)
    finally:
        store.close()
    return store.path
