"""The one small interface every dataset reader implements, and the background folder.

A reader lists its items when it is opened (so a wrong or incomplete layout fails at
once, naming the folder or file) and reads one item on request as a `RawSample` at the
files' own resolution; augmentation, cropping and resizing happen later
(`mam2_server.train.augment`). `read` takes the generator that decides everything random
about the item (which frames, which object), so an item is a pure function of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from mam2_server.data.files import DatasetLayoutError, IMAGE_EXTS, read_rgb

__all__ = ["DATA_KINDS", "RawSample", "DatasetReader", "Backgrounds", "pick_frames"]

# the paper's four data types (A.3, Table 7)
DATA_KINDS = ("image_seg", "image_matting", "video_seg", "video_matting")


@dataclass
class RawSample:
    """One item before augmentation: T frames at the files' resolution."""

    kind: str  # one of DATA_KINDS
    targets: list[np.ndarray]  # (H, W) float32: alpha in [0, 1] (matting) or a {0, 1} mask (segmentation)
    frames: list[np.ndarray] | None = None  # (H, W, 3) uint8 sRGB images, when the item is a photograph
    fgs: list[np.ndarray] | None = None  # (H, W, 3) uint8 sRGB foregrounds, composited over a background
    backgrounds: list[np.ndarray] | None = None  # the dataset's own backgrounds for `fgs` (VM108), else None
    source: str = ""  # the file of frame 0 (for messages)

    def __post_init__(self) -> None:
        if (self.frames is None) == (self.fgs is None):
            raise ValueError("a RawSample has either frames or foregrounds")

    @property
    def soft(self) -> bool:
        return self.kind in ("image_matting", "video_matting")


class DatasetReader(Protocol):
    """What the training mix needs from a dataset."""

    kind: str  # one of DATA_KINDS
    root: Path  # the folder it was opened from
    layout: str  # the recognised layout, e.g. "DUTS (*-Image / *-Mask)"

    def __len__(self) -> int: ...

    def read(self, index: int, num_frames: int, rng: np.random.Generator) -> RawSample | None:
        """Item `index` with `num_frames` frames (1 for image kinds); None if it has nothing usable."""


def pick_frames(count: int, num_frames: int, rng: np.random.Generator, *, max_stride: int = 3,
                starts: list[int] | None = None) -> list[int]:
    """`num_frames` increasing frame indices out of `count`: a random start (one of `starts` when given)
    and stride (1..max_stride, as the clip allows); past the clip's end the last frame repeats."""
    if count <= 0:
        raise ValueError("a clip needs at least one frame")
    stride = 1 if num_frames <= 1 else int(rng.integers(1, max(1, min(max_stride, (count - 1) // (num_frames - 1))) + 1))
    if starts:
        start = int(starts[int(rng.integers(len(starts)))])
    else:
        start = int(rng.integers(max(1, count - stride * (max(num_frames, 1) - 1))))
    return [min(start + i * stride, count - 1) for i in range(max(num_frames, 1))]


class Backgrounds:
    """Background images for compositing (a folder such as BG-20k's train/ or COCO's train2017/, searched
    recursively)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetLayoutError(f"--backgrounds {self.root}: not a folder")
        self.files = sorted(p for p in self.root.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
        if not self.files:
            raise DatasetLayoutError(f"--backgrounds {self.root}: no images ({', '.join(IMAGE_EXTS)}) in it or "
                                     "below it")

    def __len__(self) -> int:
        return len(self.files)

    def read(self, rng: np.random.Generator) -> np.ndarray:
        """A random background, (H, W, 3) uint8 sRGB."""
        return read_rgb(self.files[int(rng.integers(len(self.files)))])
