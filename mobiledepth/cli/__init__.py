"""The `mobiledepth` command: a thin click group over the stage functions.

Each command lives in its own module under ``mobiledepth.cli`` and is imported only when
it is listed or invoked; those modules import click and rich at the top and their stage
(torch, tensorflow, ...) inside the command body, so ``mobiledepth --help`` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import errno
import os
import sys

import click

from mobiledepth import __version__

# command name -> (module, attribute). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("mobiledepth.cli.models_cmd", "models"),
    "export": ("mobiledepth.cli.export_cmd", "export"),
    "bench": ("mobiledepth.cli.bench_cmd", "bench"),
    "data": ("mobiledepth.cli.data_cmd", "data"),
    "eval": ("mobiledepth.cli.eval_cmd", "eval_"),
    "train": ("mobiledepth.cli.train_cmd", "train"),
    "store": ("mobiledepth.cli.store_cmd", "store"),
    "report": ("mobiledepth.cli.report_cmd", "report"),
    "check": ("mobiledepth.cli.check_cmd", "check"),
    "lut": ("mobiledepth.cli.lut_cmd", "lut"),
    "prune": ("mobiledepth.cli.prune_cmd", "prune"),
}


# Environment problems a user fixes (disk full, read-only or forbidden path): exit 2, one line.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _available(name: str) -> bool:
    module, _ = COMMANDS[name]
    return importlib.util.find_spec(module) is not None


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _available(name)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not _available(name):
            return None
        module, attr = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def resolve_command(self, ctx, args):
        # Suggest the closest command for a typo instead of click's bare "No such command".
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            import difflib

            close = difflib.get_close_matches(args[0], self.list_commands(ctx), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise click.UsageError(f"no command '{args[0]}'{hint}") from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="mobiledepth")
def cli() -> None:
    """Monocular depth from PyTorch to the phone: export, benchmark, prune, report."""


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: user errors become one line on stderr and an exit code."""
    from mobiledepth.errors import MobileDepthError

    try:
        rv = cli.main(args=argv, prog_name="mobiledepth", standalone_mode=False)
    except MobileDepthError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("error: interrupted; nothing was published (run the command again to redo it)", err=True)
        return 130
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        click.echo(f"error: {os.strerror(exc.errno).lower()}{where}; free space or choose a writable location", err=True)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:  # one line, like every other user error
        where = exc.ctx.command_path if exc.ctx else "mobiledepth"
        message = exc.format_message().replace(". (", " (").rstrip(".")
        click.echo(f"error: {message[:1].lower() + message[1:]}; see '{where} --help'", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return exc.exit_code
    except _bench_error_types() as exc:  # android_bench raises its own (it cannot import ours)
        click.echo(f"error: {exc}", err=True)
        return getattr(exc, "exit_code", 1)
    return rv if isinstance(rv, int) else 0


def _bench_error_types() -> tuple[type[BaseException], ...]:
    try:
        from android_bench.errors import BenchError
    except ImportError:  # pragma: no cover - android_bench is part of this distribution
        return ()
    return (BenchError,)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
