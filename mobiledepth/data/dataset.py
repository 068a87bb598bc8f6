"""A torch-ready dataset over :class:`~mobiledepth.data.diw.DiwData` and its collate function.

Each item is one image resized to the model input, with all of its pairs mapped to the
resized grid (SPEC §2: floor + clamp, nudge on collision). ``collate`` pads the pairs of a
batch to the longest list and returns a mask, so images with 1 and with 8 pairs can share
a batch. torch is imported inside the functions that build tensors.
"""

from __future__ import annotations

import numpy as np

from mobiledepth.data.depthmap import find_depth, load_depth
from mobiledepth.data.diw import DiwData, load_image, map_pairs, resize_image, to_chw_float


class DiwDataset:
    """Indexable dataset: ``ds[i]`` -> dict of tensors (image, points, rel[, depth]).

    The pairs of every sample are held in three flat numpy arrays (points, relations, offsets)
    and the image paths in one byte array, not in per-sample Python objects: DataLoader workers
    forked from the trainer then share those pages instead of copying them as reference counts
    change. Images are decoded on demand (JPEGs at reduced scale with ``PIL.Image.draft`` when
    ``draft``); ``cache`` keeps the resized images of the first ``cache_limit_bytes`` in memory.
    ``uint8``: items carry the image as uint8 3 x H x W (a quarter of the bytes across the DataLoader's
    worker boundary and to the GPU); ``compute.device.to_device`` makes it float on the device."""

    def __init__(
        self,
        data: DiwData,
        input_size: tuple[int, int],
        with_depth: bool = False,
        cache: bool = False,
        draft: bool = False,
        cache_limit_bytes: int = 1 << 30,
        uint8: bool = False,
    ) -> None:
        self.data = data
        self.uint8 = uint8
        self.input_size = tuple(input_size)
        self.with_depth = with_depth
        self.draft = draft
        height, width = self.input_size
        self.cache = cache and len(data.samples) * height * width * 3 <= cache_limit_bytes
        self._images: dict[int, np.ndarray] = {}
        self._paths = np.array([str(sample.image).encode() for sample in data.samples])
        self._points, self._rel, self._offsets = self._map_pairs(data.samples)

    def __len__(self) -> int:
        return len(self._paths)

    def _map_pairs(self, samples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        counts = np.array([len(sample.pairs) for sample in samples], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        pairs = [pair for sample in samples for pair in sample.pairs]
        points = map_pairs(pairs, self.input_size)
        rel = np.array([p.rel for p in pairs], dtype=np.float32)
        return points, rel, offsets

    def pairs(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(points at the input size, relations) of sample ``index``."""
        start, stop = self._offsets[index], self._offsets[index + 1]
        return self._points[start:stop], self._rel[start:stop]

    def image_uint8(self, index: int) -> np.ndarray:
        """The resized uint8 H x W x 3 image (cached in memory when ``cache``)."""
        if index in self._images:
            return self._images[index]
        path = self._paths[index].decode()
        image = resize_image(load_image(path, self.input_size if self.draft else None), self.input_size)
        if self.cache:
            self._images[index] = image
        return image

    def depth(self, index: int) -> np.ndarray:
        """The companion depth map resized (bilinear) to the input size, float32 H x W."""
        from PIL import Image

        sample = self.data.samples[index]
        path = find_depth(sample.image)
        if path is None:
            from mobiledepth.errors import UserError

            raise UserError(f"no depth map beside {sample.image} (expected {sample.image.stem}.depth.npy)")
        depth = load_depth(path)
        height, width = self.input_size
        if depth.shape != (height, width):
            depth = np.array(Image.fromarray(depth).resize((width, height), Image.BILINEAR), dtype=np.float32)
        return depth

    def _chw(self, image: np.ndarray) -> np.ndarray:
        """uint8 H x W x 3 -> the item's 3 x H x W image: uint8 when ``uint8``, else float32 in [0, 1]."""
        return np.ascontiguousarray(image.transpose(2, 0, 1)) if self.uint8 else to_chw_float(image)

    def __getitem__(self, index: int) -> dict:
        import torch

        points, rel = self.pairs(index)
        item = {
            "image": torch.from_numpy(self._chw(self.image_uint8(index))),
            "points": torch.from_numpy(points),
            "rel": torch.from_numpy(rel),
            "index": index,
        }
        if self.with_depth:
            item["depth"] = torch.from_numpy(self.depth(index))[None]
        return item


def collate(batch: list[dict]) -> dict:
    """Stack images; pad pairs to the longest list with a boolean ``mask`` (False = padding)."""
    import torch

    k = max(item["points"].shape[0] for item in batch)
    n = len(batch)
    points = torch.zeros(n, k, 4, dtype=torch.long)
    rel = torch.zeros(n, k, dtype=torch.float32)
    mask = torch.zeros(n, k, dtype=torch.bool)
    for i, item in enumerate(batch):
        m = item["points"].shape[0]
        points[i, :m] = item["points"]
        rel[i, :m] = item["rel"]
        mask[i, :m] = True
    out = {
        "image": torch.stack([item["image"] for item in batch]),
        "points": points,
        "rel": rel,
        "mask": mask,
        "index": torch.tensor([item["index"] for item in batch]),
    }
    if "depth" in batch[0]:
        out["depth"] = torch.stack([item["depth"] for item in batch])
    return out
