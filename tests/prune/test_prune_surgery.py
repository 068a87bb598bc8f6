"""Channel groups and surgery: tied groups shrink together, largest-L2 filters are kept,
zero pruning changes nothing, pruned models run and export."""

from __future__ import annotations

import pytest
import torch

from mobiledepth.arch import build_model, resolve_spec
from mobiledepth.errors import UserError
from mobiledepth.prune.groups import channel_groups, group_widths, set_group_widths, structure, tensor_layout
from mobiledepth.prune.surgery import channel_importance, keep_indices, prune_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model("mdepth-tiny").eval()
    return model, model.spec


def _groups(spec):
    return {g.name: g for g in channel_groups(spec)}


@pytest.mark.parametrize("name", ["mdepth-tiny", "mdepth-mnv2-fbnet"])
def test_layout_covers_every_weight_with_the_right_sizes(name):
    spec = resolve_spec(name)
    state = build_model(spec).state_dict()
    layout = tensor_layout(spec)
    sliced = [k for k in state if not k.endswith("num_batches_tracked")]
    assert sorted(layout) == sorted(sliced)
    for key, info in layout.items():
        for axis, segments in info["axes"].items():
            assert sum(size for _, size in segments) == state[key].shape[axis], key


def test_tied_groups(tiny):
    _, spec = tiny
    groups = _groups(spec)
    # tiny: stem (8) -> stage 0 (8, stride 1) is a residual add, so they are one group
    assert groups["enc.stem"].variables == ["enc.stem", "enc.stage0"]
    paper = _groups(resolve_spec("mdepth-mnv2-fbnet"))
    assert "block 2 project + residual add" in paper["enc.stage1"].members
    assert "skip tap into the decoder" in paper["enc.stage1"].members
    assert paper["enc.stem"].variables == ["enc.stem"]  # block 0 has no residual (32 -> 16)


def test_tied_group_shrinks_together(tiny):
    model, spec = tiny
    pruned, new_spec = prune_model(model, spec, {"enc.stage2": 8})
    enc = new_spec["architecture"]["encoder"]
    assert enc["stages"][2][1] == 8
    # stage 2 (a skip tap) also narrows the decoder's concat input and the next block's input
    blocks = pruned.encoder.features
    assert blocks[3].conv[2].weight.shape[0] == 8          # block 2 project out
    assert blocks[4].conv[0][0].weight.shape[1] == 8       # block 3 expand in
    assert pruned.decoder.stages[3].expand[0].weight.shape[1] == 8 + 8  # dec stage 3: 8 (out) + 8 (tap)
    x = torch.rand(2, 3, 64, 64)
    assert pruned(x).shape == (2, 1, 64, 64)


def test_stem_and_stage0_cut_as_one(tiny):
    model, spec = tiny
    wide = set_group_widths(spec, {"enc.stem": 16})  # a wider tiny variant so the tied group can shrink
    torch.manual_seed(1)
    big = build_model(wide).eval()
    pruned, new_spec = prune_model(big, wide, {"enc.stem": 8})
    enc = new_spec["architecture"]["encoder"]
    assert enc["stem"] == 8 and enc["stages"][0][1] == 8 and enc["hidden"][0] == 8
    assert pruned.encoder.features[0][0].weight.shape[0] == 8
    assert pruned.encoder.features[1].use_residual  # the residual add is still there
    assert pruned(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_zero_pruning_changes_nothing(tiny):
    model, spec = tiny
    same, same_spec = prune_model(model, spec, group_widths(spec))
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), same(x))
    assert group_widths(same_spec) == group_widths(spec)
    assert {k: v.shape for k, v in same.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_keeps_largest_l2_filters_hand_checked():
    spec = resolve_spec("mdepth-tiny")
    torch.manual_seed(2)
    model = build_model(spec).eval()
    # decoder stage 5's expanded width (32): its only producer is the expand conv; give filter k
    # a single non-zero weight so its L2 norm is known by hand
    stage = model.decoder.stages[4]
    norms = torch.tensor([5., 1., 9., 3., 7., 2., 8., 4., 6., 0.5, 10., 11., 0.1, 0.2, 0.3, 12.]
                         + [0.01 * (i + 1) for i in range(16)])
    with torch.no_grad():
        stage.expand[0].weight.zero_()
        stage.expand[0].weight[:, 0, 0, 0] = norms
    importance = channel_importance(model.state_dict(), spec, ["dec.stage4.hidden"])
    assert torch.allclose(importance, norms)
    kept = [0, 2, 4, 6, 8, 10, 11, 15]  # the 8 largest norms: 12, 11, 10, 9, 8, 7, 6, 5
    assert keep_indices(norms, 8).tolist() == kept
    pruned, _ = prune_model(model, spec, {"dec.stage4.hidden": 8})
    new, old = pruned.decoder.stages[4], stage
    assert torch.equal(new.expand[0].weight, old.expand[0].weight[kept])          # expand out
    assert torch.equal(new.expand[1].running_var, old.expand[1].running_var[kept])
    assert torch.equal(new.depthwise[0].weight, old.depthwise[0].weight[kept])    # depthwise
    assert torch.equal(new.depthwise[1].bias, old.depthwise[1].bias[kept])
    assert torch.equal(new.project[0].weight, old.project[0].weight[:, kept])     # project in
    assert torch.equal(new.project[1].weight, old.project[1].weight)              # untouched


def test_tied_group_importance_sums_producers():
    spec = resolve_spec("mdepth-tiny")
    model = build_model(spec).eval()
    state = model.state_dict()
    stem = state["encoder.features.0.0.weight"].reshape(8, -1).norm(dim=1)
    project = state["encoder.features.1.conv.1.weight"].reshape(8, -1).norm(dim=1)  # block 0 (t=1) project
    got = channel_importance(state, spec, ["enc.stem", "enc.stage0"])
    assert torch.allclose(got, stem + project)


def test_structure_changing_widths_are_rejected(tiny):
    model, spec = tiny
    # stage 3 (16) -> stage 4 (24, stride 1): making stage 4 16 wide would create a residual add
    assert structure(set_group_widths(spec, {"enc.stage4": 16})) != structure(spec)
    with pytest.raises(UserError, match="residual"):
        prune_model(model, spec, {"enc.stage4": 16})
    with pytest.raises(UserError, match="cannot keep"):
        prune_model(model, spec, {"enc.stage4": 32})
    with pytest.raises(UserError, match="unknown channel group"):
        prune_model(model, spec, {"enc.nope": 8})


def test_heads_follow_the_cut(tiny):
    model, spec = tiny
    pruned, _ = prune_model(model, spec, {"dec.stage1.out": 8})
    assert pruned.heads[0].weight.shape[1] == 8  # head after decoder stage 2
    out = pruned.forward_train(torch.rand(1, 3, 64, 64))
    assert [t.shape[1] for t in out.intermediates] == [1, 1]


def test_pruned_model_exports_to_onnx_and_matches(tiny, tmp_path):
    import numpy as np
    import onnxruntime as ort

    from mobiledepth.export.onnx_export import export_onnx

    model, spec = tiny
    pruned, _ = prune_model(model, spec, {"dec.stage0.hidden": 32, "enc.stage6": 16, "enc.block5.hidden": 16})
    pruned.strip_heads().eval()
    path = export_onnx(pruned, (64, 64), tmp_path / "pruned.onnx")
    x = torch.rand(1, 3, 64, 64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, pruned(x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_pruned_model_exports_to_tflite(tiny, tmp_path):
    from mobiledepth.arch import save_checkpoint
    from mobiledepth.prune.variants import measure_spec

    model, spec = tiny
    pruned, new_spec = prune_model(model, spec, {"dec.stage0.hidden": 32, "enc.stage6": 16})
    ckpt = save_checkpoint(tmp_path / "p.pt", pruned, new_spec)
    m = measure_spec(new_spec, (64, 64), "host", "cpu", 1, tmp_path / "export", checkpoint=ckpt, runs=5)
    assert m["median_us"] > 0
