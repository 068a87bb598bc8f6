import pytest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small generated dataset (train 12 images x 4 pairs, test 10 images x 1 pair), 64x64."""
    from mobiledepth.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, 12, (64, 64), seed=3, split="train", pairs_per_image=4)
    generate(root, 10, (64, 64), seed=3, split="test")
    return root
