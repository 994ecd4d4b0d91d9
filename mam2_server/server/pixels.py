"""Pixels from the wire (raw buffers, EXR bytes) to arrays, and alphas back to the wire.

Image files and EXR bytes go through `mam2_server.io` (OpenImageIO); files named by
path are read by `files.FileReader`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mam2_server import protocol as P
from mam2_server.io.image import Image, decode_image, encode_image, read_info, sanitise, to_display_window
from mam2_server.protocol import ProtocolError
from mam2_server.io.exr_layout import ExrLayoutError, check_complete
from mam2_server.server.files import sniff


@dataclass
class DecodedImage:
    pixels: np.ndarray  # (H, W, C) float16 or float32, C in 1, 3, 4
    sanitised: bool  # NaN/inf were replaced
    digest: str  # sha256 of the pixels as received (identifies the frame's content)


def _display_window(image: Image) -> np.ndarray:
    return image.pixels if image.info.data_is_display else to_display_window(image)


def _exr_pixels(data: bytes | memoryview, width: int, height: int) -> np.ndarray:
    check_exr_buffer(data)
    try:  # overscan is normal, a data window far beyond the frame would exhaust memory
        image = decode_image(bytes(data), suffix=".exr", max_pixels=4 * width * height)
    except Exception as exc:  # noqa: BLE001 - OIIO reports garbage in many ways
        raise ProtocolError(P.E_BAD_FRAME, f"EXR buffer could not be decoded: {exc}") from None
    return _display_window(image)


def check_exr_buffer(data: P.Buffer) -> None:
    """Refuse bytes that are not a complete OpenEXR file (checked from its header and chunk table)."""
    view = memoryview(data).cast("B")
    kind = sniff(bytes(view[:8]))
    if kind != "OpenEXR":
        found = f"its bytes start like a {kind} file" if kind else "no EXR magic number"
        raise ProtocolError(P.E_BAD_FRAME, f"EXR buffer is not an OpenEXR file ({found}); send other formats "
                                           "as raw pixels or as a path")
    try:
        check_complete(lambda offset, length: bytes(view[offset:offset + length]), view.nbytes)
    except ExrLayoutError as exc:
        raise ProtocolError(P.E_BAD_FRAME, f"EXR buffer: {exc}") from None


def check_image_size(info, name: str, width: int, height: int) -> None:
    """An image's header fits a width x height frame: display window, and data window (overscan)."""
    if (info.full_width, info.full_height) != (width, height):
        raise ProtocolError(P.E_BAD_FRAME, f"{name}: display window is {info.full_width}x{info.full_height}, "
                                           f"the shot is {width}x{height}")
    # Overscan is normal, but a huge data window in a small file would exhaust memory when decoded.
    if max(info.width, info.height) > P.MAX_SIDE or info.width * info.height > 4 * width * height:
        raise ProtocolError(P.E_BAD_FRAME, f"{name}: data window {info.width}x{info.height} is far larger than "
                                           f"the {width}x{height} frame")


def check_mask_info(info, name: str, size: tuple[int, int] | None) -> None:
    """A mask file's header, before its pixels are decoded: the shot's (width, height) `size` as for plates;
    when the shot's size is not known yet (size None), sides of at most MAX_SIDE."""
    if size is None:
        if not (0 < info.full_width <= P.MAX_SIDE and 0 < info.full_height <= P.MAX_SIDE):
            raise ProtocolError(P.E_BAD_FRAME, f"{name}: display window {info.full_width}x{info.full_height} "
                                               f"has a side over {P.MAX_SIDE}")
        size = (info.full_width, info.full_height)
    check_image_size(info, name, *size)


def check_plate_info(info, name: str, width: int, height: int) -> None:
    """A plate's header fits the shot: display window, data window (overscan) and colour channels."""
    check_image_size(info, name, width, height)
    colour = {c.split(".")[-1] for c in info.channels}
    if not ({"R", "G", "B"} <= colour or "Y" in colour):
        raise ProtocolError(P.E_BAD_FRAME, f"{name}: a plate needs R,G,B (or Y) channels, found {info.channels}")


def check_exr_file(path: Path, *, width: int, height: int) -> None:
    """Validate an EXR (received as bytes, already stored in the cache) from its header only."""
    try:
        info = read_info(path)
    except Exception as exc:  # noqa: BLE001
        raise ProtocolError(P.E_BAD_FRAME, f"EXR buffer could not be read: {exc}") from None
    check_plate_info(info, "EXR buffer", width, height)


def digest_bytes(data: P.Buffer) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def decode_pixels(ref: P.Pixels, buffers: Sequence[P.Buffer], *, width: int, height: int,
                  channels: tuple[int, ...], file_pixels: np.ndarray | None = None) -> DecodedImage:
    """Validate and decode one image reference (a `path` one: its pixels, read by `files.FileReader`).

    `channels` lists the accepted channel counts; RGBA is cut to RGB when 3 is accepted,
    and to its A channel when only 1 is; other images give their first channel for 1.
    """
    P.check_pixels(ref, buffers)
    if ref.encoding == P.ENC_RAW:
        buf = buffers[ref.buffer - 1]
        pixels = np.frombuffer(buf, dtype=np.dtype(ref.dtype)).reshape(ref.shape)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
    elif ref.encoding == P.ENC_EXR:
        pixels = _exr_pixels(buffers[ref.buffer - 1], width, height)
    else:
        assert file_pixels is not None, "path images are read by files.FileReader"
        pixels = file_pixels
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    h, w, c = pixels.shape
    if (h, w) != (height, width):
        raise ProtocolError(P.E_BAD_FRAME, f"image is {w}x{h}, the shot is {width}x{height}")
    if c not in channels:
        if 3 in channels and c == 4:
            pixels = pixels[:, :, :3]
        elif 1 in channels and c >= 1:
            pixels = pixels[:, :, -1:] if c == 4 else pixels[:, :, :1]
        else:
            raise ProtocolError(P.E_BAD_FRAME, f"image has {c} channels, expected {channels}")
    digest = hashlib.sha256(np.ascontiguousarray(pixels).data).hexdigest()[:32]
    # An owned copy: frees the message buffer, and OpenImageIO refused some views of ZeroMQ frames.
    pixels = np.array(pixels, order="C", copy=True)
    changed = sanitise(pixels, f"received {ref.encoding} image") > 0
    return DecodedImage(pixels, changed, digest)


def alpha_to_wire(alpha: np.ndarray, frame: int, *, encoding: str, dtype: str, cached: bool,
                  buffer_index: int) -> tuple[P.AlphaFrame, P.Buffer]:
    """(header part, buffer) for one (H, W) float32 alpha."""
    if dtype not in P.DTYPES:
        raise ProtocolError(P.E_BAD_MESSAGE, f"alpha_dtype must be one of {P.DTYPES}, got {dtype!r}")
    if encoding == P.ENC_RAW:
        data = np.ascontiguousarray(alpha, dtype=np.dtype(dtype))
        return (P.AlphaFrame(encoding=P.ENC_RAW, buffer=buffer_index, dtype=dtype, shape=list(alpha.shape),
                             frame=frame, cached=cached), memoryview(data).cast("B"))
    if encoding == P.ENC_EXR:
        data = encode_image(alpha[:, :, None].astype(np.float32), channels=("A",),
                                  pixel_type="half" if dtype == P.DTYPE_HALF else "float", compression="zip")
        return P.AlphaFrame(encoding=P.ENC_EXR, buffer=buffer_index, frame=frame, cached=cached), data
    raise ProtocolError(P.E_BAD_MESSAGE, f"alpha_encoding must be 'raw' or 'exr', got {encoding!r}")
