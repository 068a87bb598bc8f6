"""The model zoo: the paper's architecture, FastDepth, specs, checkpoints."""

from __future__ import annotations

import pytest
import torch

from mobiledepth.arch import (build_model, count_macs, count_parameters, list_models, load_checkpoint,
                              resolve_spec, save_checkpoint)
from mobiledepth.arch.blocks import IRFBlock, channel_shuffle
from mobiledepth.errors import UserError

PAPER = "mdepth-mnv2-fbnet"


@pytest.fixture(scope="module")
def paper_model():
    return build_model(PAPER).eval()


def test_paper_model_has_paper_parameter_count(paper_model):
    params = count_parameters(paper_model)
    assert abs(params - 2.6e6) / 2.6e6 <= 0.05, params
    # MobileNetV2 features[0:18], as torchvision counts them
    assert sum(p.numel() for p in paper_model.encoder.parameters()) == 1_811_712


def test_encoder_taps_match_torchvision_indices(paper_model):
    encoder = paper_model.encoder
    assert encoder.tap_indices == [1, 3, 6, 13, 17]
    assert encoder.tap_channels == [16, 24, 32, 96, 320]
    taps = encoder(torch.zeros(1, 3, 64, 96))
    assert [tuple(t.shape[2:]) for t in taps] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]


@pytest.mark.parametrize("size", [(256, 256), (224, 448)])
def test_output_is_one_channel_at_input_resolution(paper_model, size):
    with torch.no_grad():
        assert paper_model(torch.rand(1, 3, *size)).shape == (1, 1, *size)


def test_forward_train_returns_heads_and_features(paper_model):
    with torch.no_grad():
        pred = paper_model.forward_train(torch.rand(2, 3, 64, 64))
        plain = paper_model(torch.rand(2, 3, 64, 64))
    assert pred.depth.shape == plain.shape == (2, 1, 64, 64)
    # heads after decoder stages 2 (/8) and 3 (/4)
    assert [tuple(t.shape) for t in pred.intermediates] == [(2, 1, 8, 8), (2, 1, 16, 16)]
    assert pred.features.shape == (2, 32, 32, 32)


def test_forward_does_not_touch_heads(paper_model):
    calls = []
    hooks = [h.register_forward_hook(lambda *a: calls.append(1)) for h in paper_model.heads]
    with torch.no_grad():
        paper_model(torch.rand(1, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    assert calls == []


def test_strip_heads_removes_their_weights():
    model = build_model("mdepth-tiny")
    assert any(k.startswith("heads.") for k in model.state_dict())
    model.strip_heads()
    assert not any(k.startswith("heads.") for k in model.state_dict())
    assert count_parameters(model, include_heads=True) == count_parameters(model)


def test_fastdepth_baseline_shapes_and_size():
    model = build_model("fastdepth").eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    assert model.forward_train(torch.rand(1, 3, 64, 64)).intermediates == []
    assert 3.8e6 < count_parameters(model) < 4.1e6  # FastDepth is ~3.9 M


def test_macs_come_from_the_flop_counter_and_match_a_conv_by_hand():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False))
    assert count_macs(conv, (16, 16)) == 3 * 8 * 9 * 16 * 16
    model = build_model(PAPER)
    assert count_macs(model, (512, 512)) == pytest.approx(4 * count_macs(model, (256, 256)), rel=0.01)


def test_irf_block_upsamples_and_shuffles():
    block = IRFBlock(8, 12, hidden=16, kernel=5, stride=-2, groups=2)
    assert block(torch.rand(1, 8, 4, 4)).shape == (1, 12, 8, 8)
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_registry_lists_and_filters():
    names = list_models()
    assert {PAPER, "fastdepth", "mdepth-tiny"} <= set(names)
    assert list_models("*fbnet*") == [n for n in names if "fbnet" in n]


def test_unknown_model_suggests_the_closest():
    with pytest.raises(UserError, match="did you mean 'mdepth-mnv2-fbnet'"):
        resolve_spec("mdepth-mnv2-fbnte")


def test_per_layer_widths_make_a_pruned_spec(tmp_path):
    spec = resolve_spec("mdepth-tiny")
    spec["name"] = "tiny-pruned"
    spec["architecture"]["encoder"]["hidden"] = [8, 8, 16, 24, 24, 40, 48]
    spec["architecture"]["decoder"]["stages"][0]["hidden"] = 24
    model = build_model(spec)
    assert model.encoder.features[2].conv[0][0].out_channels == 8
    assert model.decoder.stages[0].expand[0].out_channels == 24
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    bad = resolve_spec("mdepth-tiny")
    bad["architecture"]["encoder"]["hidden"] = [8, 8]
    with pytest.raises(UserError, match="encoder.hidden has 2 widths"):
        build_model(bad)


def test_checkpoint_round_trip_is_exact(tmp_path):
    model = build_model("mdepth-tiny")
    path = save_checkpoint(tmp_path / "m.pt", model, note="x")
    loaded, spec, meta = load_checkpoint(path)
    assert spec["name"] == "mdepth-tiny" and meta == {"note": "x"}
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_checkpoint_for_another_spec_names_the_mismatching_tensors(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", build_model("mdepth-tiny"))
    with pytest.raises(UserError, match=r"does not fit the model .*shape mismatch: encoder\.features\.0\.0\.weight"):
        load_checkpoint(path, spec=PAPER)


def test_corrupt_or_unsafe_checkpoint_is_a_clear_error(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be loaded safely"):
        load_checkpoint(corrupt)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"state_dict": {}, "spec": None, "evil": object()}, unsafe)
    with pytest.raises(UserError, match="cannot be loaded safely"):
        load_checkpoint(unsafe)
