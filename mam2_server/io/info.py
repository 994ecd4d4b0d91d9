"""Image containers and data-window <-> display-window placement.

Vocabulary (OpenEXR / Nuke):

* **data window** (Nuke "bbox"): the pixels actually stored, origin (x, y), size
  width x height. May be smaller than, offset inside, or bigger than (overscan)
  the display window, and may have negative origin.
* **display window** (Nuke "format"): the frame the comp works in, origin
  (full_x, full_y), size full_width x full_height. Engines and prompts use pixel
  coordinates of this window, origin top-left.

All arrays are float32 with shape (rows, columns, channels).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["ImageIOError", "ImageInfo", "Image", "to_display_window", "from_display_window"]


class ImageIOError(IOError):
    """An image file could not be read or written; the message names the file and the problem."""


@dataclass
class ImageInfo:
    """Header of one image: windows, channels, storage type and every other attribute.

    `metadata` holds all extra attributes of the file's OIIO spec (compression,
    camera matrices, ``nuke/...`` keys, ``oiio:ColorSpace``...) so that writing an
    image with this info reproduces them. `attribute_types` remembers each
    attribute's OIIO type name (e.g. 'matrix', 'rational') so that a matrix is not
    written back as a plain float array; it is filled by the reader and optional.
    """

    x: int
    y: int
    width: int
    height: int
    full_x: int = 0
    full_y: int = 0
    full_width: int = -1  # -1: same as the data window (filled in __post_init__)
    full_height: int = -1
    channels: tuple[str, ...] = ()
    pixel_type: str = "half"
    metadata: dict[str, object] = field(default_factory=dict)
    attribute_types: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.full_width < 0:
            self.full_width = self.width
        if self.full_height < 0:
            self.full_height = self.height
        self.channels = tuple(self.channels)
        if self.width <= 0 or self.height <= 0 or self.full_width <= 0 or self.full_height <= 0:
            raise ValueError(f"image windows must not be empty: data {self.data_window}, display {self.display_window}")

    @classmethod
    def for_size(cls, width: int, height: int, channels: tuple[str, ...] = (), pixel_type: str = "half") -> ImageInfo:
        """Info of a plain image whose data window equals its display window at the origin."""
        return cls(0, 0, width, height, 0, 0, width, height, tuple(channels), pixel_type)

    @property
    def data_window(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the stored pixels."""
        return (self.x, self.y, self.width, self.height)

    @property
    def display_window(self) -> tuple[int, int, int, int]:
        """(full_x, full_y, full_width, full_height)."""
        return (self.full_x, self.full_y, self.full_width, self.full_height)

    @property
    def data_is_display(self) -> bool:
        """True when no placement is needed (the common case: no bbox, no overscan)."""
        return self.data_window == self.display_window

    def copy(self, **changes: object) -> ImageInfo:
        """A copy with fresh metadata dicts (and `changes` applied), safe to modify."""
        out = replace(self, metadata=dict(self.metadata), attribute_types=dict(self.attribute_types))
        for key, value in changes.items():
            setattr(out, key, value)
        out.__post_init__()
        return out


@dataclass
class Image:
    """Pixels over the data window: `pixels` is (info.height, info.width, len(info.channels)) float32."""

    pixels: np.ndarray
    info: ImageInfo


def _overlap(info: ImageInfo) -> tuple[slice, slice, slice, slice] | None:
    """(data rows, data cols, display rows, display cols) slices of the two windows' intersection."""
    x0, y0 = max(info.x, info.full_x), max(info.y, info.full_y)
    x1 = min(info.x + info.width, info.full_x + info.full_width)
    y1 = min(info.y + info.height, info.full_y + info.full_height)
    if x0 >= x1 or y0 >= y1:
        return None  # the bbox lies entirely outside the format: nothing visible
    return (slice(y0 - info.y, y1 - info.y), slice(x0 - info.x, x1 - info.x),
            slice(y0 - info.full_y, y1 - info.full_y), slice(x0 - info.full_x, x1 - info.full_x))


def to_display_window(image: Image) -> np.ndarray:
    """Place data-window pixels in the display window.

    Returns (full_height, full_width, C) float32: pixels at their offset, 0 where the
    data window does not cover the display window, overscan outside it cropped.
    """
    info, pixels = image.info, image.pixels
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[:2] != (info.height, info.width):
        raise ValueError(f"pixels {pixels.shape[:2]} do not match the data window {info.height}x{info.width} (HxW)")
    if info.data_is_display:
        return np.ascontiguousarray(pixels, dtype=np.float32)
    full = np.zeros((info.full_height, info.full_width, pixels.shape[2]), np.float32)
    overlap = _overlap(info)
    if overlap is not None:
        dr, dc, fr, fc = overlap
        full[fr, fc] = pixels[dr, dc]
    return full


def from_display_window(full: np.ndarray, info: ImageInfo) -> np.ndarray:
    """Inverse of `to_display_window`: cut the data window out of a display-window array.

    full: (full_height, full_width[, C]). Returns (height, width[, C]) float32 (same
    rank as `full`); parts of the data window outside the display window are 0.
    """
    if full.shape[:2] != (info.full_height, info.full_width):
        raise ValueError(f"array {full.shape[:2]} does not match the display window "
                         f"{info.full_height}x{info.full_width} (HxW)")
    if info.data_is_display:
        return np.ascontiguousarray(full, dtype=np.float32)
    out = np.zeros((info.height, info.width) + full.shape[2:], np.float32)
    overlap = _overlap(info)
    if overlap is not None:
        dr, dc, fr, fc = overlap
        out[dr, dc] = full[fr, fc]
    return out
