"""The DIW reader: parsing, validation (every error, reported together), coordinate mapping."""

import numpy as np
import pytest
from PIL import Image

from mobiledepth.data.depthmap import depth_path_for, find_depth, load_depth, save_depth
from mobiledepth.data.diw import (
    OrdinalPair,
    load_dataset,
    load_image,
    map_pair,
    map_pairs,
    map_points,
    read_annotations,
    resolve_annotations,
    validate,
)
from mobiledepth.errors import UserError


def _image(path, size=(20, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size[1], size[0]), 128).save(path, format="JPEG")


@pytest.fixture
def diw_root(tmp_path):
    """A hand-written DIW layout: two images (one grayscale), three samples, all valid."""
    _image(tmp_path / "DIW_test" / "a.thumb")
    _image(tmp_path / "DIW_test" / "b.thumb", mode="L")
    csv = tmp_path / "DIW_Annotations" / "DIW_test.csv"
    csv.parent.mkdir()
    csv.write_text(
        "./DIW_test/a.thumb\n1,1,20,30,>,30,20\n"
        "./DIW_test/b.thumb\n5,6,7,8,<,30,20\n"
        "./DIW_test/a.thumb\n2,3,4,5,=,30,20\n"
    )
    return tmp_path


def test_reads_pairs_zero_based_y_first(diw_root):
    data = load_dataset(diw_root)
    assert [s.path for s in data.samples] == ["DIW_test/a.thumb", "DIW_test/b.thumb"]
    a, b = data.samples
    # the two samples naming a.thumb are grouped; coordinates become 0-based, y first
    assert a.pairs[0] == OrdinalPair(0, 0, 19, 29, 1, 30, 20, line=2)
    assert (a.pairs[1].ya, a.pairs[1].xa, a.pairs[1].yb, a.pairs[1].xb, a.pairs[1].rel) == (1, 2, 3, 4, 0)
    assert b.pairs[0].rel == -1
    assert a.original_size == (20, 30)
    assert data.num_pairs == 3 and data.skipped_pairs == 0
    assert data.report.images == 2 and data.report.pairs == 3


def test_pair_round_trips_to_csv():
    pair = OrdinalPair(117, 69, 256, 290, 1, 500, 333)
    assert pair.to_csv() == "118,70,257,291,>,500,333"


def test_grayscale_image_is_replicated_to_rgb(diw_root):
    image = load_image(diw_root / "DIW_test" / "b.thumb")
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])


def test_every_problem_is_reported_together(tmp_path):
    _image(tmp_path / "imgs" / "ok.thumb")
    (tmp_path / "data.csv").write_text(
        "./imgs/ok.thumb\n1,1,2,2,>,30,20\n"  # fine
        "./imgs/missing.thumb\n1,1,2,2,>,30,20\n"  # line 3: missing image
        "./imgs/ok.thumb\n0,1,2,2,<,30,20\n"  # line 6: y_A = 0 (1-based) -> outside
        "./imgs/ok.thumb\n1,1,21,2,<,30,20\n"  # line 8: y_B > height
        "./imgs/ok.thumb\n1,1,2,31,<,30,20\n"  # line 10: x_B > width
        "./imgs/ok.thumb\n1,1,2,2,?,30,20\n"  # line 12: unknown relation
        "../outside.thumb\n1,1,2,2,>,30,20\n"  # line 13: escapes the root
        "/etc/passwd\n1,1,2,2,>,30,20\n"  # line 15: absolute path escapes too
        "./imgs/ok.thumb\n1,1,2,>,30,20\n"  # line 18: 6 fields
        "./imgs/ok.thumb\n1,a,2,2,>,30,20\n"  # line 20: non-numeric
    )
    report = validate(tmp_path / "data.csv")
    assert not report.ok
    kinds = [(p.line, p.kind) for p in report.problems]
    assert kinds == [
        (3, "missing"), (6, "bounds"), (8, "bounds"), (10, "bounds"), (12, "relation"),
        (13, "escape"), (15, "escape"), (18, "malformed"), (20, "malformed"),
    ]
    assert report.counts() == {"missing": 1, "bounds": 3, "relation": 1, "escape": 2, "malformed": 2}
    summary = report.summary(first=3)
    assert summary.startswith("9 problem(s) in") and "line 3:" in summary and "line 8:" in summary
    assert "line 10:" not in summary and "6 more" in summary and "\n" not in summary

    with pytest.raises(UserError) as err:
        load_dataset(tmp_path / "data.csv")
    assert "9 problem(s)" in str(err.value) and "--skip-bad" in str(err.value)

    data = load_dataset(tmp_path / "data.csv", skip_bad=True)
    assert [s.path for s in data.samples] == ["imgs/ok.thumb"]
    assert data.num_pairs == 1 and data.skipped_pairs == 9


def test_odd_line_count_is_reported(tmp_path):
    _image(tmp_path / "x.thumb")
    (tmp_path / "d.csv").write_text("./x.thumb\n1,1,2,2,>,30,20\n./x.thumb\n")
    report = validate(tmp_path / "d.csv")
    assert [(p.line, p.kind) for p in report.problems] == [(3, "malformed")]


def test_resolve_annotations(diw_root, tmp_path):
    csv, root = resolve_annotations(diw_root)
    assert csv == diw_root / "DIW_Annotations" / "DIW_test.csv" and root == diw_root
    assert resolve_annotations(csv) == (csv, diw_root)  # a CSV inside DIW_Annotations: root one level up
    (diw_root / "DIW_Annotations" / "DIW_train_val.csv").write_text("")
    with pytest.raises(UserError, match="several annotation CSVs"):
        resolve_annotations(diw_root)
    assert resolve_annotations(diw_root, split="train")[0].name == "DIW_train_val.csv"
    with pytest.raises(UserError, match="no annotation CSV for split 'val'"):
        resolve_annotations(diw_root, split="val")
    with pytest.raises(UserError, match="dataset not found"):
        resolve_annotations(tmp_path / "nope")


def test_map_points_floor_and_clamp():
    # 333 x 500 original -> 224 x 448 input: y' = floor(y * 224 / 333), x' = floor(x * 448 / 500)
    ys, xs = map_points([0, 1, 166, 332], [0, 1, 250, 499], (333, 500), (224, 448))
    assert ys.tolist() == [0, 0, 111, 223]  # 166*224/333 = 111.66 -> 111 ; 332*224/333 = 223.3 -> 223
    assert xs.tolist() == [0, 0, 224, 447]  # 499*448/500 = 447.1 -> 447
    # upsampling never leaves the image (clamp)
    ys, xs = map_points([9], [9], (10, 10), (64, 64))
    assert (ys[0], xs[0]) == (57, 57)


def test_map_pair_nudges_collisions():
    # A (0, 0) and B (0, 1) of a 10x10 image both land on pixel (0, 0) of a 2x2 grid -> B moves right
    assert map_pair(OrdinalPair(0, 0, 0, 1, 1, 10, 10), (2, 2)) == (0, 0, 0, 1)
    # B was below A: nudge down
    assert map_pair(OrdinalPair(0, 0, 3, 1, 1, 10, 10), (2, 2)) == (0, 0, 1, 0)
    # at the right border the nudge goes the other way
    assert map_pair(OrdinalPair(9, 9, 9, 8, -1, 10, 10), (2, 2)) == (1, 1, 1, 0)
    # no collision: untouched
    assert map_pair(OrdinalPair(0, 0, 9, 9, 1, 10, 10), (2, 2)) == (0, 0, 1, 1)


def test_dataset_and_collate_pad_pairs(diw_root):
    torch = pytest.importorskip("torch")
    from mobiledepth.data.dataset import DiwDataset, collate

    ds = DiwDataset(load_dataset(diw_root), (32, 64))
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 32, 64) and batch["image"].dtype == torch.float32
    assert batch["mask"].tolist() == [[True, True], [True, False]]
    # a.thumb: (0,0)-(19,29) in a 20x30 image -> floor(19*32/20)=30, floor(29*64/30)=61
    assert batch["points"][0, 0].tolist() == [0, 0, 30, 61]
    assert batch["rel"][0].tolist() == [1.0, 0.0] and batch["rel"][1, 0].item() == -1.0


def test_uint8_items_become_the_same_floats_on_the_device(diw_root):
    torch = pytest.importorskip("torch")
    from mobiledepth.compute.device import device_settings, to_device
    from mobiledepth.data.dataset import DiwDataset, collate

    data = load_dataset(diw_root)
    floats = collate([DiwDataset(data, (32, 64))[i] for i in range(2)])
    raw = collate([DiwDataset(data, (32, 64), uint8=True)[i] for i in range(2)])
    assert raw["image"].dtype == torch.uint8 and raw["image"].shape == (2, 3, 32, 64)
    cpu = device_settings("cpu", "fp32", False, False, 0)
    assert torch.equal(to_device(raw, cpu)["image"], floats["image"])  # bit for bit: a resumed run stays identical
    assert torch.equal(to_device(floats, cpu)["image"], floats["image"])


def test_depth_companion_round_trip(tmp_path):
    depth = np.array([[1.0, 2.5], [100.25, 0.0]], dtype=np.float32)
    image = tmp_path / "x.thumb"
    assert depth_path_for(image) == tmp_path / "x.depth.npy"
    assert find_depth(image) is None
    save_depth(depth_path_for(image), depth)
    assert find_depth(image) == tmp_path / "x.depth.npy"
    assert np.array_equal(load_depth(tmp_path / "x.depth.npy"), depth)
    save_depth(depth_path_for(image, "png"), depth)
    assert np.array_equal(load_depth(tmp_path / "x.depth.png"), depth)  # multiples of 1/256 are exact


def test_read_annotations_without_file_checks(tmp_path):
    (tmp_path / "d.csv").write_text("./nothere.thumb\n1,1,2,2,>,30,20\n")
    samples, problems, (images, pairs) = read_annotations(tmp_path / "d.csv", tmp_path, check_files=False)
    assert problems == [] and len(samples) == 1 and (images, pairs) == (1, 1)


def test_map_pairs_is_map_pair_for_every_pair():
    """The vectorised mapping the trainer's index uses equals map_pair pair by pair, collisions included."""
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(400):
        h, w = (int(v) for v in rng.integers(1, 40, size=2))
        ya, yb = (int(v) for v in rng.integers(0, h, size=2))
        xa, xb = (int(v) for v in rng.integers(0, w, size=2))
        pairs.append(OrdinalPair(ya, xa, yb, xb, int(rng.choice([-1, 1])), w, h))
    for size in ((2, 2), (5, 7), (64, 48)):
        expected = np.array([map_pair(p, size) for p in pairs])
        assert (map_pairs(pairs, size) == expected).all()
    assert map_pairs([], (4, 4)).shape == (0, 4)
