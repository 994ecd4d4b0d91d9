"""The Blender add-on's bpy-free half: panel values -> `mam2_client.track.TrackJob`.

`ops.py` copies the scene's MAM2 properties into a `PanelValues` on the main thread;
everything here is plain Python (tested without Blender in tests/test_blender_adapter.py).
Frames are the numbers in the plate file names (scene frame N shows file N, as in Nuke);
the compositor Image nodes are set up so that this holds (`image_user_frames`).
"""
from __future__ import annotations

import glob
import os
import re
import struct
from dataclasses import dataclass

from mam2_client import track as core

HOST = "blender"
# Blender's rule for an image sequence: the last run of digits in the file name is the frame.
_LAST_DIGITS = re.compile(r"^(.*?)(\d+)(\D*)$")


class Refused(Exception):
    """A problem found before any I/O; the message is for the artist."""


@dataclass(frozen=True)
class PanelValues:
    """The MAM2 panel's properties as plain data (read on the main thread)."""

    address: str
    start_server: bool
    engine: str
    image_path: str  # absolute path of the plate Image's file ("" when no image is set)
    image_source: str  # the Image's source: SEQUENCE, FILE, MOVIE, ...
    image_name: str
    use_image_range: bool
    frame_first: int
    frame_last: int
    prompt_frame: int
    use_box: bool
    box_min: tuple[float, float]  # pixels, origin bottom-left (Blender's and Nuke's convention)
    box_max: tuple[float, float]
    points: tuple[tuple[float, float, int], ...]  # enabled fg (1) / bg (0) points
    output_dir: str
    blend_file: str  # bpy.data.filepath ("" for an unsaved file)
    scene: str


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


def image_user_frames(first: int, last: int) -> tuple[int, int, int]:
    """(frame_start, frame_offset, frame_duration) for an Image node so that scene frame N shows file N."""
    return first, first - 1, last - first + 1


def plate_sequence(values: PanelValues) -> tuple[str, list[int]]:
    """The plates' `####` pattern and the frames found on disk; Refused for what the server cannot read."""
    if not values.image_path:
        raise Refused("no input image: choose the plate (an EXR image sequence) in the MAM2 panel")
    if values.image_source not in ("SEQUENCE", "FILE"):
        raise Refused(f"the image '{values.image_name}' is a {values.image_source.lower()}: MAM2 reads EXR image "
                      "sequences on disk; render or convert the plate to EXR first")
    if not values.image_path.lower().endswith(".exr"):
        raise Refused(f"the image '{values.image_name}' is not an EXR file ({values.image_path}): MAM2 reads "
                      "scene-linear EXR sequences; convert the plate to EXR first")
    if values.image_source == "FILE":  # one still: frame = the prompt frame
        if not os.path.isfile(values.image_path):
            raise Refused(f"the plate file {values.image_path} does not exist")
        return values.image_path, []
    pattern = sequence_pattern(values.image_path)
    frames = sequence_frames(pattern)
    if not frames:
        raise Refused(f"no files on disk match the plate sequence {pattern}")
    return pattern, frames


def build_job(values: PanelValues, *, retrack: bool, current_frame: int) -> core.TrackJob:
    """The TrackJob for 'Track' (prompt on `prompt_frame`) or 'Re-track' (prompt on the current frame)."""
    pattern, frames = plate_sequence(values)
    if values.use_image_range and frames:
        first, last = frames[0], frames[-1]
    elif frames or values.image_source == "SEQUENCE":
        first, last = values.frame_first, values.frame_last
    else:  # a single EXR file
        first = last = current_frame if retrack else values.prompt_frame
    if last < first:
        raise Refused(f"the frame range {first}-{last} is empty")
    plates = {f: core.frame_path(pattern, f) if frames else pattern for f in range(first, last + 1)}
    missing = [f for f, p in plates.items() if not os.path.isfile(p)]
    if missing:
        raise Refused(f"{len(missing)} plate files of {first}-{last} are missing, e.g. {plates[missing[0]]}")
    width, height = exr_size(plates[first])
    box = None
    if values.use_box:
        box = (*values.box_min, *values.box_max)
    prompt = core.ShotPrompt(frame=current_frame if retrack else values.prompt_frame, box=box,
                             points=values.points)
    prompt.validate(width, height, first, last)
    address = values.address.strip()
    if not address:
        raise Refused("the server address is empty (e.g. tcp://127.0.0.1:5557)")
    shot = core.shot_id(HOST, values.blend_file or "untitled", f"{values.scene}/{values.image_name}", width,
                        height, first, last)
    return core.TrackJob(address=address, start_server=values.start_server, engine=values.engine, shot=shot,
                         first=first, last=last, width=width, height=height, plates=plates, prompt=prompt,
                         output_pattern=core.alpha_pattern(values.output_dir, shot), retrack=retrack)
