"""int8 that is full-integer with transposed convolutions (issue 16): the QAT graph phase-splits every
``nn.ConvTranspose2d`` (``mobiledepth.train.qat.PhaseSplitConvTranspose2d``: exact), so litert-torch's PT2E
path gives integer CONV_2D ops where it would keep a float TRANSPOSE_CONV; and the export reports which ops of an
int8 artifact stay float (``mobiledepth.export.tflite_passes.float_ops``)."""

from __future__ import annotations


import pytest
import torch

from mobiledepth.train.qat import PhaseSplitConvTranspose2d, phase_split_transposed_convs

SIZE = (32, 32)

# (kernel, stride, padding, output_padding), per dimension where two differ: U-Net x2 (2, 2, 0, 0), the usual
# "same" x2 (4, 2, 1, 0) and (3, 2, 1, 1), kernels smaller than the stride, strides that differ per axis
TRANSPOSED = [((2, 2), (2, 2), (0, 0), (0, 0)), ((4, 4), (2, 2), (1, 1), (0, 0)), ((3, 3), (2, 2), (1, 1), (1, 1)),
              ((1, 1), (3, 3), (0, 0), (2, 2)), ((5, 3), (3, 2), (2, 0), (1, 1)), ((3, 3), (1, 1), (1, 1), (0, 0))]


@pytest.mark.parametrize("kernel,stride,padding,output_padding", TRANSPOSED)
def test_phase_split_equals_the_transposed_conv(kernel, stride, padding, output_padding):
    torch.manual_seed(0)
    tconv = torch.nn.ConvTranspose2d(5, 4, kernel, stride=stride, padding=padding, output_padding=output_padding)
    x = torch.randn(2, 5, 7, 6)
    with torch.no_grad():
        expected, got = tconv(x), PhaseSplitConvTranspose2d(tconv)(x)
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) < 1e-5


def test_only_ungrouped_undilated_transposed_convs_are_split():
    model = torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 4, 2, stride=2),
                                torch.nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2),
                                torch.nn.ConvTranspose2d(4, 4, 3, dilation=2))
    rewritten, count = phase_split_transposed_convs(model)
    assert count == 1 and [type(m).__name__ for m in rewritten] == [
        "PhaseSplitConvTranspose2d", "ConvTranspose2d", "ConvTranspose2d"]
    assert isinstance(model[0], torch.nn.ConvTranspose2d)  # the original is untouched


class _UpNet(torch.nn.Module):
    """Down (conv, BatchNorm, LeakyReLU), up (ConvTranspose2d x2 as MONAI's UpSample 'deconv', LeakyReLU), head."""

    def __init__(self):
        super().__init__()
        self.down = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8),
                                        torch.nn.LeakyReLU(0.1))
        self.up = torch.nn.Sequential(torch.nn.ConvTranspose2d(8, 8, 2, stride=2), torch.nn.LeakyReLU(0.1))
        self.head = torch.nn.Conv2d(8, 1, 1)

    def forward(self, x):
        return self.head(self.up(self.down(x)))


def test_qat_graph_splits_transposed_convs_and_computes_the_model():
    """What QAT fake-quantises (and what the int8 artifact runs): no conv_transpose2d left, same output."""
    pytest.importorskip("torchao")
    from mobiledepth.train.qat import prepare_graph

    torch.manual_seed(0)
    net = _UpNet()
    with torch.no_grad():
        net(torch.rand(8, 3, *SIZE))  # BatchNorm statistics that are not the identity
    net.eval()
    prepared = prepare_graph(net, SIZE)
    prepared.apply(lambda m: m.disable_fake_quant() if hasattr(m, "disable_fake_quant") else None)
    assert not any("conv_transpose" in str(node.target) for node in prepared.graph.nodes)
    images = torch.rand(2, 3, *SIZE)
    with torch.no_grad():
        expected, got = net(images), prepared(images)
    assert float((got - expected).abs().max() / (expected.max() - expected.min())) < 1e-4


def _qat_int8(tmp_path, monkeypatch, split: bool):
    """A few QAT steps of ``_UpNet`` at 32x32 (RMSE to the fp32 model), its program converted by the export's
    own child function; ``split=False`` switches the rewrite off (what the export did before)."""
    pytest.importorskip("torchao")
    pytest.importorskip("litert_torch")
    from mobiledepth.export import litert_route
    from mobiledepth.train import qat

    if not split:
        monkeypatch.setattr(qat, "phase_split_transposed_convs", lambda model: (model, 0))
    torch.manual_seed(0)
    fp32 = _UpNet().eval()
    prepared = qat.prepare_graph(fp32, SIZE)
    images = torch.rand(8, 3, *SIZE)
    with torch.no_grad():
        prepared(images)  # calibrate the observers
    optimizer = torch.optim.Adam(prepared.parameters(), lr=1e-4)
    for _ in range(3):
        loss = torch.sqrt(torch.mean((prepared(images) - fp32(images).detach()) ** 2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    program = tmp_path / "qat_int8.pt2"
    program.write_bytes(qat.quantised_program(prepared, SIZE).numpy().tobytes())
    out = tmp_path / "model_int8.tflite"
    litert_route._convert_qat_int8(str(program), out)
    return out


def _weight_types(path, op_name: str) -> list[str]:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    code = getattr(schema.BuiltinOperator, op_name)
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    graph = model.subgraphs[0]
    return [names[graph.tensors[op.inputs[1]].type] for op in graph.operators
            if max(model.operatorCodes[op.opcodeIndex].builtinCode,
                   model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) == code]


@pytest.mark.slow  # two QAT programs converted by litert-torch (~30 s on a loaded 2-core machine)
def test_qat_int8_of_a_transposed_conv_is_full_integer(tmp_path, monkeypatch):
    """With the rewrite: no TRANSPOSE_CONV, every CONV_2D (the phase conv included) has int8 weights, no float op.
    Without it (the converter's own behaviour), the float TRANSPOSE_CONV is what ``float_ops`` reports."""
    from mobiledepth.export.tflite_passes import float_ops

    path = _qat_int8(tmp_path, monkeypatch, split=True)
    report = float_ops(path.read_bytes())
    assert report == {"full_integer": True, "float_ops": {}, "dequantize_inside": 0, "quantize_inside": 0,
                      "float_at_edges": {}}
    assert _weight_types(path, "TRANSPOSE_CONV") == []
    assert _weight_types(path, "CONV_2D") == ["INT8"] * 3

    (tmp_path / "before").mkdir()
    before = _qat_int8(tmp_path / "before", monkeypatch, split=False)
    report = float_ops(before.read_bytes())
    assert report["full_integer"] is False and report["float_ops"] == {"LEAKY_RELU": 2, "TRANSPOSE_CONV": 1}
    assert report["dequantize_inside"] >= 1 and _weight_types(before, "TRANSPOSE_CONV") == ["FLOAT32"]


def test_integer_warning_names_the_float_ops():
    from mobiledepth.export.parity import integer_warning

    assert integer_warning("m.tflite", {"full_integer": True, "float_ops": {}, "dequantize_inside": 0,
                                        "quantize_inside": 0}) is None
    line = integer_warning("m.tflite", {"full_integer": False, "float_ops": {"LEAKY_RELU": 18},
                                        "dequantize_inside": 18, "quantize_inside": 22})
    assert "m.tflite is not full-integer" in line and "18 LEAKY_RELU" in line and "\n" not in line
