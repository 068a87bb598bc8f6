"""A baseline's reference network (``gate.reference``): the baseline model with its weights refilled, kept in
the baseline, timed against the new model round by round. Real files, a real interpreter; fake timers where the
test is about the decision under a load that slows large models more than the calibration model."""

from __future__ import annotations

import base64
import json
import lzma
import re

import numpy as np
import pytest

from mobiledepth import gate
from mobiledepth.errors import UserError
from mobiledepth.gate.baseline import reference_problem
from mobiledepth.gate.reference import make_reference, reference_model, weight_spans
from tests.report.test_check_gate import NoisyTimer


def _graph(data: bytes) -> dict:
    """Everything about a flatbuffer that decides what runs: ops with their tensors, tensor shapes and types."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    subgraph = model.subgraphs[0]
    return {"ops": [(model.operatorCodes[op.opcodeIndex].builtinCode, list(op.inputs), list(op.outputs))
                    for op in subgraph.operators],
            "tensors": [(list(t.shape), t.type, t.buffer) for t in subgraph.tensors]}


@pytest.fixture(scope="module")
def host():
    return pytest.importorskip("android_bench.host")


def test_the_reference_is_the_same_graph_with_other_weights(host, tiny_tflites, tmp_path):
    original = tiny_tflites["wide"].read_bytes()
    section = make_reference(tiny_tflites["wide"])
    rebuilt = reference_model(section, tmp_path, "b.json").read_bytes()
    assert len(rebuilt) == len(original) and _graph(rebuilt) == _graph(original)
    spans = weight_spans(original)
    assert spans and len(section["fills"]) == len(spans)  # both conv kernels (and no shape tensor)
    for offset, size, dtype in spans:
        old, new = (np.frombuffer(b[offset:offset + size], dtype) for b in (original, rebuilt))
        assert not np.array_equal(old, new)
        assert 0.5 < new.std() / old.std() < 2  # refilled at the weights' scale
    changed = np.flatnonzero(np.frombuffer(original, np.uint8) != np.frombuffer(rebuilt, np.uint8))
    assert all(any(o <= i < o + s for o, s, _ in spans) for i in changed)  # only the weights differ
    assert len(base64.b64decode(section["data"])) < len(original) / 2  # weights are not stored
    assert reference_model(section, tmp_path / "..", "b.json").read_bytes() == rebuilt  # deterministic


def test_the_reference_runs_like_the_model(host, tiny_tflites, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    network = reference_model(make_reference(tiny_tflites["narrow"]), tmp_path, "b.json")
    outputs = []
    for path in (tiny_tflites["narrow"], network):
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
        image = interpreter.get_input_details()[0]
        interpreter.set_tensor(image["index"], np.random.default_rng(0).random(image["shape"], dtype=np.float32))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    assert outputs[0].shape == outputs[1].shape and np.isfinite(outputs[1]).all()
    assert not np.allclose(outputs[0], outputs[1])  # other weights, other depth: it is not the model


def _damage(section: dict, how: str) -> dict:
    section = json.loads(json.dumps(section))
    if how == "base64":
        section["data"] = section["data"][:-8] + "!!!!!!!!"
    elif how == "xz":
        section["data"] = base64.b64encode(b"not xz at all").decode()
    elif how == "length":
        section["data"] = base64.b64encode(lzma.compress(b"\0" * 10)).decode()
    elif how == "sha256":
        section["fills"][0]["scale"] *= 2
    return section


@pytest.mark.parametrize("how, message", [("base64", "damaged"), ("xz", "damaged"), ("length", "10 bytes, recorded"),
                                          ("sha256", "sha256 differs")])
def test_a_damaged_reference_is_one_line_naming_the_fix(host, tiny_tflites, tmp_path, how, message):
    section = _damage(make_reference(tiny_tflites["narrow"]), how)
    with pytest.raises(UserError, match=f"{message}.*recreate it with --update-baseline") as caught:
        reference_model(section, tmp_path, "b.json")
    assert "\n" not in str(caught.value) and not (tmp_path / "reference.tflite").exists()


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(codec="zip"), "'reference.codec'"),
    (lambda s: s.pop("sha256"), "'reference.sha256'"),
    (lambda s: s["fills"].append({"offset": s["bytes"], "bytes": 4, "dtype": "float32", "scale": 1.0}), "outside"),
    (lambda s: s["fills"].append({"offset": 0, "bytes": 4, "dtype": "object", "scale": 1.0}), "unknown type"),
    (lambda s: s["fills"].append("x"), "'reference.fills' holds 'x'"),
])
def test_a_malformed_reference_section_is_named(host, tiny_tflites, change, message):
    section = make_reference(tiny_tflites["narrow"])
    assert reference_problem(section) is None
    change(section)
    assert message in reference_problem(section)


class Loaded:
    """Fake timers for real files: each file's quiet median (µs, by file name) times the machine's slowdown for
    it, which a test changes between making the baseline and checking (a busy machine)."""

    def __init__(self, medians: dict[str, float]):
        self.medians, self.slowdown, self.rng = medians, {}, np.random.default_rng(0)

    def __call__(self, path: str, threads: int) -> NoisyTimer:
        name = path.rsplit("/", 1)[-1]
        return NoisyTimer(self.medians[name] * self.slowdown.get(name, 1.0), self.rng, 0.03)


def _made(tiny_tflites, tmp_path, timers: Loaded):
    baseline = tmp_path / "b.json"
    gate.update_baseline(tiny_tflites["narrow"], baseline, runs=40, warmup=1, model_name="tiny", timer_factory=timers)
    return baseline


def test_a_busy_machine_that_slows_large_models_more_does_not_fail_the_gate(host, tiny_tflites, tmp_path):
    # the CI run that motivated the reference network: the model 1.9x, the 67 KB calibration model 1.45x
    timers = Loaded({"narrow.tflite": 30_000, "reference.tflite": 30_000, "calibration.tflite": 600})
    baseline = _made(tiny_tflites, tmp_path, timers)
    assert json.loads(baseline.read_text())["reference"]["model_ratio"] == pytest.approx(1, abs=0.05)
    timers.slowdown = {"narrow.tflite": 1.9, "reference.tflite": 1.9, "calibration.tflite": 1.45}
    check = gate.check_baseline(tiny_tflites["narrow"], baseline, model_name="tiny", tolerance=0.15,
                                timer_factory=timers)
    assert check.exit_code == 0 and check.comparison.ratio == pytest.approx(1, abs=0.05)
    assert float(re.search(r"runs ([\d.]+)x as long here", check.notes[0]).group(1)) == pytest.approx(1.9, abs=0.1)
    legacy = tmp_path / "legacy.json"
    data = json.loads(baseline.read_text())
    data.pop("reference")
    legacy.write_text(json.dumps(data))
    old_way = gate.check_baseline(tiny_tflites["narrow"], legacy, model_name="tiny", tolerance=0.15,
                                  timer_factory=timers)
    assert old_way.exit_code == 1 and old_way.comparison.ratio == pytest.approx(1.9 / 1.45, rel=0.05)
    assert "has no reference network" in old_way.warnings[-1]


def test_a_real_slowdown_against_the_reference_fails_and_the_recorded_ratio_scales_it(host, tiny_tflites, tmp_path):
    # the model ran 10 % slower than its reference network when the baseline was made: that is the yardstick
    timers = Loaded({"narrow.tflite": 11_000, "reference.tflite": 10_000, "calibration.tflite": 600})
    baseline = _made(tiny_tflites, tmp_path, timers)
    same = gate.check_baseline(tiny_tflites["narrow"], baseline, model_name="tiny", timer_factory=timers)
    assert same.exit_code == 0 and same.comparison.ratio == pytest.approx(1, abs=0.03)
    timers.slowdown = {"narrow.tflite": 1.3}  # the new model is 30 % slower, the machine is as it was
    slower = gate.check_baseline(tiny_tflites["narrow"], baseline, model_name="tiny", timer_factory=timers)
    assert slower.exit_code == 1 and slower.comparison.ratio == pytest.approx(1.3, rel=0.05)
    assert slower.comparison.old_median_us == pytest.approx(11_000, rel=0.05)  # the baseline model, as it runs now


def test_a_baseline_with_a_damaged_reference_is_refused_before_timing(host, tiny_tflites, tmp_path):
    timers = Loaded({"narrow.tflite": 1000, "reference.tflite": 1000, "calibration.tflite": 100})
    baseline = _made(tiny_tflites, tmp_path, timers)
    data = json.loads(baseline.read_text())
    data["reference"]["model_ratio"] = -1
    baseline.write_text(json.dumps(data))
    calls = []
    with pytest.raises(UserError, match="'reference.model_ratio' is -1"):
        gate.check_baseline(tiny_tflites["narrow"], baseline, model_name="tiny",
                            timer_factory=lambda p, t: calls.append(p) or timers(p, t))
    data["reference"]["model_ratio"] = 1.0
    data["reference"] = _damage(data["reference"], "sha256")
    baseline.write_text(json.dumps(data))
    with pytest.raises(UserError, match="sha256 differs"):
        gate.check_baseline(tiny_tflites["narrow"], baseline, model_name="tiny",
                            timer_factory=lambda p, t: calls.append(p) or timers(p, t))
    assert calls == []
