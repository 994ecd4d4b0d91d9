"""Lean EXR read/write for the server's own cache files (spilled plates, alphas, masks).

These files have a fixed layout that the server wrote itself: data window =
display window at the origin, channels R,G,B or A, half or float, no NaN. So they
skip the general reader in `mam2_server.io` (layers, windows, metadata,
sanitising). That reader is right for user files but costs 3-5x more per 1080p
frame. Files that do not match the layout fall back to it. Writes are atomic:
a temp file in the same directory, then a rename.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Sequence

import numpy as np
import OpenImageIO as oiio

from mam2_server.io import ImageIOError

_TYPES = {np.dtype(np.float16): oiio.HALF, np.dtype(np.float32): oiio.FLOAT}


def write_exr(path: Path, pixels: np.ndarray, channels: Sequence[str], compression: str = "zip") -> None:
    """Write (H, W, C) float16/float32 pixels; the file stores the array's own type."""
    arr = np.ascontiguousarray(pixels)
    if arr.dtype not in _TYPES:
        arr = arr.astype(np.float32)
    h, w, c = arr.shape
    spec = oiio.ImageSpec(w, h, c, _TYPES[arr.dtype])
    spec.channelnames = tuple(channels)
    spec.attribute("compression", compression)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp.exr")
    out = oiio.ImageOutput.create(str(tmp))
    if out is None:
        raise ImageIOError(f"{path}: no EXR writer ({oiio.geterror()})")
    try:
        if not out.open(str(tmp), spec) or not out.write_image(arr):
            raise ImageIOError(f"{path}: cannot write ({out.geterror() or oiio.geterror()})")
        out.close()
        os.replace(tmp, path)
    except BaseException:
        out.close()
        tmp.unlink(missing_ok=True)
        raise


def read_exr(path: Path, channels: Sequence[str]) -> np.ndarray:
    """(H, W, len(channels)) float32 of a file written by `write_exr` (else via mam2_server.io)."""
    inp = oiio.ImageInput.open(str(path))
    if inp is None:
        raise ImageIOError(f"{path}: cannot open ({oiio.geterror()})")
    try:
        spec = inp.spec()
        own = (tuple(spec.channelnames) == tuple(channels) and spec.x == spec.y == 0 == spec.full_x == spec.full_y
               and (spec.width, spec.height) == (spec.full_width, spec.full_height))
        if own:
            data = inp.read_image(0, 0, 0, len(channels), oiio.FLOAT)
            if data is None or inp.has_error:
                raise ImageIOError(f"{path}: cannot read ({inp.geterror() or oiio.geterror()})")
            return np.asarray(data, np.float32).reshape(spec.height, spec.width, len(channels))
    finally:
        inp.close()
    from mam2_server.io import read_image, to_display_window
    return to_display_window(read_image(str(path), channels=list(channels)))
