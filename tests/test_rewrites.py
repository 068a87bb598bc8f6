"""The phase-split upsampling rewrite computes exactly what the upsampling IRF block computes."""

from __future__ import annotations

import onnx
import pytest
import torch

from mobiledepth.arch import build_model
from mobiledepth.arch.blocks import IRFBlock
from mobiledepth.export.phases import PHASES, phase_radius, phase_taps
from mobiledepth.export.rewrites import DepthToSpaceDCR, PhaseSplitIRF, phase_split_upsampling
from mobiledepth.export.source import deploy_module


def _randomise_batchnorm(module: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1, generator=generator)
            m.running_var.uniform_(0.5, 2, generator=generator)
            m.weight.data.uniform_(0.5, 2, generator=generator)
            m.bias.data.uniform_(-1, 1, generator=generator)


@pytest.mark.parametrize("kernel, radius", [(1, 0), (3, 1), (5, 1), (7, 2), (9, 2)])
def test_phase_radius(kernel, radius):
    assert phase_radius(kernel) == radius


def test_phase_taps_by_hand_for_3x3():
    # row phase 0 reads rows i-1 (tap -1) and i (taps 0, +1); row phase 1 reads i (taps -1, 0) and i+1 (tap +1)
    rows = {a: sorted({(row, src_row) for row, _, src_row, _ in phase_taps(3, (a, 0))}) for a in (0, 1)}
    assert rows == {0: [(0, 0), (1, 1), (1, 2)], 1: [(1, 0), (1, 1), (2, 2)]}
    assert all(len(phase_taps(5, phase)) == 25 for phase in PHASES)


@pytest.mark.parametrize("kernel, groups", [(3, 1), (5, 1), (7, 1), (3, 2)])
def test_phase_split_block_equals_the_upsampling_block(kernel, groups):
    torch.manual_seed(0)
    block = IRFBlock(16, 8, 48, kernel=kernel, stride=-2, groups=groups).eval()
    _randomise_batchnorm(block)
    x = torch.randn(2, 16, 7, 9)  # odd sizes: the borders of every phase are exercised
    with torch.no_grad():
        expected, got = block(x), PhaseSplitIRF(block)(x)
    assert got.shape == expected.shape == (2, 8, 14, 18)
    assert torch.allclose(got, expected, atol=1e-5)


def test_rewrite_keeps_the_model_and_its_output():
    model = build_model("mdepth-tiny").eval()
    model.strip_heads()
    _randomise_batchnorm(model)
    deployed = deploy_module(model)
    rewritten, count = phase_split_upsampling(deployed)
    assert count == 4
    assert not any(isinstance(m, IRFBlock) and m.upsample for m in rewritten.modules())
    assert sum(isinstance(m, IRFBlock) and m.upsample for m in deployed.modules()) == 4  # the original is untouched
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(rewritten(x), deployed(x), atol=1e-5)


def test_depth_to_space_exports_as_onnx_dcr(tmp_path):
    import onnxruntime as ort

    class Wrap(torch.nn.Module):
        def forward(self, x):
            return DepthToSpaceDCR.apply(x)

    x = torch.arange(2 * 8 * 3 * 5, dtype=torch.float32).reshape(2, 8, 3, 5)
    y = Wrap()(x)
    # output (c, 2i + a, 2j + b) comes from input channel (a * 2 + b) * C + c
    assert y[1, 1, 2 * 2 + 1, 2 * 4 + 0] == x[1, (1 * 2 + 0) * 2 + 1, 2, 4]
    path = str(tmp_path / "d2s.onnx")
    torch.onnx.export(Wrap(), x, path, opset_version=17, dynamo=False, input_names=["x"])
    [node] = onnx.load(path).graph.node
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert node.op_type == "DepthToSpace" and attributes == {"blocksize": 2, "mode": b"DCR"}
    assert (ort.InferenceSession(path).run(None, {"x": x.numpy()})[0] == y.numpy()).all()


def test_export_without_rewrites_keeps_the_resizes(tiny_export, tiny_checkpoint, tmp_path, test_images):
    import json

    from mobiledepth.cli import main
    from mobiledepth.export.runtimes import load_runtime

    plain = tmp_path / "plain"
    assert main(["export", "--model", "mdepth-tiny", "--checkpoint", str(tiny_checkpoint), "--precision", "fp32",
                 "--out", str(plain), "--no-rewrites", "--quiet", "--no-store"]) == 0
    record = json.loads((plain / "export.json").read_text())
    assert record["graph_rewrites"] == {"phase_split_upsampling": 0}
    ops = {a["path"]: a["ops"] for a in record["artifacts"] if a["format"] == "tflite"}["model_fp32.tflite"]
    assert ops["RESIZE_NEAREST_NEIGHBOR"] == 4 and "DEPTH_TO_SPACE" not in ops
    rewritten = load_runtime(tiny_export.run_dir / "model_fp32.tflite")(test_images)
    assert abs(load_runtime(plain / "model_fp32.tflite")(test_images) - rewritten).max() < 1e-4
