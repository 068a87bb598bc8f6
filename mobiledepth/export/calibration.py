"""Images for parity checks and int8 calibration: real ones from a directory, or generated
scenes (mobiledepth.data.synth) when none are given."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mobiledepth.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".thumb"}


def find_images(directory: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Image files under ``directory`` (recursively, sorted), at most ``limit``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"calibration directory {directory} does not exist; pass a folder of images")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"calibration directory {directory} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                        "point it at real photos or a DIW-format dataset")
    return files[:limit] if limit else files


def load_images(directory: str | os.PathLike, count: int, size: tuple[int, int]) -> np.ndarray:
    """Up to ``count`` images from a directory, resized to ``size``: (N, 3, H, W) float32 in [0, 1]."""
    from mobiledepth.data.diw import prepare_image

    files = find_images(directory)
    # spread the picks over the whole folder rather than taking the first few
    picks = [files[i] for i in np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)]
    try:
        return np.stack([prepare_image(path, size) for path in picks])
    except OSError as exc:
        raise UserError(f"cannot read an image in {directory} ({exc}); remove or fix it") from None


def generated_images(count: int, size: tuple[int, int], seed: int = 1234) -> np.ndarray:
    """``count`` procedurally rendered scenes (ground plane, objects, shading, haze)."""
    from mobiledepth.data.diw import to_chw_float
    from mobiledepth.data.synth import render_scene, scene_rng

    return np.stack([to_chw_float(render_scene(scene_rng(seed, "val", i), *size)[0]) for i in range(count)])


def calibration_images(directory: str | os.PathLike | None, count: int, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """Images from ``directory`` or generated ones; returns (images, description of the source)."""
    if directory:
        images = load_images(directory, count, size)
        return images, f"{len(images)} images from {directory}"
    return generated_images(count, size), f"{count} generated scenes (no --calibration-data given)"
