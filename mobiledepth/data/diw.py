"""The DIW ("Depth in the Wild", Chen et al. 2016) annotation format: read, validate, map.

Layout (SPEC §2)::

    ROOT/DIW_Annotations/DIW_test.csv      two lines per sample:
        ./DIW_test/<sha1>.thumb            image path relative to ROOT ('./' stripped)
        118,70,257,291,>,500,333           y_A,x_A,y_B,x_B,rel,width,height
    ROOT/DIW_test/<sha1>.thumb             JPEG (some grayscale)

Coordinates are 1-based, y first, in pixels of the original ``width x height`` image;
``rel`` is ``>`` (A farther, +1), ``<`` (A closer, -1) or ``=`` (0). Several samples may name
the same image: their pairs are grouped into one :class:`Sample` (that is how the synthetic
training split stores several pairs per image, while staying plain DIW format).

Everything here is numpy + PIL; nothing imports torch.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobiledepth.errors import UserError

RELATIONS: dict[str, int] = {">": 1, "<": -1, "=": 0}
SYMBOLS: dict[int, str] = {v: k for k, v in RELATIONS.items()}
PROBLEM_KINDS = ("empty", "malformed", "relation", "bounds", "escape", "missing", "corrupt")
_KIND_TEXT = {
    "empty": "empty annotation file",
    "malformed": "malformed line",
    "relation": "unknown relation",
    "bounds": "coordinate outside the image",
    "escape": "path escapes the dataset root",
    "missing": "missing image",
    "corrupt": "undecodable image",
}


@dataclass(frozen=True, slots=True)
class OrdinalPair:
    """One annotated pair, 0-based (y, x) in the original ``height x width`` image."""

    ya: int
    xa: int
    yb: int
    xb: int
    rel: int
    width: int
    height: int
    line: int = 0  # 1-based CSV line of the pair (for messages)

    def to_csv(self) -> str:
        """The pair as a DIW CSV line (1-based, y first)."""
        return (
            f"{self.ya + 1},{self.xa + 1},{self.yb + 1},{self.xb + 1},"
            f"{SYMBOLS[self.rel]},{self.width},{self.height}"
        )


class Sample:
    """One image and all of its annotated pairs.

    ``image`` (``root / path``) is made when asked for: an index of 495K samples holds no Path
    object per row (``read_annotations`` passes ``root=``)."""

    __slots__ = ("path", "_image", "_root", "pairs", "line")

    def __init__(self, path: str, image: Path | None = None, pairs: list[OrdinalPair] | None = None, line: int = 0,
                 *, root: Path | None = None) -> None:
        if image is None and root is None:
            raise TypeError("Sample needs image= or root=")
        self.path = path  # as written in the CSV, without a leading './'
        self._image, self._root = image, root
        self.pairs = [] if pairs is None else pairs
        self.line = line  # 1-based CSV line where the image first appears

    @property
    def image(self) -> Path:
        """The image file: ROOT / path (made on each call, not kept: 495K kept Paths are ~150 MB)."""
        return self._image if self._image is not None else self._root / self.path

    @property
    def original_size(self) -> tuple[int, int]:
        """(height, width) of the original image, from its first annotation."""
        return self.pairs[0].height, self.pairs[0].width

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sample):
            return NotImplemented
        return (self.path, self.image, self.pairs, self.line) == (other.path, other.image, other.pairs, other.line)

    def __repr__(self) -> str:
        return f"Sample(path={self.path!r}, pairs={len(self.pairs)}, line={self.line})"


@dataclass(frozen=True)
class Problem:
    line: int
    kind: str  # one of PROBLEM_KINDS
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ValidationReport:
    """Every problem of an annotation file, found in one pass."""

    csv: Path
    root: Path
    images: int
    pairs: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        """Number of problems per kind (only kinds that occur)."""
        return dict(Counter(p.kind for p in self.problems))

    def summary(self, first: int = 3) -> str:
        """One line: the count per kind and the first few problem lines."""
        if self.ok:
            return f"{self.csv.name}: {self.images} images, {self.pairs} pairs, no problems"
        kinds = ", ".join(f"{n} {_KIND_TEXT[k]}" for k, n in sorted(self.counts().items()))
        shown = "; ".join(str(p) for p in self.problems[:first])
        more = f"; ... {len(self.problems) - first} more" if len(self.problems) > first else ""
        return f"{len(self.problems)} problem(s) in {self.csv} ({kinds}): {shown}{more}"


@dataclass
class DiwData:
    """A loaded, validated dataset: the samples to use and where they came from."""

    root: Path
    csv: Path
    samples: list[Sample]
    report: ValidationReport
    skipped_pairs: int = 0
    skipped_images: int = 0  # images dropped by skip_bad (missing, escaping or undecodable)

    @property
    def name(self) -> str:
        return self.csv.stem

    @property
    def num_pairs(self) -> int:
        return sum(len(s.pairs) for s in self.samples)

    def hash(self) -> str:
        """sha256 of the annotation CSV (the images are named by it; they are not hashed)."""
        from mobiledepth.io import sha256_file

        return sha256_file(self.csv)

    def describe(self) -> dict:
        """The ``dataset`` block of an eval record."""
        return {
            "name": self.name,
            "root": str(self.root),
            "csv": str(self.csv),
            "hash": self.hash(),
            "images": len(self.samples),
            "pairs": self.num_pairs,
            "skipped_pairs": self.skipped_pairs,
            "skipped_images": self.skipped_images,
        }


# --------------------------------------------------------------------------- locating
def resolve_annotations(data: str | os.PathLike, split: str | None = None) -> tuple[Path, Path]:
    """Find ``(csv, root)`` from a dataset directory or a CSV path.

    A CSV inside ``DIW_Annotations/`` has the folder above as its root, any other CSV its
    own folder. A directory is searched for ``DIW_Annotations/*.csv`` and ``*.csv``; ``split``
    (e.g. ``train`` or ``test``) picks the file whose name, without a ``DIW_`` prefix, starts
    with it (``train`` picks ``DIW_train_val.csv``).
    """
    path = Path(data)
    if not path.exists():
        raise UserError(f"dataset not found: {path} (pass a DIW root folder or its annotation CSV)")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise UserError(f"{path} is not a .csv annotation file (pass the CSV or the dataset folder)")
        root = path.parent.parent if path.parent.name == "DIW_Annotations" else path.parent
        return path, root
    candidates = sorted((path / "DIW_Annotations").glob("*.csv")) + sorted(path.glob("*.csv"))
    if split:
        candidates = [c for c in candidates if _split_name(c).startswith(split.lower())]
    if not candidates:
        what = f" for split '{split}'" if split else ""
        raise UserError(
            f"no annotation CSV{what} in {path} (expected DIW_Annotations/*.csv; "
            "generate one with 'mobiledepth data synth' or pass the CSV path)"
        )
    if len(candidates) > 1:
        names = ", ".join(str(c.relative_to(path)) for c in candidates)
        raise UserError(f"several annotation CSVs in {path} ({names}); pass --split or the CSV path")
    return candidates[0], path


def _split_name(csv_path: Path) -> str:
    """'DIW_train_val.csv' -> 'train_val' (the split a CSV holds, by name)."""
    stem = csv_path.stem.lower()
    return stem[4:] if stem.startswith("diw_") else stem


# --------------------------------------------------------------------------- parsing
def _parse_pair(text: str, line: int) -> tuple[OrdinalPair | None, list[Problem]]:
    fields = text.split(",")
    if len(fields) != 7:
        return None, [Problem(line, "malformed", f"expected 7 fields y_A,x_A,y_B,x_B,rel,width,height, got {text!r}")]
    rel_text = fields[4].strip()
    try:
        ya, xa, yb, xb, width, height = _integers(fields)
    except ValueError:
        return None, [Problem(line, "malformed", f"non-numeric coordinate in {text!r}")]
    problems = []
    if rel_text not in RELATIONS:
        problems.append(Problem(line, "relation", f"unknown relation {rel_text!r} (expected >, < or =)"))
    if width < 1 or height < 1:
        problems.append(Problem(line, "bounds", f"image size {width}x{height} is not positive"))
    else:
        for name, y, x in (("A", ya, xa), ("B", yb, xb)):
            if not (1 <= y <= height and 1 <= x <= width):
                problems.append(
                    Problem(line, "bounds", f"point {name} (y={y}, x={x}) outside the {width}x{height} image (1-based)")
                )
    if problems:
        return None, problems
    return OrdinalPair(ya - 1, xa - 1, yb - 1, xb - 1, RELATIONS[rel_text], width, height, line), []


def _integers(fields: list[str]) -> tuple[int, ...]:
    """y_A, x_A, y_B, x_B, width, height: integers, or floats written as them (``12.0``, truncated)."""
    try:  # int() takes surrounding spaces: the common case needs no float round trip
        return int(fields[0]), int(fields[1]), int(fields[2]), int(fields[3]), int(fields[5]), int(fields[6])
    except ValueError:
        return tuple(int(float(fields[i])) for i in (0, 1, 2, 3, 5, 6))


class _PathChecker:
    """Where each CSV image path leads: an ``escape`` problem, a ``missing`` one, or usable.

    The root and every image folder are resolved once (``realpath``); an image itself costs one
    ``lstat``, and only a symbolic link is resolved — at DIW scale (495K paths) that is the
    difference between a realpath per row and a syscall per row."""

    def __init__(self, root: Path, check_files: bool) -> None:
        self.root, self.check_files = root, check_files
        self.base = os.path.normpath(str(root))
        self.real_base = os.path.realpath(self.base)
        self._folders: dict[str, bool] = {}  # folder relative to the root -> it escapes

    def problem(self, rel_path: str, line: int) -> Problem | None:
        """The path's problem (escape first, then missing when files are checked), None when usable."""
        norm = os.path.normpath(rel_path)
        if os.path.isabs(rel_path) or norm == ".." or norm.startswith("../"):
            return Problem(line, "escape", f"image path {rel_path!r} escapes the dataset root {self.root}")
        joined = os.path.join(self.base, norm)
        if self._escaped_folder(os.path.dirname(norm)):
            return self._link_escape(rel_path, line, os.path.realpath(joined))
        mode = _mode(joined, follow=False)
        if mode is not None and stat.S_ISLNK(mode):
            real = os.path.realpath(joined)
            if not self._inside(real):
                return self._link_escape(rel_path, line, real)
            mode = _mode(joined, follow=True)
        if self.check_files and (mode is None or not stat.S_ISREG(mode)):
            return Problem(line, "missing", f"image {rel_path} not found under {self.root}")
        return None

    def _link_escape(self, rel_path: str, line: int, real: str) -> Problem:
        return Problem(line, "escape", f"image {rel_path} is a link that escapes the dataset root {self.root} (to {real})")

    def _escaped_folder(self, folder: str) -> bool:
        """Whether ``folder`` (relative to the root) resolves outside the root (resolved once per folder)."""
        if folder not in self._folders:
            self._folders[folder] = not self._inside(os.path.realpath(os.path.join(self.base, folder)))
        return self._folders[folder]

    def _inside(self, real: str) -> bool:
        return os.path.commonpath([real, self.real_base]) == self.real_base


def _mode(path: str, follow: bool) -> int | None:
    """``st_mode`` of ``path`` (of the link itself unless ``follow``), None when there is nothing there."""
    try:
        return (os.stat if follow else os.lstat)(path).st_mode
    except OSError:
        return None


def _nonblank_lines(csv_path: Path):
    """``(1-based line number, stripped text)`` of the CSV's non-blank lines, read as a stream (a UTF-8
    byte-order mark, as spreadsheet tools write, is dropped); a binary file is a one-line UserError."""
    try:
        with open(csv_path, encoding="utf-8-sig", newline=None) as handle:
            for number, text in enumerate(handle, 1):
                text = text.strip()
                if text:
                    yield number, text
    except UnicodeDecodeError:
        raise UserError(f"{csv_path} is not a text CSV (expected the DIW two-line format)") from None


def read_annotations(
    csv_path: str | os.PathLike, root: str | os.PathLike, check_files: bool = True
) -> tuple[list[Sample], list[Problem], tuple[int, int]]:
    """Parse a DIW CSV: samples (good pairs only), every problem found, and (images, pairs) in the file.

    The file is streamed two lines at a time, so memory grows with the samples kept, not the file."""
    csv_path, root = Path(csv_path), Path(root)
    paths = _PathChecker(root, check_files)
    problems: list[Problem] = []
    seen: dict[str, Sample | bool] = {}  # rel path -> its sample once it has a good pair; else usable or not
    samples: list[Sample] = []  # in the order of their first good pair
    total = 0
    lines = _nonblank_lines(csv_path)
    for path_line, path_text in lines:
        second = next(lines, None)
        if second is None:
            problems.append(Problem(path_line, "malformed", "odd number of lines: an image path without its pair line"))
            break
        pair_line, pair_text = second
        total += 1
        rel_path = path_text[2:] if path_text.startswith("./") else path_text
        if "," in rel_path and rel_path.split(",")[0].strip().lstrip("-").isdigit():
            problems.append(Problem(path_line, "malformed", f"expected an image path, got {path_text!r}"))
            continue
        if rel_path not in seen:
            problem = paths.problem(rel_path, path_line)
            if problem is not None:
                problems.append(problem)
            seen[rel_path] = problem is None
        pair, pair_problems = _parse_pair(pair_text, pair_line)
        problems.extend(pair_problems)
        sample = seen[rel_path]
        if pair is None or sample is False:
            continue
        if sample is True:
            sample = seen[rel_path] = Sample(rel_path, pairs=[], line=path_line, root=root)
            samples.append(sample)
        sample.pairs.append(pair)
    if total == 0 and not problems:
        problems.append(Problem(1, "empty", f"{csv_path.name} holds no samples (expected image path / pair lines)"))
    problems.sort(key=lambda p: p.line)
    return samples, problems, (len(seen), total)


def decode_problems(samples: list[Sample]) -> list[Problem]:
    """Decode every sample's image fully; one ``corrupt`` problem per image PIL cannot decode."""
    problems = []
    for sample in samples:
        try:
            load_image(sample.image)
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad files
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            problems.append(Problem(sample.line, "corrupt", f"image {sample.path} cannot be decoded ({reason})"))
    return problems


def validate(data: str | os.PathLike, split: str | None = None, check_files: bool = True) -> ValidationReport:
    """Check an annotation file completely (decoding every image) and report every problem at once."""
    csv_path, root = resolve_annotations(data, split)
    samples, problems, (images, pairs) = read_annotations(csv_path, root, check_files)
    if check_files:
        problems = sorted(problems + decode_problems(samples), key=lambda p: p.line)
    return ValidationReport(csv_path, root, images, pairs, problems)


def load_dataset(
    data: str | os.PathLike, split: str | None = None, skip_bad: bool = False, check_files: bool = True,
    limit: int | None = None,
) -> DiwData:
    """Read and validate a DIW-format dataset; raise one UserError listing all problems unless ``skip_bad``.

    The whole CSV is validated; the images of the first ``limit`` samples (all without a limit)
    are decoded, so a corrupt image fails (or, with ``skip_bad``, is dropped) before any work."""
    csv_path, root = resolve_annotations(data, split)
    usable, problems, (images, total) = read_annotations(csv_path, root, check_files)
    samples = usable[:limit] if limit is not None else usable
    corrupt = decode_problems(samples) if check_files else []
    problems = sorted(problems + corrupt, key=lambda p: p.line)
    report = ValidationReport(csv_path, root, images, total, problems)
    if problems and not skip_bad:
        raise UserError(report.summary() + " — fix the annotations or pass --skip-bad to drop bad samples")
    bad_lines = {p.line for p in corrupt}  # a sample's line is the unique line its image first appears on
    dropped = [s for s in samples if s.line in bad_lines]
    samples = [s for s in samples if s.line not in bad_lines]
    if not samples:
        raise UserError(f"no usable samples in {csv_path} ({len(problems)} problem(s)); check the dataset root {root}")
    pairs_of = lambda group: sum(len(s.pairs) for s in group)  # noqa: E731
    unusable = sum(1 for p in problems if p.kind in ("missing", "escape"))
    return DiwData(root, csv_path, samples, report, skipped_pairs=total - pairs_of(usable) + pairs_of(dropped),
                   skipped_images=unusable + len(dropped))


# --------------------------------------------------------------------------- images and coordinates
def load_image(path: str | os.PathLike, draft: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image (JPEG ``.thumb`` or any PIL format) as uint8 H x W x 3; grayscale is replicated.

    ``draft = (H, W)``: a JPEG at least twice that size in both axes is decoded at 1/2, 1/4 or 1/8
    scale (``PIL.Image.draft``, never below ``draft``) — a cheaper decode before a downscale."""
    from PIL import Image

    with Image.open(path) as img:
        if draft is not None:
            img.draft("RGB", (int(draft[1]), int(draft[0])))
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def prepare_image(path: str | os.PathLike, size: tuple[int, int], draft: bool = False) -> np.ndarray:
    """Load an image and resize it (bilinear) to ``size = (H, W)``: float32 3 x H x W in [0, 1].

    ``draft``: decode large JPEGs at reduced scale first (see :func:`load_image`)."""
    return to_chw_float(resize_image(load_image(path, size if draft else None), size))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 H x W x 3 image to ``size = (H, W)``."""
    from PIL import Image

    height, width = size
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def to_chw_float(image: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 -> float32 3 x H x W in [0, 1]."""
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0


def map_points(ys, xs, src_size: tuple[int, int], dst_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Map 0-based pixel coordinates from a ``src (H, W)`` image to a ``dst (H, W)`` one: floor, then clamp."""
    ys, xs = np.asarray(ys, dtype=np.int64), np.asarray(xs, dtype=np.int64)
    (sh, sw), (dh, dw) = src_size, dst_size
    my = np.clip((ys * dh) // sh, 0, dh - 1)
    mx = np.clip((xs * dw) // sw, 0, dw - 1)
    return my, mx


def map_pair(pair: OrdinalPair, dst_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A pair's (ya, xa, yb, xb) at ``dst_size``; if A and B land on one pixel, B is nudged one pixel.

    The nudge goes along the axis on which B was farther from A in the original image, towards
    where B was (the other direction, or the other axis, when that leaves the image).
    """
    (ya, yb), (xa, xb) = map_points([pair.ya, pair.yb], [pair.xa, pair.xb], (pair.height, pair.width), dst_size)
    ya, xa, yb, xb = int(ya), int(xa), int(yb), int(xb)
    if (ya, xa) != (yb, xb):
        return ya, xa, yb, xb
    dy, dx = pair.yb - pair.ya, pair.xb - pair.xa
    sy, sx = (1 if dy >= 0 else -1), (1 if dx >= 0 else -1)
    moves = [(0, sx), (sy, 0), (0, -sx), (-sy, 0)] if abs(dx) >= abs(dy) else [(sy, 0), (0, sx), (-sy, 0), (0, -sx)]
    height, width = dst_size
    for my, mx in moves:
        ny, nx = yb + my, xb + mx
        if 0 <= ny < height and 0 <= nx < width:
            return ya, xa, ny, nx
    return ya, xa, yb, xb  # a 1x1 target: nothing to nudge to


def map_pairs(pairs, dst_size: tuple[int, int]) -> np.ndarray:
    """Every pair's (ya, xa, yb, xb) at ``dst_size`` as an (n, 4) int64 array: :func:`map_pair` vectorised
    (the pairs whose points land on one pixel take its nudge, one by one)."""
    fields = np.array([(p.ya, p.xa, p.yb, p.xb, p.height, p.width) for p in pairs], dtype=np.int64).reshape(-1, 6)
    ya, xa, yb, xb, height, width = fields.T
    ys, xs = map_points(np.stack([ya, yb]), np.stack([xa, xb]), (height, width), dst_size)
    points = np.stack([ys[0], xs[0], ys[1], xs[1]], axis=1)
    for i in np.flatnonzero((points[:, 0] == points[:, 2]) & (points[:, 1] == points[:, 3])):
        points[i] = map_pair(pairs[i], dst_size)
    return points


def write_annotations(path: str | os.PathLike, entries: list[tuple[str, OrdinalPair]]) -> Path:
    """Write ``(relative image path, pair)`` entries as a DIW CSV, atomically."""
    from mobiledepth.io import write_text_atomic

    lines = []
    for rel_path, pair in entries:
        lines.append(rel_path if rel_path.startswith("./") else "./" + rel_path)
        lines.append(pair.to_csv())
    return write_text_atomic(path, "\n".join(lines) + "\n")
