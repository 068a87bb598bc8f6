"""One progress-event shape: the event itself, and every stage speaking it."""

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from mobiledepth.progress import Progress

PACKAGE = Path(__file__).resolve().parents[1] / "mobiledepth"


def test_line_names_what_is_known():
    assert Progress("onnx", "done", seconds=1.234, detail="export to ONNX").line() == "onnx done 1.2 s export to ONNX"
    assert Progress("eval", "batch", done=8, total=40).line() == "eval batch 8/40"
    assert Progress("train", "step", done=3).line() == "train step 3"
    assert Progress("prune", "lut", info={"model": "m"}).line() == "prune lut"


def test_an_event_cannot_change():
    event = Progress("synth", "scene", done=1, total=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.done = 2


def test_every_progress_parameter_is_a_progress_fn():
    """No stage takes a callback of its own shape: each ``progress`` / ``notify`` parameter is a ProgressFn."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for arg in node.args.args + node.args.kwonlyargs:
                    if arg.arg in ("progress", "notify") and arg.annotation is not None:
                        found.append((f"{path.name}:{node.name}", ast.unparse(arg.annotation)))
    assert len(found) >= 10  # the stages (eval, export, lut, netadapt, train, synth) were all seen
    assert [f for f in found if f[1] not in ("ProgressFn", "ProgressFn | None")] == []


def test_synth_and_eval_count_up_to_their_totals(tmp_path):
    from mobiledepth.data.diw import load_dataset
    from mobiledepth.data.synth import generate
    from mobiledepth.evaluate.evaluate import evaluate_runtime

    scenes = []
    generate(tmp_path, 5, (32, 32), split="test", progress=scenes.append)
    assert [(e.stage, e.event, e.done, e.total) for e in scenes] == [("synth", "scene", i, 5) for i in range(1, 6)]

    batches = []
    data = load_dataset(tmp_path, split="test")
    evaluate_runtime(lambda images: images[:, :1], data, (32, 32), batch_size=2, progress=batches.append)
    assert [(e.stage, e.event, e.done, e.total) for e in batches] == [("eval", "batch", n, 5) for n in (2, 4, 5)]


def test_export_reports_each_step_start_and_end():
    """The export's step timer speaks Progress: start, then done with seconds (or failed)."""
    from mobiledepth.export.pipeline import _Stages

    events = []
    stages = _Stages(events.append)
    with stages("load", "build the model"):
        pass
    with pytest.raises(RuntimeError), stages("onnx", "export"):
        raise RuntimeError("boom")
    assert [(e.stage, e.event, e.detail) for e in events] == [
        ("load", "start", "build the model"), ("load", "done", "build the model"),
        ("onnx", "start", "export"), ("onnx", "failed", "export")]
    assert events[0].seconds is None and all(np.isfinite(e.seconds) for e in events[1::2])
