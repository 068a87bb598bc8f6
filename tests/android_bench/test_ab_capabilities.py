"""Device capabilities: one delegates table, the command lines' choices derived from it, and an
impossible device/delegate pair refused up front with the closest valid value."""

from __future__ import annotations

import click
import pytest

from android_bench.errors import BenchUserError
from android_bench.profiles import (
    DELEGATES, check_device_delegate, closest_delegate, delegate_help, load_profiles, profiles_named,
)


@pytest.fixture(scope="module")
def profiles():
    return load_profiles(env={})


def test_help_names_every_delegate_with_its_runtime():
    assert delegate_help() == ("Where the model runs: cpu (XNNPACK), gpu (GPU delegate), nnapi (NNAPI delegate) "
                               "or npu (LiteRT NPU accelerator).")


@pytest.mark.parametrize("delegate, supported, expected", [
    ("gpu", ("cpu",), "cpu"),                 # host: the only one there is
    ("nnapi", ("cpu", "gpu"), "gpu"),         # another accelerator before the CPU
    ("gpy", ("cpu", "gpu", "nnapi"), "gpu"),  # a misspelling: the near spelling
    ("cpu", ("gpu", "nnapi"), "gpu"),
])
def test_closest_delegate(delegate, supported, expected):
    assert closest_delegate(delegate, supported) == expected


def test_impossible_pairs_are_refused_with_a_suggestion(profiles):
    with pytest.raises(BenchUserError, match=r"device 'host' does not support delegate 'gpu'; it supports: cpu "
                                             r"\(try --delegate cpu\)$"):
        check_device_delegate("host", "gpu", profiles)
    with pytest.raises(BenchUserError, match=r"unknown delegate 'gpy'.*\(try --delegate gpu\)$"):
        check_device_delegate("S21", "gpy", profiles)
    with pytest.raises(BenchUserError, match="unknown device 'S12'"):
        check_device_delegate("S12", "cpu", profiles)


def test_possible_pairs_pass(profiles):
    for profile in profiles:
        for delegate in profile.delegates:
            check_device_delegate(profile.name, delegate, profiles)
    check_device_delegate("all", "nnapi", profiles)
    assert {p.name for p in profiles_named(profiles, "S21")} == {"galaxy-s21-exynos", "galaxy-s21-snapdragon"}


@pytest.mark.parametrize("module, command", [("bench_cmd", "bench"), ("lut_cmd", "lut"), ("prune_cmd", "prune")])
def test_command_line_choices_come_from_the_table(module, command):
    import importlib

    cmd = getattr(importlib.import_module(f"mobiledepth.cli.{module}"), command)
    commands = cmd.commands.values() if isinstance(cmd, click.Group) else [cmd]
    options = [p for c in commands for p in c.params if p.name == "delegate"]
    assert options and all(tuple(o.type.choices) == DELEGATES and o.help == delegate_help() for o in options)
