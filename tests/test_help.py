"""Help texts of both programs: every option explained with its default, no stray markup or
references to documents the user does not have, and `--version` on both."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import click
import pytest

from android_bench import __version__ as bench_version
from android_bench.cli import build_parser
from mobiledepth.cli import cli

# "SPEC §7", a section sign, rich markup, reST literals, click's \b paragraph marker
FORBIDDEN = [re.compile(r"\bSPEC\b(?!\.yaml)"), re.compile("§"), re.compile(r"\[/?(bold|red|green|yellow|dim)\b"),
             re.compile("``"), re.compile(r"\\b|\x08")]


def mobiledepth_commands():
    """(context, command) for the group and every command below it, as `mobiledepth` builds them."""
    root = click.Context(cli, info_name="mobiledepth", **cli.context_settings)
    found = [(root, cli)]
    for ctx, command in found:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                found.append((click.Context(sub, info_name=name, parent=ctx), sub))
    return found


def android_bench_parsers():
    """(name, parser) for `android-bench` and each of its subcommands."""
    parser = build_parser()
    found = [("android-bench", parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += [(f"android-bench {name}", sub) for name, sub in action.choices.items()]
    return found


NO_DEFAULT = (None, argparse.SUPPRESS, getattr(click.core, "UNSET", None))  # click >= 8.3 marks "none" as UNSET


def _meaningful(default) -> bool:
    return not any(default is marker for marker in NO_DEFAULT) and default not in (False, (), [])


def test_every_mobiledepth_option_has_help_and_shows_its_default():
    commands = mobiledepth_commands()
    assert len(commands) > 15  # the walk reached the subgroups' commands
    missing, no_default = [], []
    for ctx, command in commands:
        for param in command.get_params(ctx):
            if not isinstance(param, click.Option) or param.hidden:
                continue
            where = f"{ctx.command_path} {param.opts[0]}"
            if not param.help:
                missing.append(where)
            elif not param.is_flag and _meaningful(param.get_default(ctx)):
                if "default" not in param.get_help_record(ctx)[1].lower():
                    no_default.append(where)
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options that hide their default: {no_default}"


def test_every_android_bench_option_has_help_and_shows_its_default():
    missing, no_default = [], []
    for name, parser in android_bench_parsers():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            where = f"{name} {(action.option_strings or [action.dest])[0]}"
            if not action.help:
                missing.append(where)
            elif action.option_strings and _meaningful(action.default) and action.nargs != 0:
                if "default" not in action.help:
                    no_default.append(where)
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options that hide their default: {no_default}"


def _texts():
    for ctx, command in mobiledepth_commands():
        yield ctx.command_path, command.get_help(ctx)
    for name, parser in android_bench_parsers():
        yield name, parser.format_help()


@pytest.mark.parametrize("pattern", FORBIDDEN, ids=lambda p: p.pattern)
def test_help_has_no_markup_or_references_to_missing_documents(pattern):
    offenders = [name for name, text in _texts() if pattern.search(text)]
    assert not offenders, f"{pattern.pattern!r} in the help of: {offenders}"


@pytest.mark.parametrize("module, name, version", [("android_bench", "android-bench", bench_version),
                                                   ("mobiledepth", "mobiledepth", None)])
def test_version_through_the_real_cli(module, name, version):
    proc = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith(name) and (version is None or version in proc.stdout), proc.stdout


def test_android_bench_help_is_plain_text_through_the_real_cli():
    proc = subprocess.run([sys.executable, "-m", "android_bench", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "devices" in proc.stdout and "parse" in proc.stdout
    assert not [p.pattern for p in FORBIDDEN if p.search(proc.stdout)], proc.stdout
