"""Losses against hand-computed values; each one decreases and reaches every parameter."""

import math

import pytest
import torch

from mobiledepth.train.losses import (
    affinity,
    gather_pairs,
    pairwise_loss,
    pool_for_pairwise,
    ranking_loss,
    rmse_loss,
    with_heads,
)


def _depth():
    # (1, 1, 2, 3) map: row 0 = 0 1 2, row 1 = 3 4 5
    return torch.arange(6, dtype=torch.float32).reshape(1, 1, 2, 3)


def test_gather_pairs_reads_y_then_x():
    z_a, z_b = gather_pairs(_depth(), torch.tensor([[[1, 2, 0, 0]]]))
    assert (z_a.item(), z_b.item()) == (5.0, 0.0)


def test_ranking_loss_hand_computed():
    depth = _depth()
    # d = z_A - z_B = 1 for each pair: (0,1) vs (0,0)
    points = torch.tensor([[[0, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 2, 0, 0]]])
    rel = torch.tensor([[1.0, -1.0, 0.0, 1.0]])
    mask = torch.tensor([[True, True, True, False]])
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(1)) + 1.0) / 3  # softplus(-1), softplus(1), d^2
    assert ranking_loss(depth, points, rel, mask).item() == pytest.approx(expected, rel=1e-6)
    # without a mask every pair counts; d = 2 for the last: softplus(-2)
    full = (math.log1p(math.exp(-1)) + math.log1p(math.exp(1)) + 1.0 + math.log1p(math.exp(-2))) / 4
    assert ranking_loss(depth, points, rel).item() == pytest.approx(full, rel=1e-6)


def test_rmse_hand_computed_and_resizes_the_student():
    student = torch.zeros(2, 1, 4, 4)
    teacher = torch.full((2, 1, 8, 8), 3.0)
    assert rmse_loss(student, teacher).item() == pytest.approx(3.0)


def test_pairwise_pooling_grid():
    assert pool_for_pairwise(torch.zeros(1, 4, 64, 64)).shape[-2:] == (2, 2)  # kernel 32
    assert pool_for_pairwise(torch.zeros(1, 4, 7, 7)).shape[-2:] == (3, 3)  # kernel 3, ceil mode: 7/3 -> 3


def test_pairwise_loss_hand_computed_with_different_channels():
    # 2x2 maps -> kernel 1 -> 4 nodes. Student: every node (1, 0, 0) -> all affinities 1.
    student = torch.zeros(1, 3, 2, 2)
    student[:, 0] = 1.0
    # teacher (2 channels): nodes alternate (1,0),(0,1),(1,0),(0,1) -> affinity 1 for equal, 0 otherwise
    teacher = torch.zeros(1, 2, 2, 2)
    teacher[0, 0, 0, 0] = teacher[0, 0, 1, 0] = 1.0
    teacher[0, 1, 0, 1] = teacher[0, 1, 1, 1] = 1.0
    a_t = affinity(teacher)
    assert a_t[0].tolist() == [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]]
    # 8 of the 16 entries differ by 1: sum 8, / N^2 = 16 -> 0.5
    assert pairwise_loss(student, teacher).item() == pytest.approx(0.5)
    assert pairwise_loss(teacher * 3.0, teacher).item() == pytest.approx(0.0)  # scale-free (normalised nodes)
    # mean over images
    assert pairwise_loss(student.repeat(2, 1, 1, 1), torch.cat([teacher, student[:, :2]])).item() == pytest.approx(0.25)


def test_with_heads_weights_and_upsampling():
    depth = torch.ones(1, 1, 8, 8)
    heads = [torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 4, 4), 4.0)]
    seen = []

    def mean_loss(x):
        seen.append(tuple(x.shape[-2:]))
        return x.mean()

    assert with_heads(mean_loss, depth, heads).item() == pytest.approx(0.5 * 1 + 0.25 * 2 + 0.25 * 4)
    assert seen == [(8, 8)] * 3  # every head upsampled to full size first
    assert with_heads(mean_loss, depth, []).item() == 1.0


@pytest.fixture(scope="module")
def batch(synth_root):
    from mobiledepth.data.dataset import DiwDataset, collate
    from mobiledepth.data.diw import load_dataset

    ds = DiwDataset(load_dataset(synth_root, split="train"), (64, 64))
    return collate([ds[i] for i in range(4)])


def _cfg(**loss):
    from mobiledepth.train.config import resolve_config

    return resolve_config({"model": "mdepth-tiny", "teacher": "mdepth-tiny", "input_size": [64, 64],
                           "loss": {"ranking": False, "rmse": False, "pairwise": False, **loss}})


@pytest.mark.parametrize("term", ["ranking", "rmse", "pairwise"])
def test_each_loss_decreases_in_a_few_steps(batch, term):
    from mobiledepth.train.distill import Teacher
    from mobiledepth.train.trainer import compute_terms

    torch.manual_seed(0)
    from mobiledepth.arch import build_model

    # BatchNorm frozen (eval mode): the check is that each loss's gradient is a descent direction,
    # without the batch-statistics noise that dominates the tiny pair-wise term at init.
    model = build_model("mdepth-tiny").eval()
    teacher = Teacher("mdepth-tiny")
    cfg = _cfg(**{term: True})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    values = []
    for _ in range(10):
        loss = compute_terms(model, batch, cfg, teacher)[term]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        values.append(loss.item())
    assert values[-1] < 0.8 * values[0], values


def test_gradients_reach_every_parameter(batch):
    from mobiledepth.arch import build_model
    from mobiledepth.train.distill import Teacher
    from mobiledepth.train.trainer import compute_terms

    torch.manual_seed(0)
    model = build_model("mdepth-tiny").train()
    terms = compute_terms(model, batch, _cfg(ranking=True, rmse=True, pairwise=True), Teacher("mdepth-tiny"))
    assert set(terms) == {"ranking", "rmse", "pairwise"}
    sum(terms.values()).backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert dead == []
    assert any(name.startswith("heads.") for name, _ in model.named_parameters())


def test_feature_taps_are_configurable():
    from mobiledepth.arch import build_model
    from mobiledepth.errors import UserError
    from mobiledepth.train.distill import check_tap, forward_with_tap

    torch.manual_seed(0)
    model = build_model("mdepth-tiny").eval()
    x = torch.rand(1, 3, 64, 64)
    prediction, features = forward_with_tap(model, x, "features")
    assert features is prediction.features
    _, stage = forward_with_tap(model, x, "decoder.stages.1")
    assert stage.shape == (1, model.decoder.stage_channels[1], 8, 8)  # stage 2 output: /8
    with pytest.raises(UserError, match="feature tap 'decoder.nope'"):
        check_tap(model, "decoder.nope", "student")


def test_model_ref_keeps_trained_heads_and_gives_an_export_fresh_ones(tmp_path):
    from mobiledepth.arch import build_model
    from mobiledepth.arch.checkpoint import save_checkpoint
    from mobiledepth.train.distill import load_model_ref

    torch.manual_seed(0)
    trained = build_model("mdepth-tiny", with_heads=True)
    with torch.no_grad():
        for p in trained.heads.parameters():
            p.add_(1.0)  # unlike any fresh initialisation
    save_checkpoint(tmp_path / "with_heads.pt", trained)
    loaded, _ = load_model_ref(str(tmp_path / "with_heads.pt"))
    for (name, mine), theirs in zip(trained.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(mine, theirs), name
    exported = build_model("mdepth-tiny", with_heads=True)
    exported.strip_heads()
    save_checkpoint(tmp_path / "no_heads.pt", exported)
    fresh, _ = load_model_ref(str(tmp_path / "no_heads.pt"))
    assert fresh.heads is not None and len(list(fresh.heads.parameters())) > 0
    assert torch.equal(fresh.state_dict()["decoder.predict.weight"], exported.state_dict()["decoder.predict.weight"])
