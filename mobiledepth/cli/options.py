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


PRECISION_MODES = ("auto", "fp32", "bf16", "fp16")  # mobiledepth.compute.device.PRECISIONS (no torch import here)


def compute_options(flag: str = "--device", what: str = "Where it computes", dest: str = "compute_device"):
    """``FLAG auto|cpu|cuda|cuda:N|mps`` (into parameter ``dest``) and ``--precision-mode`` (train's ``--device``;
    prune names its own ``--train-device`` since its ``--device`` is the phone that times the model)."""
    import click

    def decorate(command):
        command = click.option("--precision-mode", "precision", default=None, type=click.Choice(PRECISION_MODES),
                               help="Mixed precision on GPUs [default: auto = bf16 where supported, else fp16; "
                                    "fp32 on the CPU].")(command)
        return click.option(flag, dest, default=None, metavar="auto|cpu|cuda|cuda:N|mps",
                            help=f"{what} [default: auto = the GPU when present, else cpu].")(command)

    return decorate
