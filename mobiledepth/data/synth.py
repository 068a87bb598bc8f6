"""Procedural DIW-format scenes with dense ground-truth depth: the project's stand-in for DIW.

Each scene is rendered with a pinhole camera at height ``cam_h`` above a ground plane, so the
depth of every pixel follows from geometry and the image carries real monocular cues:

- the ground plane in perspective: depth ``Z = f * cam_h / (y - horizon)``, with a checker
  texture laid out in world metres, so tiles shrink (a texture gradient) towards the horizon;
- objects (boxes and spheres) standing on the ground: their image size is ``f * size / Z`` and
  their base sits on the ground row of their depth, so size and height-in-image shrink with
  distance; nearer objects occlude farther ones (z-buffer);
- shading (a Lambertian sphere, a lit box face) and atmospheric haze ``exp(-beta * Z)``;
- optionally a back wall (bricks in world units) closing the scene.

Point pairs are DIW-like: random points (half of them near each other, across edges),
keeping only pairs whose depths differ by at least ``min_ratio`` so the order is unambiguous.
Everything is vectorised numpy; scene ``i`` depends only on ``(seed, split, i)``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobiledepth.data.depthmap import depth_path_for
from mobiledepth.data.diw import OrdinalPair, write_annotations
from mobiledepth.errors import UserError
from mobiledepth.io import check_writable
from mobiledepth.progress import Progress, ProgressFn
from mobiledepth.sizes import parse_input_size

SKY_DEPTH = 200.0
SPLIT_CODES = {"train": 1, "test": 2, "val": 3}


@dataclass
class SynthResult:
    out: Path
    csv: Path
    split: str
    images: int
    pairs: int
    seconds: float


def parse_size(text: str) -> tuple[int, int]:
    """``'128x96'`` -> (128, 96) as (H, W); any size from 16x16 (images need no multiple of 32)."""
    return parse_input_size(text, multiple=1, minimum=16)


@dataclass
class _Camera:
    """A pinhole camera at height ``cam_h`` over the ground, with its pixel grid (pixel centres)."""

    f: float
    cam_h: float
    horizon: float
    cx: float
    yy: np.ndarray
    xx: np.ndarray


def _camera(rng: np.random.Generator, height: int, width: int) -> _Camera:
    f = width * rng.uniform(0.8, 1.3)
    cam_h = rng.uniform(1.2, 2.2)
    horizon = height * rng.uniform(0.25, 0.55)
    cx = width / 2 + rng.uniform(-0.1, 0.1) * width
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    return _Camera(f, cam_h, horizon, cx, yy, xx)


def _ground_and_sky(rng: np.random.Generator, cam: _Camera) -> tuple[np.ndarray, np.ndarray]:
    """(color, depth) of the ground plane (checker texture in world metres) under a sky gradient."""
    f, horizon, yy, xx = cam.f, cam.horizon, cam.yy, cam.xx
    below = yy > horizon + 0.5
    ground_z = np.where(below, f * cam.cam_h / np.maximum(yy - horizon, 1e-3), np.inf)
    ground_x = np.where(below, (xx - cam.cx) * np.where(below, ground_z, 0) / f, 0)
    depth = np.where(below, ground_z, SKY_DEPTH).astype(np.float32)
    tile = rng.uniform(0.5, 1.6)
    checker = (np.floor(ground_x / tile) + np.floor(np.where(below, ground_z, 0) / tile)) % 2
    contrast = np.clip(f * tile / np.where(below, ground_z, np.inf) / 3.0, 0, 1)  # fade sub-pixel tiles
    g1, g2 = rng.uniform(0.15, 0.85, 3), rng.uniform(0.15, 0.85, 3)
    mix = 0.5 + (checker - 0.5) * contrast
    color = g1 * mix[..., None] + g2 * (1 - mix[..., None])
    sky_top, sky_bottom = rng.uniform(0.3, 0.7, 3) * np.array([0.7, 0.8, 1.0]), rng.uniform(0.7, 1.0, 3)
    sky_t = np.clip(yy / max(horizon, 1.0), 0, 1)[..., None]
    color = np.where(below[..., None], color, sky_top * (1 - sky_t) + sky_bottom * sky_t)
    return color, depth


def _back_wall(rng: np.random.Generator, cam: _Camera, color: np.ndarray, depth: np.ndarray):
    """Maybe close the scene with a brick wall; returns (color, depth, the farthest an object may stand)."""
    if rng.random() >= 0.5:
        return color, depth, 40.0
    wall_z = rng.uniform(8.0, 30.0)
    wall_top = cam.horizon - cam.f * (rng.uniform(3.0, 9.0) - cam.cam_h) / wall_z
    wall = (depth > wall_z) & (cam.yy > wall_top)
    wy = (cam.horizon - cam.yy) * wall_z / cam.f + cam.cam_h  # metres above the ground
    wx = (cam.xx - cam.cx) * wall_z / cam.f
    brick_h, brick_w = rng.uniform(0.2, 0.5), rng.uniform(0.5, 1.2)
    row = np.floor(wy / brick_h)
    mortar = ((wy / brick_h) % 1 < 0.12) | (((wx / brick_w) + 0.5 * (row % 2)) % 1 < 0.06)
    wall_color = rng.uniform(0.3, 0.8, 3)
    shade = np.where(mortar, 0.55, 1.0)[..., None]
    color = np.where(wall[..., None], wall_color * shade, color)
    depth = np.where(wall, wall_z, depth).astype(np.float32)
    return color, depth, wall_z * 0.9


def _object_shape(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, z: float, size_w: float):
    """(inside mask, depth, shade) of a sphere-ish ellipsoid or a box over the (u, v) patch, both in -1..1."""
    if rng.random() < 0.5:  # sphere-ish ellipsoid
        light = np.array([-0.5, -0.6, 0.62])
        light /= np.linalg.norm(light)
        r2 = u * u + v * v
        nz = np.sqrt(np.clip(1 - r2, 0, 1))
        normal = np.stack([u, v, nz], axis=-1)
        return r2 <= 1.0, z - (size_w / 2) * nz, np.clip(normal @ light, 0, 1) * 0.8 + 0.2
    # box: lit front face, a darker top strip
    inside = (u >= -1) & (u <= 1) & (v >= -1) & (v <= 1)
    shade = 0.55 + 0.35 * (1 - (v + 1) / 2) + 0.1 * u * rng.choice([-1, 1])
    return inside, np.full_like(u, z), np.where(v < -0.8, shade * 0.7, shade)


def _place_object(rng: np.random.Generator, cam: _Camera, color: np.ndarray, depth: np.ndarray,
                  far_limit: float) -> None:
    """Stand one object on the ground at a random depth, drawn in place through the z-buffer."""
    height, width = depth.shape
    z = rng.uniform(2.0, far_limit)
    x_world = rng.uniform(-1.1, 1.1) * ((width / 2) / cam.f) * z
    size_w = rng.uniform(0.4, 2.2)
    size_h = rng.uniform(0.5, 3.0)
    base = cam.horizon + cam.f * cam.cam_h / z
    top = base - cam.f * size_h / z
    left = cam.cx + cam.f * (x_world - size_w / 2) / z
    right = cam.cx + cam.f * (x_world + size_w / 2) / z
    y0, y1 = max(int(np.floor(top)), 0), min(int(np.ceil(base)), height)
    x0, x1 = max(int(np.floor(left)), 0), min(int(np.ceil(right)), width)
    if y1 <= y0 or x1 <= x0:
        return
    py, px = cam.yy[y0:y1, x0:x1], cam.xx[y0:y1, x0:x1]
    u = (px - (left + right) / 2) / ((right - left) / 2)  # -1..1 across
    v = (py - (top + base) / 2) / ((base - top) / 2)  # -1..1 down
    obj_color = rng.uniform(0.1, 0.95, 3)
    inside, obj_depth, shade = _object_shape(rng, u, v, z, size_w)
    region_depth = depth[y0:y1, x0:x1]
    visible = inside & (obj_depth < region_depth)
    depth[y0:y1, x0:x1] = np.where(visible, obj_depth, region_depth)
    color[y0:y1, x0:x1] = np.where(visible[..., None], obj_color * shade[..., None], color[y0:y1, x0:x1])


def _hazy_image(rng: np.random.Generator, color: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Haze (farther = paler) and sensor noise; the uint8 image."""
    beta = rng.uniform(0.01, 0.06)
    haze = rng.uniform(0.7, 0.95) * np.ones(3)
    transmission = np.exp(-beta * np.minimum(depth, 60.0))[..., None]
    color = color * transmission + haze * (1 - transmission)
    color = color + rng.normal(0, 0.01, color.shape)
    return (np.clip(color, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene: (uint8 H x W x 3 image, float32 H x W depth, larger = farther)."""
    cam = _camera(rng, height, width)
    color, depth = _ground_and_sky(rng, cam)
    color, depth, far_limit = _back_wall(rng, cam, color, depth)
    for _ in range(int(rng.integers(3, 9))):  # objects on the ground; nearer ones occlude (z-buffer)
        _place_object(rng, cam, color, depth, far_limit)
    return _hazy_image(rng, color, depth), depth.astype(np.float32)


def sample_pairs(
    rng: np.random.Generator, depth: np.ndarray, count: int, min_ratio: float = 1.15, max_tries: int = 20
) -> list[tuple[int, int, int, int, int]]:
    """``count`` pairs (ya, xa, yb, xb, rel), 0-based, with depth ratios >= ``min_ratio``."""
    height, width = depth.shape
    chosen: list[tuple[int, int, int, int, int]] = []
    for _ in range(max_tries):
        n = 8 * count
        ya, xa = rng.integers(0, height, n), rng.integers(0, width, n)
        near = rng.random(n) < 0.5
        radius_y, radius_x = max(height // 4, 1), max(width // 4, 1)
        yb = np.where(near, np.clip(ya + rng.integers(-radius_y, radius_y + 1, n), 0, height - 1), rng.integers(0, height, n))
        xb = np.where(near, np.clip(xa + rng.integers(-radius_x, radius_x + 1, n), 0, width - 1), rng.integers(0, width, n))
        za, zb = depth[ya, xa], depth[yb, xb]
        ratio = np.maximum(za, zb) / np.maximum(np.minimum(za, zb), 1e-6)
        keep = np.flatnonzero(ratio >= min_ratio)
        for k in keep[: count - len(chosen)]:
            chosen.append((int(ya[k]), int(xa[k]), int(yb[k]), int(xb[k]), 1 if za[k] > zb[k] else -1))
        if len(chosen) >= count:
            break
    return chosen


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of scene ``index``: independent of how many scenes are made."""
    return np.random.default_rng([seed, SPLIT_CODES.get(split, 9), index])


def generate(
    out: str | Path,
    n: int,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    split: str = "train",
    pairs_per_image: int | None = None,
    gray_fraction: float = 0.05,
    overwrite: bool = False,
    jpeg_quality: int = 92,
    progress: ProgressFn | None = None,
) -> SynthResult:
    """Write ``n`` scenes as a DIW-format split: ``OUT/DIW_Annotations/DIW_<split>.csv``,
    ``OUT/DIW_<split>/<i>.thumb`` (JPEG) and ``<i>.depth.npy`` (ground truth) beside each.

    ``pairs_per_image`` defaults to 1 for ``test`` (as DIW) and 8 for ``train``.
    A fraction ``gray_fraction`` of the images is stored grayscale, as some DIW images are.
    """
    from PIL import Image

    if split not in SPLIT_CODES:
        raise UserError(f"unknown split {split!r} (use train, test or val)")
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    k = pairs_per_image if pairs_per_image is not None else (1 if split == "test" else 8)
    if k < 1:
        raise UserError(f"--pairs-per-image must be at least 1, got {k}")
    height, width = size
    out = check_writable(out, "--out", folder=True)
    image_dir = out / f"DIW_{split}"
    csv_path = out / "DIW_Annotations" / f"DIW_{split}.csv"
    if (image_dir.exists() or csv_path.exists()) and not overwrite:
        raise UserError(f"{image_dir} already exists; pass --overwrite or choose another --out")
    start = time.perf_counter()
    partial = out / f".DIW_{split}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    entries: list[tuple[str, OrdinalPair]] = []
    try:
        for i in range(n):
            rng = scene_rng(seed, split, i)
            image, depth = render_scene(rng, height, width)
            name = f"{i:06d}.thumb"
            pil = Image.fromarray(image)
            if rng.random() < gray_fraction:
                pil = pil.convert("L")
            pil.save(partial / name, format="JPEG", quality=jpeg_quality)
            with open(depth_path_for(partial / name), "wb") as handle:
                np.save(handle, depth)
            for ya, xa, yb, xb, rel in sample_pairs(rng, depth, k):
                entries.append((f"DIW_{split}/{name}", OrdinalPair(ya, xa, yb, xb, rel, width, height)))
            if progress is not None:
                progress(Progress("synth", "scene", done=i + 1, total=n))
        if image_dir.exists():
            shutil.rmtree(image_dir)
        partial.rename(image_dir)
        write_annotations(csv_path, entries)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return SynthResult(out, csv_path, split, n, len(entries), time.perf_counter() - start)
