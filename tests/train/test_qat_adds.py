"""QAT fake-quantises every residual add (issue 16): litert-torch's add annotator finds adds through
``source_fn_stack`` metadata that the non-strict ``torch.export`` capture leaves out, so without
``annotate_residual_adds`` those adds were fine-tuned in float and deployed as float ADDs between
DEQUANTIZE / QUANTIZE."""

import pytest

pytest.importorskip("torchao")
pytest.importorskip("litert_torch")

import torch  # noqa: E402


class TwoResiduals(torch.nn.Module):
    """Two residual adds in a row (the second's output is the model's output) and one add of a parameter."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.first = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.second = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.offset = torch.nn.Parameter(torch.zeros(1, 4, 1, 1))

    def forward(self, x):
        y = self.stem(x) + self.offset
        y = y + self.first(y)
        return y + self.second(y)


def _adds(prepared):
    return [node for node in prepared.graph.nodes
            if node.op == "call_function" and node.target == torch.ops.aten.add.Tensor]


def _fake_quantised(node) -> bool:
    return node.op == "call_module" and node.target.startswith("activation_post_process")


def test_every_residual_add_is_fake_quantised_with_the_add_qspecs():
    from mobiledepth.train.qat import prepare_graph

    prepared = prepare_graph(TwoResiduals(), (16, 16))
    adds = _adds(prepared)
    residual = [node for node in adds if all(getattr(arg, "op", None) != "get_attr" for arg in node.args)]
    assert len(residual) == 2
    for node in residual:
        assert node.meta["quantization_annotation"]._annotated
        assert all(_fake_quantised(arg) for arg in node.args)  # int8 inputs, as the deployed ADD reads them
        assert any(_fake_quantised(user) for user in node.users)  # and an int8 output
        for user in node.users:
            fake = prepared.get_submodule(user.target)
            assert (fake.quant_min, fake.quant_max) == (-128, 127)  # the config's int8 activations


def test_an_add_of_a_parameter_is_left_to_the_quantizer():
    from mobiledepth.train.qat import prepare_graph

    prepared = prepare_graph(TwoResiduals(), (16, 16))
    constant = [node for node in _adds(prepared) if any(getattr(arg, "op", None) == "get_attr" for arg in node.args)]
    assert len(constant) == 1 and "quantization_annotation" not in constant[0].meta
