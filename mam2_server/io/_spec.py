"""OIIO ImageSpec <-> ImageInfo, and channel selection (plate RGB(A), layers, names)."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import OpenImageIO as oiio

from mam2_server.io.info import ImageInfo

log = logging.getLogger(__name__)

# Attributes that describe the file's structure, not the picture: the writer
# recomputes them, and copying them would contradict the new file.
_STRUCTURAL = {"oiio:subimages", "compression", "oiio:BitsPerSample", "openexr:chunkCount",
               "oiio:RowsPerChunk", "name", "tiff:RowsPerStrip"}
_COLOUR = ("R", "G", "B")


def info_from_spec(spec: oiio.ImageSpec, index: Sequence[int]) -> ImageInfo:
    """ImageInfo for the channels `index` of one subimage, with every extra attribute."""
    formats = spec.channelformats
    pixel_type = str(formats[index[0]] if formats else spec.format)
    names = tuple(spec.channelnames)
    metadata: dict[str, object] = {}
    types: dict[str, str] = {}
    for param in spec.extra_attribs:
        metadata[param.name] = param.value
        types[param.name] = str(param.type)
    return ImageInfo(spec.x, spec.y, spec.width, spec.height, spec.full_x, spec.full_y,
                     spec.full_width, spec.full_height, tuple(names[i] for i in index), pixel_type,
                     metadata, types)


def _type_of(value: object) -> oiio.TypeDesc | None:
    """An OIIO type for a metadata value whose original type is unknown."""
    if isinstance(value, np.ndarray):
        value = tuple(value.ravel().tolist())
    if not isinstance(value, (tuple, list)) or not value:
        return None  # scalars: OIIO infers str/int/float itself
    if all(isinstance(v, str) for v in value):
        return oiio.TypeDesc(f"string[{len(value)}]")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        return oiio.TypeDesc(f"int[{len(value)}]")
    return {16: oiio.TypeMatrix44, 9: oiio.TypeMatrix33}.get(len(value), oiio.TypeDesc(f"float[{len(value)}]"))


def apply_metadata(spec: oiio.ImageSpec, info: ImageInfo) -> None:
    """Copy `info.metadata` onto `spec` with the original attribute types where known."""
    for key, value in info.metadata.items():
        if key in _STRUCTURAL or value is None:
            continue
        try:
            type_name = info.attribute_types.get(key)
            td = oiio.TypeDesc(type_name) if type_name else None
            if td is None or str(td) == "unknown":
                td = _type_of(value)
            if isinstance(value, np.ndarray):
                value = tuple(value.ravel().tolist())
            if td is None:
                spec.attribute(key, value)
            else:
                spec.attribute(key, td, tuple(value) if isinstance(value, list) else value)
        except (TypeError, ValueError, RuntimeError) as exc:
            log.warning("metadata %r (%r) cannot be written and is dropped: %s", key, value, exc)


def _colour_set(names: Sequence[str], prefix: str = "") -> list[int] | None:
    """Indices of prefix+R,G,B[,A] or prefix+Y[,A] in `names`, or None."""
    where = {n: i for i, n in enumerate(names)}
    for base in (_COLOUR, ("Y",)):
        if all(prefix + c in where for c in base):
            alpha = [where[prefix + "A"]] if prefix + "A" in where else []
            return [where[prefix + c] for c in base] + alpha
    return None


def _layers(all_names: list[tuple[str, ...]], parts: list[str]) -> list[str]:
    found = {n.rsplit(".", 1)[0] for names in all_names for n in names if "." in n}
    return sorted(found | {p for p in parts if p})


def _describe(all_names: list[tuple[str, ...]], limit: int = 24) -> str:
    flat = [n for names in all_names for n in names]
    return ", ".join(flat[:limit]) + (f", ... ({len(flat)} in all)" if len(flat) > limit else "")


def select_channels(all_names: list[tuple[str, ...]], parts: list[str],
                    channels: str | Sequence[str] | None) -> tuple[int, list[int]]:
    """(subimage, channel indices) for a request; LookupError with a clear message otherwise.

    all_names: channel names of each subimage; parts: each subimage's part name.
    channels: None (plate colour), a layer name or a channel name, or a list of names.
    """
    if channels is None:
        for sub, names in enumerate(all_names):
            found = _colour_set(names)
            if found is not None:
                return sub, found
        names = all_names[0]
        present = [c for c in _COLOUR if c in names]
        if present:
            missing = [c for c in _COLOUR if c not in names]
            raise LookupError(f"missing colour channel(s) {', '.join(missing)} (file has {_describe(all_names)})")
        if not any("." in n for n in names):
            return 0, list(range(len(names)))  # e.g. a matte with only A: take it as it is
        raise LookupError(f"no R,G,B or Y channels; choose a layer with channels= "
                          f"(layers: {', '.join(_layers(all_names, parts))})")
    if isinstance(channels, str):
        for sub, names in enumerate(all_names):  # an exact channel name, e.g. "A" or "depth.Z"
            if channels in names:
                return sub, [names.index(channels)]
        layer = channels.rstrip(".")
        for sub, names in enumerate(all_names):
            found = _colour_set(names, layer + ".")
            if found is None:  # a layer without colour: all its direct channels, in file order
                found = [i for i, n in enumerate(names)
                         if n.startswith(layer + ".") and "." not in n[len(layer) + 1:]] or None
            if found is None and parts[sub] == layer:  # an EXR part named like the layer
                found = _colour_set(names) or list(range(len(names)))
            if found:
                return sub, found
        raise LookupError(f"no layer or channel {channels!r} (layers: {', '.join(_layers(all_names, parts)) or 'none'};"
                          f" channels: {_describe(all_names)})")
    wanted = list(channels)
    if not wanted:
        raise LookupError("empty channel list")
    for sub, names in enumerate(all_names):
        if all(c in names for c in wanted):
            return sub, [names.index(c) for c in wanted]
    missing = [c for c in wanted if not any(c in names for names in all_names)]
    detail = f"missing channel(s) {', '.join(missing)}" if missing else "channels are in different parts"
    raise LookupError(f"{detail} (file has {_describe(all_names)})")
