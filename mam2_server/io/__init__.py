"""Image and sequence I/O: EXR/PNG/TIFF/JPEG/DPX via OpenImageIO, frame patterns,
OCIO colour conversion and `FrameSource` implementations.

Plates stay scene-linear and unclipped; data window, display window and metadata
are carried in `ImageInfo` so mattes are written back "like" their plates.
"""
from mam2_server.io.colour import ColourConverter
from mam2_server.io.image import (
    Image,
    ImageInfo,
    ImageIOError,
    decode_image,
    encode_image,
    from_display_window,
    read_image,
    read_info,
    sanitise,
    to_display_window,
    write_alpha,
    write_image,
)
from mam2_server.io.sequence import SequencePattern, format_frame_range, parse_frame_range
from mam2_server.io.source import ArraySource, SequenceSource, write_alpha_frame

__all__ = [
    "ArraySource", "ColourConverter", "Image", "ImageIOError", "ImageInfo", "SequencePattern", "SequenceSource",
    "decode_image", "encode_image", "format_frame_range", "from_display_window", "parse_frame_range",
    "read_image", "read_info", "sanitise", "to_display_window", "write_alpha", "write_alpha_frame", "write_image",
]
