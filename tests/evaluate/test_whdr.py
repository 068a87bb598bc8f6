"""WHDR against hand-computed cases: strictness (ties), sign convention, borders, resizing."""

import numpy as np
import pytest

from mobiledepth.data.diw import OrdinalPair
from mobiledepth.evaluate.whdr import WhdrResult, pair_correct, sample_bilinear, whdr, whdr_of_prediction


def test_whdr_hand_cases():
    z_a = [2.0, 1.0, 5.0, 3.0]
    z_b = [1.0, 2.0, 5.0, 1.0]
    rel = [1, 1, 1, -1]  # correct, wrong, tie (= error), wrong
    result = whdr(z_a, z_b, rel)
    assert result == WhdrResult(correct=1, pairs=4)
    assert result.value == pytest.approx(0.75)


def test_disparity_flips_the_sign_but_ties_stay_errors():
    z_a, z_b, rel = [2.0, 1.0, 5.0], [1.0, 2.0, 5.0], [1, 1, 1]
    assert pair_correct(z_a, z_b, rel, depth_like=False).tolist() == [False, True, False]


def test_equal_pairs_follow_the_formula_unless_a_tolerance_is_given():
    z_a, z_b, rel = [1.0, 1.0], [1.0, 1.5], [0, 0]
    assert pair_correct(z_a, z_b, rel).tolist() == [False, False]  # (z_A - z_B) * 0 > 0 never holds
    assert pair_correct(z_a, z_b, rel, equal_tolerance=0.1).tolist() == [True, False]


def test_empty_and_sum():
    assert np.isnan(WhdrResult(0, 0).value)
    assert WhdrResult(1, 2) + WhdrResult(3, 4) == WhdrResult(4, 6)


@pytest.mark.parametrize("src, dst", [((7, 9), (333, 500)), ((32, 64), (31, 17)), ((1, 5), (10, 3)),
                                      ((56, 112), (375, 500)), ((8, 8), (8, 8))])
def test_sample_bilinear_equals_torch_resize_everywhere(src, dst):
    torch = pytest.importorskip("torch")
    pred = np.random.default_rng(0).normal(size=src).astype(np.float32)
    full = torch.nn.functional.interpolate(torch.from_numpy(pred)[None, None], size=dst, mode="bilinear",
                                           align_corners=False)[0, 0].numpy()
    ys, xs = np.mgrid[0 : dst[0], 0 : dst[1]]
    values = sample_bilinear(pred, ys.ravel(), xs.ravel(), dst).reshape(dst)
    np.testing.assert_allclose(values, full, rtol=0, atol=2e-5)  # float32 rounding, all borders included
    if src == dst:
        assert np.array_equal(values, pred)  # same size: exactly the prediction


def test_prediction_read_at_original_size_by_hand():
    # a 2x2 prediction of a 4x4 original image, resized bilinearly (align_corners=False):
    #   rows/cols of the 4x4 map sample source coords -0.25->0, 0.25, 0.75, 1.25->clamped to 1
    pred = np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32)
    assert sample_bilinear(pred, [0, 3, 1, 3, 0], [0, 3, 1, 0, 3], (4, 4)).tolist() == [0.0, 3.0, 0.75, 2.0, 1.0]
    pairs = [
        OrdinalPair(0, 0, 3, 3, -1, 4, 4),  # z 0 vs 3, A closer: correct
        OrdinalPair(0, 0, 3, 3, 1, 4, 4),  # says A farther: wrong
        OrdinalPair(3, 0, 0, 3, 1, 4, 4),  # borders: z 2 vs 1, A farther: correct
        # an 8x8 original: x=0 and x=1 sample source -0.375 and -0.125, both clamped to 0 -> tie -> error
        OrdinalPair(0, 0, 0, 1, -1, 8, 8),
    ]
    assert sample_bilinear(pred, [0, 0], [0, 1], (8, 8)).tolist() == [0.0, 0.0]
    assert whdr_of_prediction(pred, pairs) == WhdrResult(2, 4)
    assert whdr_of_prediction(pred, pairs, depth_like=False) == WhdrResult(1, 4)


def test_constant_prediction_gets_every_pair_wrong():
    pairs = [OrdinalPair(0, 0, 5, 5, 1, 10, 10), OrdinalPair(9, 9, 0, 0, -1, 10, 10)]
    assert whdr_of_prediction(np.ones((4, 4), np.float32), pairs).value == 1.0
