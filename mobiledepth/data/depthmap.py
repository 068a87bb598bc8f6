"""Dense-depth companion files: a depth map stored beside its image.

``<stem>.thumb`` (or any image) -> ``<stem>.depth.npy`` (float32, H x W, larger = farther)
or ``<stem>.depth.png`` (16-bit PNG holding ``round(depth * 256)``, the KITTI convention,
so depths up to 255.99 with 1/256 resolution). Used by the synthetic generator (ground
truth) and for storing teacher predictions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PNG_SCALE = 256.0
DEPTH_SUFFIXES = (".depth.npy", ".depth.png")


def depth_path_for(image_path: str | Path, fmt: str = "npy") -> Path:
    """The companion depth path of an image: same folder, same stem, ``.depth.<fmt>``."""
    if fmt not in ("npy", "png"):
        raise ValueError(f"depth format must be 'npy' or 'png', not {fmt!r}")
    image_path = Path(image_path)
    return image_path.with_name(image_path.stem + f".depth.{fmt}")


def find_depth(image_path: str | Path) -> Path | None:
    """The existing companion depth file of an image (npy preferred), or None."""
    for fmt in ("npy", "png"):
        candidate = depth_path_for(image_path, fmt)
        if candidate.is_file():
            return candidate
    return None


def save_depth(path: str | Path, depth: np.ndarray) -> Path:
    """Write an H x W depth map as ``.npy`` (float32) or 16-bit ``.png`` (depth * 256)."""
    from mobiledepth.io import atomic_path

    path = Path(path)
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"depth map must be 2-D (H x W), got shape {depth.shape}")
    with atomic_path(path) as tmp:
        if path.name.endswith(".npy"):
            with open(tmp, "wb") as handle:
                np.save(handle, depth)
        elif path.name.endswith(".png"):
            from PIL import Image

            scaled = np.clip(np.round(depth * PNG_SCALE), 0, 65535).astype(np.uint16)
            Image.fromarray(scaled).save(tmp, format="PNG")
        else:
            raise ValueError(f"depth file must end in .npy or .png: {path}")
    return path


def load_depth(path: str | Path) -> np.ndarray:
    """Read a depth map written by :func:`save_depth` as float32 H x W."""
    path = Path(path)
    if path.name.endswith(".npy"):
        return np.load(path).astype(np.float32)
    if path.name.endswith(".png"):
        from PIL import Image

        with Image.open(path) as img:
            return np.asarray(img, dtype=np.float32) / PNG_SCALE
    raise ValueError(f"depth file must end in .npy or .png: {path}")
