"""prune's --multiple (default: the table's own) and --seed, on mdepth-tiny with hand-made tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_prune_lut import hand_table  # noqa: E402
from test_prune_netadapt import _estimate_ms, settings  # noqa: E402


@pytest.fixture(scope="module")
def lut16(setup):
    """A hand-made table on a 16-channel grid (as 'lut build --multiple 16' records it)."""
    root, _, spec = setup
    path = root / "lut16.json"
    path.write_text(json.dumps(hand_table(spec, multiple=16)))
    return path


def test_multiple_defaults_to_the_tables_and_a_resume_keeps_it(setup, lut16, tmp_path):
    from mobiledepth.prune.netadapt import plan_cuts, reopen, start
    from mobiledepth.prune.subject import open_subject

    root, ckpt, spec = setup
    events = []
    run = start(settings(root, ckpt, 0.8 * _estimate_ms(root, spec), lut=str(lut16), seed=7), out=tmp_path / "run",
                notify=events.append)
    assert run.settings.multiple == 16 and run.record["settings"]["multiple"] == 16
    assert run.record["warnings"] == [] and not [e for e in events if e.event == "warning"]
    _, cuts = plan_cuts(run, open_subject(None, ckpt), 1)
    assert cuts and all(width % 16 == 0 for _, width, _ in cuts)
    again = reopen(tmp_path / "run")
    assert (again.settings.multiple, again.settings.seed) == (16, 7)  # the run's own, kept
    assert reopen(tmp_path / "run", seed=3).settings.seed == 3       # ... unless given
    assert reopen(tmp_path / "run").settings.seed == 7               # reopen alone writes nothing


def test_a_finer_multiple_is_allowed_with_one_warning(setup, lut16, tmp_path):
    from mobiledepth.prune.netadapt import start

    root, ckpt, spec = setup
    events = []
    run = start(settings(root, ckpt, 0.8 * _estimate_ms(root, spec), lut=str(lut16), multiple=8), out=tmp_path / "run",
                notify=events.append)
    warnings = [e.detail for e in events if e.event == "warning"]
    assert run.settings.multiple == 8 and len(warnings) == 1 and run.record["warnings"] == warnings
    assert "finer than the lookup table's multiple 16" in warnings[0] and "interpolated" in warnings[0]
    events.clear()
    start(settings(root, ckpt, 0.95 * _estimate_ms(root, spec), lut=str(lut16), multiple=32), out=tmp_path / "r32",
          notify=events.append)
    assert not [e for e in events if e.event == "warning"]  # a coarser multiple of the grid stays on it


def test_the_seed_reaches_every_fine_tune(setup, tmp_path, monkeypatch):
    from mobiledepth.prune import netadapt

    root, ckpt, spec = setup
    seeds = []
    def fine_tune(checkpoint, data, out_dir, steps, run_settings, seed=0):
        seeds.append(seed)
        return Path(checkpoint)

    monkeypatch.setattr(netadapt, "fine_tune", fine_tune)
    run = netadapt.start(settings(root, ckpt, 0.9 * _estimate_ms(root, spec), seed=5), out=tmp_path / "run")
    netadapt.step(run)
    assert seeds and set(seeds) == {5}  # every proposal's short-term fine-tune


def test_cli_seed_and_multiple(setup, tmp_path, monkeypatch, capsys):
    from mobiledepth.cli import main
    from mobiledepth.prune import netadapt

    root, ckpt, _ = setup
    calls = []

    class Stop(Exception):
        pass

    def capture(name):
        def call(*args, **kw):
            calls.append((name, args, kw))
            raise Stop

        return call

    monkeypatch.setattr(netadapt, "prune", capture("prune"))
    monkeypatch.setattr(netadapt, "resume", capture("resume"))
    base = ["prune", "--checkpoint", str(ckpt), "--data", str(root / "data"), "--target-ratio", "0.7", "--no-store"]
    for argv in (base, base + ["--seed", "9", "--multiple", "16"], ["prune", "--resume", str(tmp_path)],
                 ["prune", "--resume", str(tmp_path), "--seed", "4"]):
        with pytest.raises(Stop):
            main(argv)
    given, seeded = calls[0][1][0], calls[1][1][0]  # the PruneSettings the CLI made
    assert (given.seed, given.multiple) == (0, None)  # None: the table's multiple, resolved when the run starts
    assert (seeded.seed, seeded.multiple) == (9, 16)
    assert calls[2][2]["seed"] is None and calls[3][2]["seed"] == 4  # a resume keeps the run's seed unless given


def test_the_cli_prints_the_warning_as_one_stderr_line(capsys):
    from rich.console import Console

    from mobiledepth.cli.prune_cmd import _progress_printer
    from mobiledepth.progress import Progress

    _progress_printer(Console(), "host")(Progress("prune", "warning", detail="--multiple 8 is finer than ..."))
    captured = capsys.readouterr()
    assert captured.err == "warning: --multiple 8 is finer than ...\n" and captured.out == ""
