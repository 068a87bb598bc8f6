import pytest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small generated test split: 12 images x 1 pair, 64x96."""
    from mobiledepth.data.synth import generate

    root = tmp_path_factory.mktemp("synth_eval")
    generate(root, 12, (64, 96), seed=5, split="test")
    return root
