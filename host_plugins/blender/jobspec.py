"""The Blender add-on's bpy-free half: plate timing, shot ids, output folders, panel values -> TrackJob.

`ops.py` copies the scene's MAM2 settings into a `PanelValues` on the main thread; everything
here is plain Python (tested without Blender in tests/test_blender_jobspec.py).

Frames: the server and the keys use the numbers in the plate's file names ("file frames");
the artist sees scene frames. The plate's compositor Image node maps one to the other
(`PlateTiming`); Image > Open of plate.1001-1006.exr shows file 1001 on scene frame 1.
"""
from __future__ import annotations

import glob
import os
import re
import struct
from dataclasses import dataclass
from typing import Any

from .mam2_client import track as core

# Blender's rule for an image sequence: the last run of digits in the file name is the frame.
_LAST_DIGITS = re.compile(r"^(.*?)(\d+)(\D*)$")
DEFAULT_OUTPUT = "//mam2/"  # next to the .blend, stored relative
ALPHA_NAME = "alpha.%04d.exr"
# Blender's colour space names -> the OCIO (ACES studio / OIIO built-in config) names the server
# knows; other names (a studio $OCIO in Blender) are sent as they are.
OCIO_NAMES = {
    "Linear Rec.709": "Linear Rec.709 (sRGB)",
    "Linear Rec.2020": "Linear Rec.2020",
    "Linear DCI-P3 D65": "Linear P3-D65",
    "Linear P3-D65": "Linear P3-D65",
    "Linear CIE-XYZ D65": "CIE XYZ-D65 - Scene-referred",
    "ACEScg": "ACEScg",
    "ACES2065-1": "ACES2065-1",
    "sRGB": "sRGB Encoded Rec.709 (sRGB)",
    "Non-Color": "Raw",
}


class Refused(Exception):
    """A problem found before any I/O; the message is for the artist."""


@dataclass(frozen=True)
class PlateTiming:
    """How an Image node maps scene frames to file frames (Blender's image user).

    start: the scene frame showing the sequence's first frame; offset: added to the frame
    number (Image > Open of plate.1001.exr sets 1000); duration: frames played.
    """

    start: int
    offset: int
    duration: int
    cyclic: bool = False

    @classmethod
    def opened(cls, first_file: int, count: int) -> "PlateTiming":
        """What Image > Open sets for a sequence: its first file on scene frame 1."""
        return cls(start=1, offset=first_file - 1, duration=count)

    @property
    def first(self) -> int:
        """The first file frame played."""
        return self.offset + 1

    @property
    def last(self) -> int:
        return self.offset + self.duration

    def file_frame(self, scene_frame: int) -> int | None:
        """The file frame shown on `scene_frame` (None outside the node's frames unless cyclic)."""
        if self.duration < 1:
            return None
        n = scene_frame - self.start
        if self.cyclic:
            n %= self.duration
        elif not 0 <= n < self.duration:
            return None
        return n + 1 + self.offset

    def scene_frame(self, file_frame: int) -> int:
        """The (first) scene frame showing `file_frame`."""
        return file_frame - self.offset - 1 + self.start


@dataclass(frozen=True)
class KeyValues:
    """One keyframe of the panel: a file frame and its prompt (host pixels, origin bottom-left)."""

    frame: int
    box: tuple[float, float, float, float] | None = None  # (left, bottom, right, top)
    points: tuple[tuple[float, float, int], ...] = ()
    mask: Any = None  # the Mask datablock rasterised on this frame: (H, W) float, bottom row first


@dataclass(frozen=True)
class PanelValues:
    """The MAM2 settings of a scene as plain data (read on the main thread)."""

    address: str
    start_server: bool
    engine: str
    server_command: tuple[str, ...]  # the add-on preference (empty: the launcher's search)
    image_path: str  # absolute path of the plate Image's file ("" when no image is set)
    image_source: str  # SEQUENCE, FILE, MOVIE, ...
    image_name: str
    colorspace: str  # the plate Image's colour space, as Blender names it
    timing: PlateTiming | None  # the plate node's frame mapping
    use_image_range: bool
    frame_first: int  # scene frames, when not use_image_range
    frame_last: int
    keys: tuple[KeyValues, ...]
    output_dir: str  # as the artist typed it ("" = DEFAULT_OUTPUT)
    blend_dir: str  # folder of the saved .blend ("" when unsaved)
    shot_uuid: str
    shot_span: tuple[int, int] | None = None  # the span the shot was opened with at the last Track (None: never)


def sequence_pattern(path: str) -> str:
    """`/p/plate.0001.exr` -> `/p/plate.####.exr` (no digits in the name: the path itself)."""
    folder, name = os.path.split(path)
    m = _LAST_DIGITS.match(name)
    if m is None:
        return path
    return os.path.join(folder, f"{m.group(1)}{'#' * len(m.group(2))}{m.group(3)}")


def sequence_frames(pattern: str) -> list[int]:
    """The frame numbers of the files on disk that match a `####` pattern."""
    if "#" not in pattern:
        return []
    head, _, tail = pattern.partition("#")
    width = pattern.count("#")
    found = []
    for path in glob.glob(glob.escape(head) + "[0-9]" * width + glob.escape(tail[width - 1:])):
        found.append(int(path[len(head):len(head) + width]))
    return sorted(found)


def exr_size(path: str) -> tuple[int, int]:
    """(width, height) of an OpenEXR file's display window (the frame the server and the prompt's y
    flip work in; the data window may be a bbox inside it or overscan around it), from its header
    (no image library)."""
    with open(path, "rb") as fh:
        if fh.read(4) != b"\x76\x2f\x31\x01":
            raise Refused(f"{path} is not an OpenEXR file")
        fh.read(4)  # version and flags
        header = fh.read(1 << 16)
    pos = 0
    while pos < len(header) and header[pos] != 0:
        name_end = header.index(b"\0", pos)
        type_end = header.index(b"\0", name_end + 1)
        (size,) = struct.unpack_from("<i", header, type_end + 1)
        value = type_end + 5
        if header[pos:name_end] == b"displayWindow":
            x0, y0, x1, y1 = struct.unpack_from("<4i", header, value)
            return x1 - x0 + 1, y1 - y0 + 1
        pos = value + size
    raise Refused(f"{path} has no displayWindow in its header")


def shot_id(shot_uuid: str, width: int, height: int, first: int, last: int, colorspace: str | None) -> str:
    """The server's shot id (`track.shot_id`) for the scene's UUID, stable across Save As and renames:
    another size, span or colour space is another shot. first..last is the shot's span on the server
    (`track.shot_span`), not the tracked range: changing the tracked range inside it keeps the shot,
    its plates and its finished alphas."""
    return core.shot_id("blender", shot_uuid.replace("-", "")[:12], width, height, first, last, tag=colorspace or "")


def output_folder(output_dir: str, shot: str) -> str:
    """The alpha folder as stored in the .blend: `//mam2/<shot>/` by default (relative stays relative)."""
    base = output_dir.strip() or DEFAULT_OUTPUT
    return f"{base.rstrip('/').rstrip(os.sep)}/{shot}/"


def absolute(path: str, blend_dir: str) -> str:
    """Resolve Blender's `//` (relative to the .blend) like bpy.path.abspath; Refused when unsaved."""
    if not path.startswith("//"):
        return os.path.normpath(path)
    if not blend_dir:
        raise Refused("the .blend is not saved, so the alphas have no place next to it: save the file or "
                      "choose an output folder")
    return os.path.normpath(os.path.join(blend_dir, path[2:]))


def ocio_name(blender_name: str) -> str | None:
    """The colour space name for `open_shot` (None: the server's default scene-linear Rec.709)."""
    return OCIO_NAMES.get(blender_name, blender_name) if blender_name else None


def plate_sequence(values: PanelValues) -> tuple[str, list[int]]:
    """The plates' `####` pattern and the frames found on disk; Refused for what the server cannot read."""
    if not values.image_path:
        raise Refused("no plate: open the plate (an EXR image sequence) in the MAM2 panel")
    if values.image_source == "TILED":
        raise Refused(f"the plate '{values.image_name}' was opened as UDIM tiles (frames numbered from 1001 look "
                      "like tiles): open it with MAM2's Open Plate, or uncheck UDIM Tiles in Image > Open")
    if values.image_source != "SEQUENCE":
        hint = (" (set the Image's Source to Image Sequence)" if values.image_source == "FILE"
                and _LAST_DIGITS.match(os.path.basename(values.image_path)) else "")
        raise Refused(f"the plate '{values.image_name}' is a {values.image_source.lower()}, not an image "
                      f"sequence{hint}: MAM2 tracks EXR image sequences on disk")
    if not values.image_path.lower().endswith(".exr"):
        raise Refused(f"the plate '{values.image_name}' is not an EXR file ({values.image_path}): MAM2 reads "
                      "scene-linear EXR sequences; convert the plate to EXR first")
    pattern = sequence_pattern(values.image_path)
    frames = sequence_frames(pattern)
    if not frames:
        raise Refused(f"no files on disk match the plate sequence {pattern}")
    return pattern, frames


def file_range(values: PanelValues) -> tuple[int, int]:
    """The tracked file frames: the plate node's, or the panel's scene-frame range converted."""
    timing = values.timing
    if timing is None or timing.duration < 1:
        raise Refused("the plate node plays no frames (its Frames setting is 0)")
    if values.use_image_range:
        return timing.first, timing.last
    if values.frame_last < values.frame_first:
        raise Refused(f"the frame range {values.frame_first}-{values.frame_last} is empty")
    ends = [timing.file_frame(f) for f in (values.frame_first, values.frame_last)]
    if None in ends or ends[1] < ends[0]:
        raise Refused(f"scene frames {values.frame_first}-{values.frame_last} are not all on the plate node, "
                      f"which plays scene frames {timing.start}-{timing.start + timing.duration - 1}")
    return ends[0], ends[1]


def _prompt(key: KeyValues, timing: PlateTiming, width: int, height: int, first: int, last: int) -> core.ShotPrompt:
    prompt = core.ShotPrompt(frame=key.frame, box=key.box, points=key.points, mask=key.mask)
    try:
        prompt.validate(width, height, first, last)
    except core.PromptError as exc:
        raise Refused(f"key on scene frame {timing.scene_frame(key.frame)} (file {key.frame}): {exc}") from None
    return prompt


def build_job(values: PanelValues) -> core.TrackJob:
    """The TrackJob for Track: every key inside the tracked range, the plates, where the alphas go."""
    pattern, on_disk = plate_sequence(values)
    first, last = file_range(values)
    plates = {f: core.frame_path(pattern, f) for f in range(first, last + 1)}
    missing = sorted(set(plates) - set(on_disk))
    if missing:
        files = "1 plate file is" if len(missing) == 1 else f"{len(missing)} plate files are"
        raise Refused(f"{files} missing from {first}-{last}, e.g. {plates[missing[0]]}")
    width, height = exr_size(plates[first])
    inside = [k for k in values.keys if first <= k.frame <= last]
    if not inside:
        raise Refused("no keyframe: go to a frame of the plate and add a key (a box, points or a Mask)"
                      if not values.keys else f"no keyframe inside the tracked file frames {first}-{last}")
    keys = tuple(_prompt(k, values.timing, width, height, first, last) for k in inside)
    address = values.address.strip()
    if not address:
        raise Refused("the server address is empty (e.g. tcp://127.0.0.1:5557)")
    colorspace = ocio_name(values.colorspace)
    span = core.shot_span(first, last, values.shot_span)  # kept while the tracked range fits in it, as in Nuke
    shot = shot_id(values.shot_uuid, width, height, *span, colorspace)
    folder = absolute(output_folder(values.output_dir, shot), values.blend_dir)
    return core.TrackJob(address=address, start_server=values.start_server, engine=values.engine, shot=shot,
                         first=first, last=last, width=width, height=height, plates=plates, prompt=keys[0],
                         output_pattern=os.path.join(folder, ALPHA_NAME), keyframes=keys, colorspace=colorspace,
                         server_command=values.server_command, span=span,
                         server_command_setting="Preferences > Add-ons > MAM2 Matte > Server command")
