"""`train --qat` of your own model (``--model module:factory --checkpoint C``, issue 16's BasicUNet row) and the
graph it fake-quantises: dropout that torchao would turn into p = 0.5 in training mode is taken out."""

import json

import pytest
import torch

pytest.importorskip("torchao")
pytest.importorskip("litert_torch")

FACTORY = '''
import torch

class Net(torch.nn.Module):
    """Conv, BatchNorm, ReLU, a p = 0 dropout (as MONAI's BasicUNet has 18 of), conv."""
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                        torch.nn.ReLU(), torch.nn.Dropout(0.0), torch.nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, x):
        return self.body(x)

def make():
    model = Net()
    model.input_size = (64, 64)
    return model
'''


def _net():
    namespace = {}
    exec(compile(FACTORY, "factory", "exec"), namespace)  # the test's own source, not a user's file
    torch.manual_seed(0)
    return namespace["make"]().eval()


def test_qat_graph_in_training_mode_keeps_no_dropout():
    """Before the fix torchao's train-mode switch made every dropout p = 0.5: two forward passes of the
    same batch differed and the output was off by its whole range."""
    from torchao.quantization.pt2e import move_exported_model_to_train

    from mobiledepth.train.qat import prepare_graph

    net = _net()
    prepared = prepare_graph(net, (64, 64))
    assert not any("dropout" in str(node.target) for node in prepared.graph.nodes)
    prepared.apply(lambda m: m.disable_fake_quant() if hasattr(m, "disable_fake_quant") else None)
    move_exported_model_to_train(prepared)
    images = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        first, second, expected = prepared(images), prepared(images), net(images)
    assert torch.equal(first, second)
    assert float((first - expected).abs().max() / (expected.max() - expected.min())) < 1e-4  # BN folded exactly


@pytest.mark.slow  # a QAT run through the real CLI (~30 s)
def test_qat_of_a_factory_checkpoint_remembers_the_factory(user_module, synth_root, tmp_path):
    import subprocess
    import sys

    from mobiledepth.arch import save_checkpoint
    from mobiledepth.arch.checkpoint import read_checkpoint, read_qat

    user_module("qat_user_net", FACTORY)
    parent = save_checkpoint(tmp_path / "parent.pt", _net(), factory="qat_user_net:make", input_size=[64, 64])
    config = tmp_path / "qat.yaml"
    config.write_text(json.dumps({"qat": {"min_images": 8}, "data": {"val_limit": 6}}))
    done = subprocess.run([sys.executable, "-m", "mobiledepth", "train", "--qat", "--model", "qat_user_net:make",
                           "--checkpoint", str(parent), "--data", str(synth_root), "--out", str(tmp_path / "q"),
                           "--input-size", "64x64", "--batch-size", "4", "--threads", "1", "--steps", "2",
                           "--config", str(config)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = read_checkpoint(tmp_path / "q" / "model.pt")
    qat, _ = read_qat(data, "model.pt")
    assert data["meta"]["factory"] == "qat_user_net:make" and data["spec"] is None
    assert qat["steps"] == 2 and qat["parent_sha256"]
    assert json.loads((tmp_path / "q" / "train.json").read_text())["model"] == "qat_user_net:make"
