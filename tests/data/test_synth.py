"""The synthetic DIW-format generator: determinism, real DIW format, labels match the depth."""

import numpy as np
import pytest

from mobiledepth.data.depthmap import find_depth, load_depth
from mobiledepth.data.diw import load_dataset, load_image
from mobiledepth.data.synth import generate, render_scene, sample_pairs, scene_rng
from mobiledepth.errors import UserError


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_and_scene_independent_of_n(tmp_path):
    generate(tmp_path / "a", 4, (32, 48), seed=7, split="train", pairs_per_image=3)
    generate(tmp_path / "b", 4, (32, 48), seed=7, split="train", pairs_per_image=3)
    generate(tmp_path / "c", 2, (32, 48), seed=7, split="train", pairs_per_image=3)
    generate(tmp_path / "d", 4, (32, 48), seed=8, split="train", pairs_per_image=3)
    a, b, c, d = (_files(tmp_path / x) for x in "abcd")
    assert a == b
    assert all(a[name] == c[name] for name in c if name.endswith((".thumb", ".npy")))
    assert a["DIW_train/000000.thumb"] != d["DIW_train/000000.thumb"]


def test_train_and_test_splits_differ(synth_root):
    train = load_image(synth_root / "DIW_train" / "000000.thumb")
    test = load_image(synth_root / "DIW_test" / "000000.thumb")
    assert not np.array_equal(train, test)


def test_output_is_valid_diw_and_labels_follow_the_depth(synth_root):
    train = load_dataset(synth_root, split="train")
    test = load_dataset(synth_root, split="test")
    assert train.report.ok and test.report.ok
    assert len(train.samples) == 12 and all(len(s.pairs) == 4 for s in train.samples)
    assert len(test.samples) == 10 and all(len(s.pairs) == 1 for s in test.samples)
    lines = (synth_root / "DIW_Annotations" / "DIW_test.csv").read_text().splitlines()
    assert lines[0] == "./DIW_test/000000.thumb" and lines[1].endswith(",64,64")
    for sample in train.samples + test.samples:
        depth = load_depth(find_depth(sample.image))
        assert depth.shape == (64, 64)
        for p in sample.pairs:
            za, zb = depth[p.ya, p.xa], depth[p.yb, p.xb]
            assert p.rel == (1 if za > zb else -1)  # '>' = A farther
            assert max(za, zb) / min(za, zb) >= 1.15


def test_scene_geometry_has_monocular_cues():
    # ground rows: depth shrinks towards the bottom of the image (perspective); sky is farthest
    image, depth = render_scene(scene_rng(0, "train", 0), 96, 96)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    bottom = depth[-1]
    assert np.median(bottom) < np.median(depth[-20]) < np.median(depth[0])
    assert depth.min() > 0


def test_sample_pairs_respects_count_and_ratio():
    depth = np.tile(np.linspace(1, 10, 50, dtype=np.float32)[:, None], (1, 40))
    pairs = sample_pairs(np.random.default_rng(0), depth, 25, min_ratio=1.5)
    assert len(pairs) == 25
    for ya, xa, yb, xb, rel in pairs:
        za, zb = depth[ya, xa], depth[yb, xb]
        assert max(za, zb) / min(za, zb) >= 1.5 and rel == (1 if za > zb else -1)


def test_grayscale_images_are_read_as_rgb(tmp_path):
    generate(tmp_path, 2, (32, 32), seed=0, split="test", gray_fraction=1.0)
    from PIL import Image

    with Image.open(tmp_path / "DIW_test" / "000000.thumb") as img:
        assert img.mode == "L" and img.format == "JPEG"
    assert load_image(tmp_path / "DIW_test" / "000000.thumb").shape == (32, 32, 3)


def test_existing_split_needs_overwrite_and_nothing_partial_is_left(tmp_path):
    generate(tmp_path, 2, (32, 32), seed=0, split="test")
    with pytest.raises(UserError, match="--overwrite"):
        generate(tmp_path, 2, (32, 32), seed=0, split="test")
    generate(tmp_path, 3, (32, 32), seed=0, split="test", overwrite=True)
    assert len(list((tmp_path / "DIW_test").glob("*.thumb"))) == 3
    assert not list(tmp_path.glob(".*partial"))


def test_dataset_loads_the_dense_depth(synth_root):
    pytest.importorskip("torch")
    from mobiledepth.data.dataset import DiwDataset, collate

    data = load_dataset(synth_root, split="test")
    same = DiwDataset(data, (64, 64), with_depth=True)
    assert np.array_equal(same[0]["depth"][0].numpy(), load_depth(find_depth(data.samples[0].image)))
    half = collate([DiwDataset(data, (32, 32), with_depth=True)[i] for i in range(2)])
    assert half["depth"].shape == (2, 1, 32, 32)
