"""Is an OpenEXR file complete? Its chunk offset table checked against its size, without decoding pixels.

OpenImageIO reads a header fine from a file cut short (an upload truncated, a render
still being written) and fails only when the pixels are decoded, i.e. at propagate.
An EXR lists the file offset of every chunk of pixels right after its header(s); a
complete file has every offset inside the file and its last chunk ending inside it.
This reads the header attributes it needs (OpenEXR file layout, version 2: compression,
dataWindow, tiles, type, chunkCount), the offset table and the last chunk's size field:
a few kilobytes whatever the image size.
"""
from __future__ import annotations

import os
import struct
from typing import BinaryIO, Callable

MAGIC = b"\x76\x2f\x31\x01"
_TILED, _LONG_NAMES, _NON_IMAGE, _MULTIPART = 0x200, 0x400, 0x800, 0x1000
# scanlines per chunk by compression: none, rle, zips, zip, piz, pxr24, b44, b44a, dwaa, dwab
_LINES_PER_CHUNK = {0: 1, 1: 1, 2: 1, 3: 16, 4: 32, 5: 16, 6: 32, 7: 32, 8: 32, 9: 256}
_MAX_HEADER = 16 << 20

Read = Callable[[int, int], bytes]  # (offset, length) -> up to length bytes


class ExrLayoutError(ValueError):
    """Not an OpenEXR file, or one whose pixels do not all lie inside it."""


class _NeedMore(Exception):
    pass


def file_reader(f: BinaryIO) -> Read:
    """A `Read` over an open binary file."""
    def read(offset: int, length: int) -> bytes:
        f.seek(offset)
        return f.read(length)
    return read


def check_file(path: str | os.PathLike) -> None:
    """Raise ExrLayoutError unless the EXR file at `path` holds every chunk it lists (OSError if unreadable)."""
    with open(path, "rb") as f:
        check_complete(file_reader(f), os.fstat(f.fileno()).st_size)


def check_complete(read: Read, size: int) -> None:
    """Raise ExrLayoutError unless the EXR read by `read` (`size` bytes) holds every chunk it lists."""
    head = read(0, 8)
    if len(head) < 8 or head[:4] != MAGIC:
        raise ExrLayoutError("not an OpenEXR file (no EXR magic number)")
    flags = int.from_bytes(head[4:8], "little")
    if flags & _NON_IMAGE:
        raise ExrLayoutError("deep OpenEXR files are not supported")
    block = 1 << 16
    while True:
        data = read(0, min(size, block))
        try:
            headers, table = _headers(data, multipart=bool(flags & _MULTIPART))
            break
        except _NeedMore:
            if len(data) >= size or block >= _MAX_HEADER:
                raise ExrLayoutError("the file ends inside its header: truncated") from None
            block *= 4
    tiled = [h.get("type", b"tiledimage" if flags & _TILED else b"scanlineimage") == b"tiledimage"
             for h in headers]
    counts = [_chunk_count(h, t) for h, t in zip(headers, tiled)]
    if None in counts:
        return  # a compression this check does not know: leave it to the reader
    total = sum(counts)
    table_end = table + 8 * total
    if table_end > size:
        raise ExrLayoutError(f"the file ends inside its table of {total} chunks ({size} bytes): truncated")
    offsets = struct.unpack(f"<{total}Q", read(table, 8 * total))
    outside = sum(1 for o in offsets if not table_end <= o < size)
    if outside:
        raise ExrLayoutError(f"{outside} of {total} chunks lie outside the file ({size} bytes): truncated "
                             "or still being written")
    last = max(range(total), key=offsets.__getitem__)
    part = next(i for i, end in enumerate(_running(counts)) if last < end)
    field = (4 if flags & _MULTIPART else 0) + (16 if tiled[part] else 4)  # part number, coordinates
    raw = read(offsets[last] + field, 4)
    if len(raw) < 4 or offsets[last] + field + 4 + int.from_bytes(raw, "little") > size:
        raise ExrLayoutError(f"its last chunk runs past the end of the file ({size} bytes): truncated")


def _running(counts: list[int]) -> list[int]:
    out, acc = [], 0
    for c in counts:
        acc += c
        out.append(acc)
    return out


def _headers(data: bytes, *, multipart: bool) -> tuple[list[dict[str, bytes]], int]:
    """The parts' attributes (name -> raw value) and the offset of the chunk table."""
    pos, headers = 8, []
    while True:
        attrs: dict[str, bytes] = {}
        while True:
            name, pos = _cstring(data, pos)
            if not name:
                break
            _, pos = _cstring(data, pos)  # type name
            if pos + 4 > len(data):
                raise _NeedMore
            (length,) = struct.unpack_from("<i", data, pos)
            if length < 0:
                raise ExrLayoutError(f"attribute {name!r} has a negative size")
            if pos + 4 + length > len(data):
                raise _NeedMore
            attrs[name] = bytes(data[pos + 4:pos + 4 + length])
            pos += 4 + length
        if not attrs:  # the empty header that ends a multi-part list
            if not headers:
                raise ExrLayoutError("the file has an empty header")
            return headers, pos
        headers.append(attrs)
        if not multipart:
            return headers, pos


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\0", pos, pos + 257)
    if end < 0:
        if len(data) - pos < 257:
            raise _NeedMore
        raise ExrLayoutError("an attribute name is longer than 255 characters")
    return data[pos:end].decode("latin-1"), end + 1


def _chunk_count(attrs: dict[str, bytes], tiled: bool) -> int | None:
    if "chunkCount" in attrs:
        (count,) = struct.unpack("<i", attrs["chunkCount"][:4])
        if count < 0:
            raise ExrLayoutError("negative chunkCount")
        return count
    try:
        xmin, ymin, xmax, ymax = struct.unpack("<4i", attrs["dataWindow"][:16])
        compression = attrs["compression"][0]
    except (KeyError, IndexError, struct.error):
        raise ExrLayoutError("the header lacks dataWindow or compression") from None
    w, h = xmax - xmin + 1, ymax - ymin + 1
    if w < 1 or h < 1:
        raise ExrLayoutError(f"empty data window {w}x{h}")
    if not tiled:
        lines = _LINES_PER_CHUNK.get(compression)
        return None if lines is None else -(-h // lines)
    try:
        tx, ty, mode = struct.unpack("<IIB", attrs["tiles"][:9])
    except (KeyError, struct.error):
        raise ExrLayoutError("a tiled file without a tiles attribute") from None
    if tx < 1 or ty < 1:
        raise ExrLayoutError("tiles of size 0")
    level_mode, up = mode & 0x0F, bool(mode >> 4)
    if level_mode == 0:
        return -(-w // tx) * -(-h // ty)
    log2 = _ceil_log2 if up else _floor_log2
    xs = [_level_size(w, lx, up) for lx in range(log2(w) + 1)]
    ys = [_level_size(h, ly, up) for ly in range(log2(h) + 1)]
    if level_mode == 1:  # mipmap: one level count for both axes
        n = log2(max(w, h)) + 1
        return sum(-(-_level_size(w, l, up) // tx) * -(-_level_size(h, l, up) // ty) for l in range(n))
    if level_mode == 2:  # ripmap: every x level with every y level
        return sum(-(-lw // tx) for lw in xs) * sum(-(-lh // ty) for lh in ys)
    raise ExrLayoutError(f"unknown tile level mode {level_mode}")


def _level_size(size: int, level: int, up: bool) -> int:
    out = size >> level
    if up and out << level < size:
        out += 1
    return max(out, 1)


def _floor_log2(x: int) -> int:
    return x.bit_length() - 1


def _ceil_log2(x: int) -> int:
    return (x - 1).bit_length()
