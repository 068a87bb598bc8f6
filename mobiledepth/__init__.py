"""mobiledepth: monocular depth from PyTorch to the phone, with proof of speed and accuracy."""

__version__ = "0.1.0"
