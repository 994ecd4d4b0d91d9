"""Masks for prompts (the roto workflow): any image OpenImageIO reads, placed in the display window.

The object is where the mask's `A` channel (else its first channel) is above 0.5; an `A` that is
the same everywhere while the colour varies (a PNG saved with an opaque alpha) carries no shape, so
the first colour channel is used then. A mask with a data window smaller than its display window
(an EXR from Nuke with a bbox) is placed where it belongs; outside the data window is not the
object. (A prompt refuses a mask that covers its whole frame: nothing would be background.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mam2_server.io.image import read_image
from mam2_server.io.info import ImageIOError, to_display_window


def read_mask(path: str | Path) -> np.ndarray:
    """(H, W) float32 0/1 over the display window: 1 where `A` (else the first channel) > 0.5."""
    image = read_image(path)
    names = [c.rsplit(".", 1)[-1] for c in image.info.channels]
    channel = names.index("A") if "A" in names else 0
    colour = [i for i, n in enumerate(names) if n != "A"]
    px = image.pixels
    # an alpha the same over the whole frame says nothing: the shape is in the colour (a data window
    # smaller than the frame is a shape's bbox, whose alpha may well be uniform inside it)
    if ("A" in names and colour and image.info.data_is_display and np.ptp(px[..., channel]) == 0
            and np.ptp(px[..., colour[0]]) > 0):
        channel = colour[0]
    image.pixels = np.ascontiguousarray(px[..., channel:channel + 1])
    full = to_display_window(image)[..., 0]
    if not np.isfinite(full).all():
        raise ImageIOError(f"{path}: mask has NaN or inf values")
    return (full > 0.5).astype(np.float32)
