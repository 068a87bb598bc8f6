"""Shared fixtures. Expensive things (a briefly trained tiny model, its export) are built
once per test session."""

from __future__ import annotations

import numpy as np
import pytest
import torch

TINY = "mdepth-tiny"
TINY_SIZE = (64, 64)


def train_briefly(model, size: tuple[int, int], steps: int = 300, scenes: int = 32, seed: int = 0):
    """A few hundred Adam steps of L1 on log ground-truth depth of generated scenes.

    Random weights are badly conditioned (fp16 rounding moves their output by several
    percent); parity tests need weights shaped by training, as a real checkpoint is."""
    from mobiledepth.data.diw import to_chw_float
    from mobiledepth.data.synth import render_scene, scene_rng

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model trains fastest on one thread, and does not fight xdist workers
    torch.manual_seed(seed)
    rendered = [render_scene(scene_rng(seed, "train", i), *size) for i in range(scenes)]
    images = torch.from_numpy(np.stack([to_chw_float(image) for image, _ in rendered]))
    depth = torch.from_numpy(np.stack([np.log(d) for _, d in rendered]))[:, None].float()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        pick = torch.randint(0, scenes, (8,), generator=generator)
        loss = (model(images[pick]) - depth[pick]).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A mobiledepth checkpoint of the tiny model after brief training."""
    from mobiledepth.arch import build_model, save_checkpoint

    torch.manual_seed(0)  # the initial weights too: the fixture must not depend on test order
    model = train_briefly(build_model(TINY), TINY_SIZE, steps=300)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_checkpoint):
    """The full export chain (ONNX, TFLite fp32/fp16/int8) of the trained tiny model."""
    from mobiledepth.export import export_model

    out = tmp_path_factory.mktemp("export") / "tiny-run"
    return export_model(TINY, checkpoint=tiny_checkpoint, precisions="fp32,fp16,int8", out=out, converter="onnx2tf")


@pytest.fixture()
def test_images():
    """Generated scenes the export never saw (another seed than its parity images)."""
    from mobiledepth.export.calibration import generated_images

    return generated_images(3, TINY_SIZE, seed=4242)


@pytest.fixture(autouse=True, scope="session")
def isolated_store(tmp_path_factory):
    """Commands record into the shared store; in tests that store is a session temp file."""
    import os

    path = tmp_path_factory.mktemp("store") / "store.sqlite"
    previous = os.environ.get("MOBILEDEPTH_STORE")
    os.environ["MOBILEDEPTH_STORE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("MOBILEDEPTH_STORE", None)
    else:
        os.environ["MOBILEDEPTH_STORE"] = previous


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """``make(name, train, test, seed, train_pairs, test_pairs=None)``: a generated DIW-format folder of 64x64
    images (``test_pairs`` None: the generator's default), made once per name."""
    from mobiledepth.data.synth import generate

    made = {}

    def make(name: str, train: int, test: int, seed: int, train_pairs: int, test_pairs: int | None = None):
        if name not in made:
            root = made[name] = tmp_path_factory.mktemp(name)
            generate(root, train, (64, 64), seed=seed, split="train", pairs_per_image=train_pairs)
            generate(root, test, (64, 64), seed=seed, split="test",
                     **({"pairs_per_image": test_pairs} if test_pairs else {}))
        return made[name]

    return make


@pytest.fixture(scope="session")
def synth_root(synth_data):
    """Train 8 images x 6 pairs and test 6 images, 64x64: enough for a few training steps (tests/data and
    tests/evaluate have their own, larger ``synth_root``)."""
    return synth_data("synth_train", 8, 6, seed=11, train_pairs=6)


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    """``make(name, source)``: ``name``.py holding ``source``, importable from ``tmp_path`` (made the current
    directory) and imported afresh; returns ``tmp_path``. The module is forgotten after the test."""
    import sys

    names = []

    def make(name: str, source: str):
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.chdir(tmp_path)
        monkeypatch.syspath_prepend(str(tmp_path))
        sys.modules.pop(name, None)
        names.append(name)
        return tmp_path

    yield make
    for name in names:
        sys.modules.pop(name, None)
