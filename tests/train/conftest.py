import pytest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """Train 8 images x 6 pairs and test 6 images, 64x64: enough for a few steps."""
    from mobiledepth.data.synth import generate

    root = tmp_path_factory.mktemp("synth_train")
    generate(root, 8, (64, 64), seed=11, split="train", pairs_per_image=6)
    generate(root, 6, (64, 64), seed=11, split="test")
    return root
