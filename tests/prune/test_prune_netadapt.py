"""The NetAdapt loop on mdepth-tiny with a hand-made latency table and a few fine-tune steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mobiledepth.errors import UserError

torch.set_num_threads(1)


def settings(root, ckpt, target_ms, **kw):
    from mobiledepth.prune.netadapt import PruneSettings

    base = dict(model=None, checkpoint=str(ckpt), target_ms=target_ms, data=str(root / "data"), lut=str(root / "lut.json"),
                short_term_steps=2, long_term_steps=2, measure=False, initial_reduction=0.1, batch_size=4)
    return PruneSettings(**{**base, **kw})


def _estimate_ms(root, spec):
    from mobiledepth.prune.lut import load_table

    return load_table(root / "lut.json").estimate(spec).total_ms


@pytest.fixture(scope="module")
def full_run(setup):
    """One uninterrupted run to 75 % of the start estimate (stored): several tests read it."""
    from mobiledepth.prune.netadapt import prune

    root, ckpt, spec = setup
    return prune(settings(root, ckpt, 0.75 * _estimate_ms(root, spec)), out=root / "run", store=root / "store.sqlite")


def test_loop_reaches_the_target(setup, full_run):
    from mobiledepth.arch import load_checkpoint

    root, ckpt, spec = setup
    start = _estimate_ms(root, spec)
    target = 0.75 * start
    result = full_run
    record = json.loads((root / "run" / "prune.json").read_text())
    assert record == result.record and record["status"] == "done" and record["kind"] == "prune"
    assert record["settings"]["choose"] == "accuracy" and record["settings"]["statistic"] == "median"
    assert record["settings"]["input_size"] == record["settings"]["train_input_size"] == [64, 64]  # from the table
    _check_stored_trajectory(root / "store.sqlite", root / "run", record)
    its = record["iterations"]
    assert its[0]["estimated_ms"] == pytest.approx(start)
    assert all(b["estimated_ms"] < a["estimated_ms"] for a, b in zip(its, its[1:]))  # every step cuts latency
    assert its[-1]["estimated_ms"] <= target < its[-2]["estimated_ms"]                # stops right after the target
    for it in its[1:]:
        assert it["estimated_ms"] <= it["target_ms"] + 1e-9
        chosen = it["chosen"]
        assert chosen["width"] % 8 == 0 and it["widths"][chosen["group"]] == chosen["width"]
        ok = [p for p in it["proposals"] if p["ok"]]
        assert min(p["whdr"] for p in ok) == it["whdr"]  # the most accurate proposal wins
    model, final_spec, _ = load_checkpoint(result.final_checkpoint, with_heads=False)
    assert _estimate_ms(root, final_spec) == pytest.approx(record["final"]["estimated_ms"])
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    from mobiledepth.evaluate.evaluate import evaluate

    # the recorded WHDR is the final checkpoint's, as the evaluate stage scores it on the held-out split
    reference = evaluate(str(result.final_checkpoint), root / "data", backend="torch", split="test", input_size=(64, 64))
    assert record["final"]["whdr"] == pytest.approx(reference.value, abs=1e-12)


def _check_stored_trajectory(store, run_dir: Path, record: dict) -> None:
    """The store holds one step per iteration plus the final model, as prune.json says; the report draws them."""
    from mobiledepth.io import sha256_file
    from mobiledepth.report.report import build_report, render, render_plot_png
    from mobiledepth.store import open_store

    assert record["store"]["records"] == 1  # no export without measurement: the run record only
    with open_store(store) as st:
        steps = st.prune_steps()
        rep = build_report(st, card_paths=[])
        assert st.ingest_file(run_dir / "prune.json").prune_steps == 0  # importing it again adds nothing
    its = record["iterations"]
    assert [(s.iteration, s.final) for s in steps] == [(it["iteration"], False) for it in its] + [(its[-1]["iteration"], True)]
    for step, it in zip(steps, its):
        assert (step.estimated_ms, step.whdr, step.widths) == (it["estimated_ms"], it["whdr"], it["widths"])
        assert step.checkpoint_sha256 == sha256_file(run_dir / it["checkpoint"])
        assert step.chosen_group == (it["chosen"] or {}).get("group")
    assert steps[-1].whdr == record["final"]["whdr"]
    assert len(rep.prune_runs) == 1 and "## Pruning runs" in render(rep, "md")
    assert render_plot_png(rep)[:4] == b"\x89PNG"


def _stopped_after_iteration_1(run_settings, out):
    """Run NetAdapt, Ctrl-C it once iteration 1 is written; the saved prune.json."""
    from mobiledepth.prune.netadapt import prune

    def stop(event):
        if event.event == "iteration" and event.info["iteration"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prune(run_settings, out=out, store=False, progress=stop)
    return json.loads((out / "prune.json").read_text())


def test_resume_after_ctrl_c(setup, full_run):
    from mobiledepth.prune.netadapt import resume

    root, ckpt, spec = setup
    target = 0.75 * _estimate_ms(root, spec)
    saved = _stopped_after_iteration_1(settings(root, ckpt, target), root / "stopped")
    assert [it["iteration"] for it in saved["iterations"]] == [0, 1] and saved["status"] == "running"
    result = resume(root / "stopped", store=False)
    assert result.record["status"] == "done"
    assert result.record["iterations"][:2] == saved["iterations"]  # nothing redone
    # the same steps as the uninterrupted run (deterministic fine-tune)
    steps = [(it["chosen"], it["widths"], it["estimated_ms"], it["whdr"]) for it in result.record["iterations"]]
    assert steps == [(it["chosen"], it["widths"], it["estimated_ms"], it["whdr"]) for it in full_run.record["iterations"]]


def test_unreachable_target_is_reported_up_front(setup, tmp_path):
    from mobiledepth.prune.netadapt import prune

    root, ckpt, _ = setup
    with pytest.raises(UserError, match=r"not reachable.*smallest allowed widths"):
        prune(settings(root, ckpt, 0.001), out=tmp_path / "run", store=False)
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_bad_inputs(setup, tmp_path):
    from mobiledepth.prune.netadapt import prune, resume

    root, ckpt, spec = setup
    with pytest.raises(UserError, match="checkpoint"):
        prune(settings(root, tmp_path / "none.pt", 1.0), out=tmp_path / "a", store=False)
    with pytest.raises(UserError, match="--target-ms"):
        prune(settings(root, ckpt, -1.0), out=tmp_path / "b", store=False)
    with pytest.raises(UserError, match="--decay"):
        prune(settings(root, ckpt, 1.0, decay=1.5), out=tmp_path / "c", store=False)
    with pytest.raises(UserError, match="measured on host/cpu"):
        prune(settings(root, ckpt, 1.0, device="S21", delegate="gpu"), out=tmp_path / "d", store=False)
    with pytest.raises(UserError, match="holds no readable prune.json"):
        resume(tmp_path, store=False)
    with pytest.raises(UserError, match="exactly one of --target-ms and --target-ratio"):
        prune(settings(root, ckpt, 1.0, target_ratio=0.5), out=tmp_path / "e", store=False)
    with pytest.raises(UserError, match="--target-ratio must be in"):
        prune(settings(root, ckpt, None, target_ratio=1.5), out=tmp_path / "f", store=False)
    with pytest.raises(UserError, match="target ratio 0.01 is not reachable"):
        prune(settings(root, ckpt, None, target_ratio=0.01), out=tmp_path / "g", store=False)


def test_worker_pool_survives_a_dying_worker(tmp_path):
    from _jobs import square_or_die

    from mobiledepth.prune.workers import run_jobs

    jobs = [{"x": x, "die": x == 2, "raise": x == 3, "result_path": str(tmp_path / f"{x}.json")} for x in range(5)]
    results = run_jobs(square_or_die, jobs, workers=2, timeout_s=60)
    assert [r.get("value") for r in results] == [0, 1, None, None, 16]
    assert "worker died" in results[2]["error"] and "exit code 3" in results[2]["error"]
    assert "bad proposal" in results[3]["error"]
    # a rerun (resume) reuses every recorded result, including the failure
    again = run_jobs(square_or_die, jobs, workers=2)
    assert all(r["reused"] for r in again) and again[4]["value"] == 16


def test_worker_pool_kills_a_hung_worker_and_runs_in_process_with_one(tmp_path):
    from _jobs import square_or_die

    from mobiledepth.prune.workers import run_jobs

    hung = [{"x": 1, "sleep": 120, "result_path": str(tmp_path / "hung.json")},
            {"x": 3, "result_path": str(tmp_path / "fine.json")}]
    done = []
    # 5 s: long enough for the fine worker to start and answer on a loaded machine, far below the hung one's 120 s
    results = run_jobs(square_or_die, hung, workers=2, timeout_s=5, on_done=lambda job, res: done.append(job["x"]))
    assert results[0] == {"ok": False, "error": "worker timed out after 5 s and was killed"}
    assert results[1] == {"ok": True, "value": 9} and sorted(done) == [1, 3]
    assert json.loads((tmp_path / "hung.json").read_text()) == results[0]  # a resume does not hang again
    here = [{"x": x, "raise": x == 1, "result_path": str(tmp_path / f"here{x}.json")} for x in range(3)]
    in_process = run_jobs(square_or_die, here, workers=1)
    assert [r.get("value") for r in in_process] == [0, None, 4] and in_process[1]["error"] == "ValueError: bad proposal"


def test_cli_one_line_errors(setup, tmp_path, capsys):
    from mobiledepth.cli import main

    root, ckpt, _ = setup
    assert main(["prune", "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: prune needs --data, --target-ms or --target-ratio") and err.count("\n") == 1
    code = main(["prune", "--checkpoint", str(ckpt), "--target-ms", "0.001", "--data", str(root / "data"),
                 "--lut", str(root / "lut.json"), "--out", str(tmp_path / "r"), "--no-store"])
    err = capsys.readouterr().err
    assert code == 2 and "not reachable" in err and err.count("\n") == 1
    assert main(["lut", "show", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["lut", "build", "--model", "fastdepth"]) == 2
    assert "pruning supports MobileNetV2 + FBNet" in capsys.readouterr().err
    assert main(["lut", "build", "--device", "host", "--delegate", "gpu"]) == 2
    assert "does not support delegate 'gpu'" in capsys.readouterr().err


def test_cli_lut_show(setup, capsys):
    from mobiledepth.cli import main

    root, _, spec = setup
    assert main(["lut", "show", str(root / "lut.json"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["total_us"] == pytest.approx(_estimate_ms(root, spec) * 1000)
    from mobiledepth.prune.layers import network_layers

    assert len(shown["layers"]) == len(network_layers(spec, (64, 64)))  # every layer of the table's model


@pytest.mark.slow
def test_loop_with_two_workers_and_measurement(setup, tmp_path):
    """Real host table, proposals in spawned processes, measurements on host, the store filled."""
    from mobiledepth.prune.lut import build_lut
    from mobiledepth.prune.variants import measure_spec
    from mobiledepth.prune.netadapt import prune

    root, ckpt, spec = setup
    lut = build_lut("mdepth-tiny", (64, 64), out=tmp_path / "lut.json", points=2, runs=20, statistic="min",
                    cache_dir=tmp_path / "cache")
    from mobiledepth.prune.netadapt import smallest_widths

    start = measure_spec(spec, (64, 64), "host", "cpu", 1, tmp_path / "start", checkpoint=ckpt, runs=200, statistic="min")
    # halfway between the measured start and the LUT floor shifted by the measured gap: reachable
    subject = _subject(ckpt)
    saving = subject.estimate(lut.table).total_ms - subject.estimate(lut.table, smallest_widths(subject, 8, 8)).total_ms
    target = start["latency_us"] / 1000 - 0.5 * saving
    result = prune(settings(root, ckpt, target, lut=str(lut.path), workers=2, measure=True, measure_runs=200),
                   out=tmp_path / "run", store=tmp_path / "store.sqlite")
    last = result.record["iterations"][-1]
    assert last["measured_ms"] is not None and last["measured_ms"] <= target  # the loop stops on a measurement
    assert result.record["final"]["measured_ms"] > 0
    assert result.record["store"]["records"] >= 4
    assert (result.export_dir / "bench.json").exists()
    # the exported model's accuracy is measured on the TFLite file, not carried over from torch
    evaluated = json.loads((result.export_dir / "eval.json").read_text())
    assert evaluated["backend"] == "tflite" and evaluated["value"] == result.record["final"]["tflite_whdr"]
    from mobiledepth.store import open_store

    with open_store(tmp_path / "store.sqlite") as db:
        assert [e.value for e in db.evals() if e.backend == "tflite"] == [evaluated["value"]]


def test_failed_start_leaves_nothing(setup, tmp_path):
    from mobiledepth.prune.netadapt import prune

    root, ckpt, spec = setup
    with pytest.raises(UserError):
        prune(settings(root, ckpt, 0.9 * _estimate_ms(root, spec), val_split="nope"), out=tmp_path / "run", store=False)
    assert not (tmp_path / "run").exists()


def test_measurement_that_rules_out_the_target_stops_the_run(setup, tmp_path):
    from mobiledepth.errors import StageFailed
    from mobiledepth.prune.netadapt import resume

    root, ckpt, spec = setup
    record = _stopped_after_iteration_1(settings(root, ckpt, 0.75 * _estimate_ms(root, spec)), tmp_path / "run")
    record["iterations"][1]["measured_ms"] = record["iterations"][1]["estimated_ms"] + 10.0  # the phone says: far slower
    (tmp_path / "run" / "prune.json").write_text(json.dumps(record))
    with pytest.raises(StageFailed, match="not reachable"):
        resume(tmp_path / "run", store=False)


# ----------------------------------------------------------------------------- the choice rule
BEFORE = {"whdr": 0.25, "estimated_ms": 10.0}  # binary fractions: the ratios below are exact
PROPOSALS = [
    {"group": "a", "whdr": 0.375, "estimated_ms": 9.5},     # loss 0.125 / 0.5 ms saved = 0.25 per ms
    {"group": "b", "whdr": 0.5, "estimated_ms": 8.0},       # 0.25 / 2 = 0.125
    {"group": "c", "whdr": 0.3125, "estimated_ms": 9.5},    # 0.0625 / 0.5 = 0.125 (tie with b, more accurate)
    {"group": "d", "whdr": 0.28125, "estimated_ms": 9.875},  # 0.03125 / 0.125 = 0.25, but the lowest WHDR
]


@pytest.mark.parametrize("proposals, rule, winner", [
    (PROPOSALS, "accuracy", "d"),
    (PROPOSALS, "loss-per-ms", "c"),
    (PROPOSALS[:2], "loss-per-ms", "b"),
    (PROPOSALS + [{"group": "gain", "whdr": 0.1875, "estimated_ms": 9.0}], "loss-per-ms", "gain"),  # WHDR improved
    ([{"group": "same", "whdr": 0.25, "estimated_ms": 10.0}, PROPOSALS[0]], "loss-per-ms", "a"),  # saves nothing: last
    ([{"group": "x", "whdr": 0.3, "estimated_ms": 9.0}, {"group": "y", "whdr": 0.3, "estimated_ms": 8.0}],
     "accuracy", "y"),  # equal WHDR: the faster
])
def test_choose_proposal_hand_made(proposals, rule, winner):
    from mobiledepth.prune.netadapt import choose_proposal

    assert choose_proposal(proposals, rule, BEFORE["whdr"], BEFORE["estimated_ms"])["group"] == winner


def test_loss_per_ms_run_is_recorded_and_kept_on_resume(setup, tmp_path, capsys):
    from mobiledepth.cli import main
    from mobiledepth.prune.netadapt import choose_proposal, prune

    root, ckpt, spec = setup
    with pytest.raises(UserError, match="--choose must be one of accuracy, loss-per-ms"):
        prune(settings(root, ckpt, 1.0, choose="fastest"), out=tmp_path / "bad", store=False)

    def stop(event):
        if event.event == "iteration" and event.info["iteration"] == 1:
            raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        prune(settings(root, ckpt, 0.75 * _estimate_ms(root, spec), choose="loss-per-ms"), out=run, store=False,
              progress=stop)
    assert main(["prune", "--resume", str(run), "--choose", "accuracy", "--no-store"]) == 2
    err = capsys.readouterr().err
    assert "chooses proposals by loss-per-ms" in err and err.count("\n") == 1
    assert main(["prune", "--resume", str(run), "--no-store"]) == 0
    record = json.loads((run / "prune.json").read_text())
    assert record["status"] == "done" and record["settings"]["choose"] == "loss-per-ms"
    its = record["iterations"]
    assert len(its) >= 3
    for before, it in zip(its, its[1:]):
        ok = [p for p in it["proposals"] if p["ok"]]
        best = choose_proposal(ok, "loss-per-ms", before["whdr"], before["estimated_ms"])
        assert it["chosen"] == {"group": best["group"], "width": best["width"]}


def test_resume_keeps_the_runs_workers_unless_given():
    from mobiledepth.prune.netadapt import PruneSettings, apply_resume_overrides

    def resumed(**given):
        saved = PruneSettings(model=None, checkpoint="c.pt", target_ms=1, data="d", workers=3, choose="accuracy")
        return apply_resume_overrides(saved, "run", **given).workers

    assert resumed(workers=None, choose="accuracy") == 3  # `--choose accuracy` alone does not reset --workers
    assert resumed(workers=2, choose=None) == 2
    with pytest.raises(UserError, match="--workers must be at least 1"):
        resumed(workers=0, choose=None)
    with pytest.raises(UserError, match="chooses proposals by accuracy"):
        resumed(workers=None, choose="loss-per-ms")


# ----------------------------------------------------------------------------- the steps, one by one
def test_settings_round_trip_through_the_record():
    from mobiledepth.prune.netadapt import PruneSettings, default_run_dir

    given = PruneSettings(model=None, checkpoint="runs/t/model.pt", target_ms=2.5, data="d", input_size=(64, 96),
                          workers=2, choose="loss-per-ms")
    saved = json.loads(json.dumps(given.to_record()))
    assert saved["input_size"] == [64, 96] and saved["train_input_size"] is None
    assert PruneSettings.from_record(saved) == PruneSettings(**{**given.__dict__, "input_size": [64, 96]})
    old = {k: v for k, v in saved.items() if k != "choose"} | {"retired_option": 1}  # a run from before --choose
    assert PruneSettings.from_record(old).choose == "accuracy"
    assert default_run_dir(given) == Path("runs/prune-model-2.5ms")
    assert default_run_dir(PruneSettings(model="mdepth-tiny", checkpoint="x.pt", target_ms=3, data="d")) == \
        Path("runs/prune-mdepth-tiny-3ms")


def _subject(ckpt):
    from mobiledepth.prune.subject import open_subject

    return open_subject(None, ckpt)


def _widest_cut_check(run, spec, group, width, lut_target_us, current_width):
    """No allowed width between the proposal and the current one meets the target (the proposal is the widest)."""
    from mobiledepth.prune.groups import set_group_widths, structure

    for wider in range(width + 8, current_width, 8):
        trial = set_group_widths(spec, {group: wider})
        if structure(trial) == structure(spec):
            assert run.table.estimate(trial).total_us > lut_target_us, (group, wider)


def test_start_then_plan_cuts(setup, tmp_path):
    from mobiledepth.prune.groups import channel_groups, set_group_widths
    from mobiledepth.prune.netadapt import plan_cuts, start

    root, ckpt, spec = setup
    run = start(settings(root, ckpt, 0.75 * _estimate_ms(root, spec), min_proposals=1), out=tmp_path / "run")
    assert json.loads((tmp_path / "run" / "prune.json").read_text()) == run.record
    first = run.record["iterations"][0]
    assert (first["iteration"], first["chosen"], first["measured_ms"]) == (0, None, None)
    assert first["estimated_ms"] == pytest.approx(_estimate_ms(root, spec))
    lut_target_us, cuts = plan_cuts(run, _subject(ckpt), 1)
    start_us = first["estimated_ms"] * 1000
    assert lut_target_us == pytest.approx(0.9 * start_us)  # initial_reduction 0.1, decay**0, nothing measured
    widths = {g.name: g.width for g in channel_groups(spec)}
    assert cuts and {g for g, _, _ in cuts} <= {g.name for g in channel_groups(spec) if g.prunable}
    for group, width, estimate_us in cuts:
        assert width % 8 == 0 and 8 <= width < widths[group]
        assert estimate_us == pytest.approx(run.table.estimate(set_group_widths(spec, {group: width})).total_us)
        assert estimate_us <= lut_target_us
        _widest_cut_check(run, spec, group, width, lut_target_us, widths[group])


def test_plan_cuts_halves_a_step_no_group_can_make(setup, tmp_path):
    from mobiledepth.prune.netadapt import _candidates, plan_cuts, start

    root, ckpt, spec = setup
    run = start(settings(root, ckpt, 0.75 * _estimate_ms(root, spec), initial_reduction=0.6, min_proposals=1),
                out=tmp_path / "run")
    current_us = run.last["estimated_ms"] * 1000
    scheduled_us = 0.4 * current_us
    assert _candidates(run, _subject(ckpt), scheduled_us) == []  # no single cut saves 60 %
    lut_target_us, cuts = plan_cuts(run, _subject(ckpt), 1)
    halvings = [k for k in range(1, 9) if lut_target_us == pytest.approx(current_us - 0.6 * current_us / 2 ** k)]
    assert len(halvings) == 1 and cuts  # the step was halved k times, and at k - 1 halvings nothing fitted
    assert _candidates(run, _subject(ckpt), current_us - 0.6 * current_us / 2 ** (halvings[0] - 1)) == []


def test_plan_cuts_halves_the_step_until_there_is_a_choice(setup, tmp_path):
    """With min_proposals 3 a step that only one or two groups can make is halved again: NetAdapt gets at
    least three proposals to choose from (or every cuttable group, when fewer are left)."""
    from mobiledepth.prune.netadapt import _candidates, cuttable_groups, plan_cuts, start

    root, ckpt, spec = setup
    one = start(settings(root, ckpt, 0.75 * _estimate_ms(root, spec), initial_reduction=0.6, min_proposals=1),
                out=tmp_path / "one")
    three = start(settings(root, ckpt, 0.75 * _estimate_ms(root, spec), initial_reduction=0.6), out=tmp_path / "three")
    assert three.settings.min_proposals == 3
    target_one, cuts_one = plan_cuts(one, _subject(ckpt), 1)
    target_three, cuts_three = plan_cuts(three, _subject(ckpt), 1)
    wanted = min(3, len(cuttable_groups(_subject(ckpt), three.settings)))
    assert len(cuts_three) >= wanted and target_three >= target_one
    assert len(cuts_one) < wanted  # this setup: the first step that fitted left too few, so it was halved further
    assert target_three > target_one
    current_us = three.last["estimated_ms"] * 1000
    previous = current_us - 2 * (current_us - target_three)  # the step before the last halving
    assert len(_candidates(three, _subject(ckpt), previous)) < wanted


def test_runs_from_before_min_proposals_resume_with_one():
    from mobiledepth.prune.netadapt import PruneSettings

    saved = PruneSettings(model=None, checkpoint="c.pt", target_ms=1.0, data="d").to_record()
    del saved["min_proposals"]
    assert PruneSettings.from_record(saved).min_proposals == 1
    assert PruneSettings.from_record({**saved, "min_proposals": 3}).min_proposals == 3


def test_one_step_records_the_winner_and_drops_proposal_weights(setup, tmp_path):
    from mobiledepth.prune.netadapt import plan_cuts, start, step

    root, ckpt, spec = setup
    run = start(settings(root, ckpt, 0.75 * _estimate_ms(root, spec)), out=tmp_path / "run")
    lut_target_us, cuts = plan_cuts(run, _subject(ckpt), 1)
    entry = step(run)
    assert json.loads((tmp_path / "run" / "prune.json").read_text())["iterations"][1] == entry
    assert entry["target_ms"] == pytest.approx(lut_target_us / 1000)
    assert sorted((p["group"], p["width"]) for p in entry["proposals"]) == sorted((g, w) for g, w, _ in cuts)
    assert entry["whdr"] == min(p["whdr"] for p in entry["proposals"] if p["ok"])
    assert (tmp_path / "run" / entry["checkpoint"]).is_file()
    proposal_dirs = list((tmp_path / "run" / "iter_001" / "proposals").iterdir())
    assert len(proposal_dirs) == len(cuts)
    assert all(sorted(p.name for p in d.iterdir()) == ["result.json"] for d in proposal_dirs)


# ----------------------------------------------------------------------------- measured decisions (fake timing)
def _fake_timing(monkeypatch, root, final_slowdowns):
    """Measurements without exports: ratio = LUT estimate / start estimate (+ a slowdown for the first
    final measurements), a ±0.01 interval, the reference at 10 ms; every call logged."""
    from types import SimpleNamespace

    from mobiledepth.prune import netadapt
    from mobiledepth.prune.lut import load_table

    table = load_table(root / "lut.json")
    calls = []
    slowdowns = list(final_slowdowns)

    def export(subject, ckpt, s, out):
        out.mkdir(parents=True, exist_ok=True)
        return out / "model.tflite", out

    def measure(subject, ckpt, s, out_dir, reference):
        est0 = table.estimate(s_spec[0]).total_ms
        ratio = subject.estimate(table).total_ms / est0
        if out_dir.parent.name == "final" and slowdowns:
            ratio += slowdowns.pop(0)
        target = netadapt.session_target_ratio(s, 10.0)
        calls.append((out_dir.parent.name, ratio, target))
        return {"measured_ms": ratio * 10.0, "run_dir": str(out_dir), "tflite": str(out_dir / "model.tflite"),
                "measured": {"ratio": ratio, "low": ratio - 0.01, "high": ratio + 0.01, "rounds": 20,
                             "reference_ms": 10.0, "target_ratio": target, "met": ratio + 0.01 <= target}}

    s_spec = []
    monkeypatch.setattr(netadapt, "_export", export)
    monkeypatch.setattr(netadapt, "_measure_reference", lambda tflite, s: 10.0)
    monkeypatch.setattr(netadapt, "_measure", measure)
    monkeypatch.setattr(netadapt, "_bench_record", lambda export_dir, s: None)
    monkeypatch.setattr(netadapt, "_evaluate_export", lambda export_dir, s: 0.5)
    artifact = SimpleNamespace(tflite_artifact=lambda: {"sha256": "0" * 64}, model={"params": 1})
    monkeypatch.setattr(netadapt, "read_export_record", lambda run_dir: artifact)
    return calls, s_spec


def test_target_ratio_met_at_the_upper_bound_and_a_slow_final_model_keeps_netadapt_going(setup, tmp_path, monkeypatch):
    from mobiledepth.prune.netadapt import prune

    root, ckpt, spec = setup
    calls, s_spec = _fake_timing(monkeypatch, root, final_slowdowns=[0.2])
    s_spec.append(spec)
    result = prune(settings(root, ckpt, None, target_ratio=0.8, measure=True), out=tmp_path / "run", store=False)
    record, final = result.record, result.record["final"]
    assert record["target"]["ratio"] == 0.8 and record["target_ms"] == pytest.approx(8.0)  # 0.8 x the 10 ms reference
    assert record["iterations"][0]["reference_tflite"] == "iter_000/export/model.tflite"
    assert final["measured"]["met"] and final["measured"]["high"] <= 0.8
    remeasured = [it for it in record["iterations"] if it.get("remeasured") == "final"]
    assert len(remeasured) == 1 and not remeasured[0]["measured"]["met"]  # the slow final model's interval ...
    assert record["iterations"][-1]["iteration"] > remeasured[0]["iteration"]  # ... sent NetAdapt on cutting
    assert [c[0] for c in calls].count("final") == 2
    for it in record["iterations"][1:]:
        if it.get("measured") and it is not remeasured[0] and it is not record["iterations"][-1]:
            assert it["measured"]["high"] > 0.8  # only the last iteration was measured under the target


def test_target_ms_is_converted_through_the_reference_and_a_miss_says_by_how_much(setup, tmp_path, monkeypatch):
    from mobiledepth.errors import StageFailed
    from mobiledepth.prune.netadapt import prune

    root, ckpt, spec = setup
    calls, s_spec = _fake_timing(monkeypatch, root, final_slowdowns=[5.0] * 50)  # the final model never gets fast
    s_spec.append(spec)
    with pytest.raises(StageFailed, match=r"short by|above the target"):
        prune(settings(root, ckpt, 8.5, measure=True, max_iterations=30), out=tmp_path / "run", store=False)
    assert all(target == pytest.approx(0.85) for _, _, target in calls)  # 8.5 ms / the 10 ms reference


# ----------------------------------------------------------------------------- any model (module:factory)
def _own_settings(root, tmp, ckpt, **kw):
    return settings(root, ckpt, None, model="own_prunable:make", lut=str(tmp / "lut.json"), **kw)


def test_netadapt_on_a_factory_model(own_factory):
    from mobiledepth.arch.checkpoint import read_checkpoint
    from mobiledepth.arch.resolve import resolve_model
    from mobiledepth.prune.lut import load_table
    from mobiledepth.prune.netadapt import prune
    from mobiledepth.prune.subject import open_subject

    root, tmp, ckpt = own_factory
    result = prune(_own_settings(root, tmp, ckpt, target_ratio=0.7), out=tmp / "run", store=tmp / "store.sqlite")
    record = result.record
    assert record["model"]["factory"] == "own_prunable:make" and record["status"] == "done"
    assert record["store"]["records"] == 1  # the trajectory (nothing was exported: measure off)
    first, last = record["iterations"][0], record["iterations"][-1]
    assert first["widths"] == {"stem.0": 32, "down.0": 64, "fuse.0": 32, "depth": 1, "head": 1}
    assert len(record["iterations"]) > 1 and last["estimated_ms"] <= 0.7 * first["estimated_ms"]
    for it in record["iterations"][1:]:
        assert {p["group"] for p in it["proposals"]} <= {"stem.0", "down.0", "fuse.0"}
        assert all(p["width"] % 8 == 0 for p in it["proposals"])
    meta = read_checkpoint(result.final_checkpoint)["meta"]
    assert meta["factory"] == "own_prunable:make" and meta["widths"] == last["widths"]  # data: factory + widths
    loaded = resolve_model("own_prunable:make", result.final_checkpoint)  # factory() -> rebuild -> weights
    assert loaded.checkpoint_meta()["widths"] == last["widths"]
    table = load_table(tmp / "lut.json")
    again = open_subject("own_prunable:make", result.final_checkpoint).estimate(table).total_ms
    assert again == pytest.approx(last["estimated_ms"])


def test_factory_candidates_bisect_to_the_widest_width_that_meets_the_target(own_factory):
    from mobiledepth.prune.lut import load_table
    from mobiledepth.prune.netadapt import candidate_width, widest_meeting
    from mobiledepth.prune.subject import open_subject

    root, tmp, ckpt = own_factory
    subject, table = open_subject("own_prunable:make", ckpt), load_table(tmp / "lut.json")
    group = next(g for g in subject.groups() if g.name == "down.0")
    full = subject.estimate(table).total_us
    estimates = {w: subject.estimate(table, {"down.0": w}).total_us for w in range(56, 7, -8)}
    assert list(estimates.values()) == sorted(estimates.values(), reverse=True)  # narrower is faster
    target = (estimates[40] + estimates[32]) / 2  # 40 misses, 32 meets
    assert candidate_width(table, subject, group, target, 8, 8, None) == (32, pytest.approx(estimates[32]))
    assert candidate_width(table, subject, group, estimates[8] - 1, 8, 8, None) is None
    assert estimates[56] < full
    calls = []
    assert widest_meeting([56, 48, 40, 32, 24, 16, 8], lambda w: calls.append(w) or w, 30) == (24, 24)
    assert len(calls) <= 3  # halving, not every width


def test_a_factory_run_resumes_only_with_its_factory_given_again(own_factory):
    from mobiledepth.prune.netadapt import resume

    root, tmp, ckpt = own_factory
    saved = _stopped_after_iteration_1(_own_settings(root, tmp, ckpt, target_ratio=0.7), tmp / "stopped")
    assert saved["status"] == "running" and saved["settings"]["model"] == "own_prunable:make"
    with pytest.raises(UserError, match="prunes the factory own_prunable:make, which a file may not run"):
        resume(tmp / "stopped", store=False)
    with pytest.raises(UserError, match="--model own_prunable:make to confirm"):
        resume(tmp / "stopped", store=False, model="own_prunable:make_other")
    result = resume(tmp / "stopped", store=False, model="own_prunable:make")
    assert result.record["status"] == "done" and result.record["iterations"][:2] == saved["iterations"]
