"""`mobiledepth train --qat`: PT2E quantisation-aware fine-tuning of a trained checkpoint, its bad inputs,
and the export of its int8 program through litert-torch (mdepth-tiny, 64x64, a few steps)."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("torchao")
pytest.importorskip("litert_torch")

slow = pytest.mark.slow  # a trained fixture + QAT (~40 s) and a litert-torch export (~1-2 min)

FAST = ["--input-size", "64x64", "--batch-size", "4", "--threads", "1"]


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mobiledepth", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory):
    """mdepth-tiny trained a few steps (a real trained checkpoint of this repository's trainer)."""
    from mobiledepth.train.trainer import train

    out = tmp_path_factory.mktemp("qat") / "fp32"
    train(data=str(synth_root), out=str(out), model="mdepth-tiny", input_size=[64, 64], batch_size=4, max_steps=6,
          threads=1, **{"optimizer.lr": 1e-3, "data.val_limit": 6})
    return out / "model.pt"


@pytest.fixture(scope="module")
def qat_run(trained, synth_root, tmp_path_factory):
    """`train --qat` through the real CLI: 6 steps, observers calibrated on 8 images."""
    out = tmp_path_factory.mktemp("qat") / "qat"
    done = _cli("train", "--qat", "--model", trained, "--data", synth_root, "--out", out, "--steps", "6",
                "--lr", "1e-4", *FAST, "--config", _config(tmp_path_factory, min_images=8))
    assert done.returncode == 0, done.stderr
    return out


def _config(factory, **qat):
    path = factory.mktemp("cfg") / "qat.yaml"
    path.write_text(json.dumps({"qat": qat, "data": {"val_limit": 6}}))  # JSON is YAML
    return path


@slow
def test_qat_checkpoint_holds_parent_weights_and_program(qat_run, trained):
    import torch

    from mobiledepth.arch.checkpoint import read_checkpoint, read_qat

    data = read_checkpoint(qat_run / "model.pt")
    qat, program = read_qat(data, "model.pt")
    parent = read_checkpoint(trained)
    assert qat["input_size"] == [64, 64] and qat["steps"] == 6 and qat["rewrites"] == "phase_split_upsampling"
    assert qat["val_whdr_fp32"] is not None and qat["val_whdr_qat"] is not None
    assert all(torch.equal(parent["state_dict"][k], v) for k, v in data["state_dict"].items())  # fp32 = the parent
    assert len(program) > 10_000
    record = json.loads((qat_run / "train.json").read_text())
    assert record["kind"] == "train" and record["qat"]["parent_sha256"] == qat["parent_sha256"]
    # the program is the quantised graph: quantise / dequantise ops, and it runs
    import io

    module = torch.export.load(io.BytesIO(program)).module()
    assert any("quantize_per_tensor" in str(n.target) for n in module.graph.nodes)
    assert module(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)


@slow
def test_export_int8_from_qat_is_full_integer(qat_run, tmp_path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from mobiledepth.export import export_model

    result = export_model(checkpoint=str(qat_run / "model.pt"), input_size=(64, 64), precisions="fp32,int8",
                          out=tmp_path / "x", converter="litert-torch", store=False, parity_images=2)
    record = result.record
    assert record["qat"]["format"] == "mobiledepth-qat/1"
    # the int8 ranges were trained: nothing was calibrated, so no calibration warning
    assert record["calibration"].startswith("none") and not any("calibrated on" in w for w in result.warnings)
    int8 = next(a for a in record["artifacts"] if a["precision"] == "int8")
    interpreter = Interpreter(model_path=str(tmp_path / "x" / int8["path"]),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    convs = [d for d in interpreter._get_ops_details() if d["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    assert convs and all(details[op["inputs"][1]]["dtype"].__name__ == "int8" for op in convs)  # int8 weights
    # the export says so itself: no float op between QUANTIZE / DEQUANTIZE, and no warning about it; the
    # ImageNet normalisation of the float input (SUB, MUL before the input QUANTIZE) is at the edge
    ops = int8["integer_ops"]
    assert ops["full_integer"] and ops["float_ops"] == {} and ops["dequantize_inside"] == ops["quantize_inside"] == 0
    assert ops["float_at_edges"] == {"MUL": 1, "SUB": 1}
    assert not any("not full-integer" in w for w in result.warnings)
    bars = record["int8_bars"]
    assert set(bars) == {"artifact", "latency_threads", "ordinal_agreement", "whdr_delta", "latency_ratio"}
    assert bars["latency_threads"] == 1
    assert bars["whdr_delta"]["whdr_fp32_tflite"] is not None  # the QAT checkpoint knows its held-out split
    assert bars["latency_ratio"]["value"] > 0


@slow
def test_export_qat_at_another_size_is_one_line(qat_run, tmp_path):
    done = _cli("export", "--checkpoint", qat_run / "model.pt", "--input-size", "96x96", "--precision", "int8",
                "--converter", "litert-torch", "--out", tmp_path / "y", "--no-store")
    assert done.returncode == 2 and done.stderr.count("error:") == 1 and "64x64" in done.stderr
    assert "Traceback" not in done.stderr


@slow
@pytest.mark.parametrize("case", ["zoo-name", "not-a-checkpoint", "already-qat", "other-model", "too-few-images"])
def test_bad_qat_input_is_one_line_exit_2(case, trained, qat_run, synth_root, tmp_path):
    import torch

    from mobiledepth.arch.checkpoint import read_checkpoint

    model, extra, expect = trained, [], ""
    if case == "zoo-name":
        model, expect = "mdepth-tiny", "not one"
    elif case == "not-a-checkpoint":
        model, expect = tmp_path / "junk.pt", "cannot be loaded safely"
        model.write_bytes(b"not a checkpoint")
    elif case == "already-qat":
        model, expect = qat_run / "model.pt", "already a quantisation-aware"
    elif case == "other-model":  # the weights of mdepth-tiny under the paper model's spec
        data = read_checkpoint(trained)
        data["spec"] = "mdepth-mnv2-fbnet"
        model, expect = tmp_path / "other.pt", "does not fit"
        torch.save(data, model)
    else:
        extra, expect = ["--config", tmp_path / "c.yaml"], "at least 64 training images"
        (tmp_path / "c.yaml").write_text("qat: {min_images: 64}\n")
    done = _cli("train", "--qat", "--model", model, "--data", synth_root, "--out", tmp_path / "run", "--steps", "2",
                *FAST, *extra)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("error:") == 1 and expect in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "model.pt").exists()


@pytest.mark.parametrize("model", ["mdepth-tiny", "mdepth-mnv2-fbnet"])
def test_qat_graph_before_quantisation_is_the_model(model):
    """The captured, BatchNorm-folded graph that QAT fake-quantises computes what the model computes. The
    phase-split rewrite shares each projection conv among four phases; folding BatchNorm into that shared
    weight once per phase (torchao's ``_fuse_conv_bn_`` alone) put the paper model 0.34 of its range off."""
    import re

    import torch

    from mobiledepth.arch import build_model
    from mobiledepth.arch.init import calibrate_batchnorm
    from mobiledepth.export.calibration import generated_images
    from mobiledepth.export.rewrites import phase_split_upsampling
    from mobiledepth.export.source import deploy_module
    from mobiledepth.train.qat import prepare_graph

    torch.manual_seed(0)
    images = torch.from_numpy(generated_images(2, (64, 64)))
    net = build_model(model, with_heads=False)
    calibrate_batchnorm(net, images)
    net = deploy_module(net.eval())
    prepared = prepare_graph(net, (64, 64), phase_split_upsampling)
    prepared.apply(lambda m: m.disable_fake_quant() if hasattr(m, "disable_fake_quant") else None)
    untied = sum(1 for name, _ in prepared.named_parameters() if re.search(r"_untied_\d+$", name))  # not "_bias"
    assert untied == 3 * phase_split_upsampling(net)[1] > 0  # every phase but the first gets its own copy
    with torch.no_grad():
        expected, got = net(images), prepared(images)
    # fp32 rounding of the fold on random weights: ~1e-4 of the range; the double fold was 0.34
    assert float((got - expected).abs().max() / (expected.max() - expected.min())) < 1e-3
