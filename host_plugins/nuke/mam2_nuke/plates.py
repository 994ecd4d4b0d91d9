"""The plate and mask pixels the server gets: a Read's own EXR files when Nuke would show them as
they are, otherwise renders of the node's inputs (main thread, full resolution, only the frames
asked for).

Nuke facts relied on (Foundry's Python reference): nuke.filename(node) gives the file knob with
TCL expanded and %04d kept, but the proxy file in proxy mode when one is set; a Read's
frame_mode/frame knobs remap frames and before/after apply outside first..last; nuke.execute
renders at proxy size in proxy mode, so proxy mode is switched off around our renders; a Write
with `raw` writes the working-space values unconverted.
"""
from __future__ import annotations

import os

import nuke

from .common import Refused, working_space

PLATE_SOURCE, MASK_SOURCE = "Input1", "MaskCopy"  # nodes inside the gizmo (MaskCopy: the mask in the plate's format)
LINEAR = ("linear", "scene_linear")


def proxy_on() -> bool:
    return bool(nuke.root()["proxy"].value())


def direct_files(plate, first: int, last: int, frame_path) -> dict[int, str] | None:
    """{frame: EXR path} when `plate` is a Read whose files hold exactly what Nuke shows for
    first..last (no frame offset, no hold/loop, working-space colour); None: render instead."""
    if plate.Class() != "Read" or plate["frame"].value().strip():
        return None
    if not (plate["first"].value() <= first and last <= plate["last"].value()):
        return None  # frames outside the Read's range come from before/after
    if proxy_on() and plate["proxy"].value():
        return None  # nuke.filename would give the proxy files
    if not _shows_file_values(plate):
        return None
    pattern = nuke.filename(plate)
    if not pattern or not pattern.lower().endswith(".exr"):
        return None
    if not os.path.isabs(pattern):
        # evaluate(): the project directory is often an expression ("Script Directory" writes
        # [python {nuke.script_directory()}]); value() is its raw text
        base = nuke.root()["project_directory"].evaluate() or os.path.dirname(nuke.root()["name"].value())
        pattern = os.path.join(base, pattern)
    files = {f: frame_path(pattern, f) for f in range(first, last + 1)}
    return files if all(os.path.isfile(p) for p in files.values()) else None


def _shows_file_values(read) -> bool:
    """Whether the Read passes its file's values through unconverted (raw, or file space = working space)."""
    if read["raw"].value():
        return True
    space, work = read["colorspace"].value(), working_space()
    if space.startswith("default"):  # "default" or "default (X)": the file type's default; EXR's is linear
        space = space[space.find("(") + 1:-1] if "(" in space else "linear"
    return space == work or (space in LINEAR and work in LINEAR)


def render(group, source: str, channels: str, pattern: str, frames: list[int]) -> dict[int, str]:
    """Main thread: render `source` (a node inside the gizmo) to 32-bit float EXRs at full
    resolution for `frames`; {frame: path}. Raises Refused for a failed or cancelled render."""
    root = nuke.root()
    proxy = proxy_on()
    with group:
        write = nuke.nodes.Write()
    try:
        write.setInput(0, group.node(source))
        write["file"].setValue(pattern.replace(os.sep, "/"))
        write["file_type"].setValue("exr")
        write["datatype"].setValue("32 bit float")
        write["channels"].setValue(channels)
        write["raw"].setValue(True)  # the working-space values, as the viewer's input has them
        if proxy:
            root["proxy"].setValue(False)
        for start, end in _runs(frames):
            nuke.execute(write, start, end)
    except RuntimeError as exc:  # a render error, or the artist cancelled Nuke's render progress
        raise Refused(f"rendering the {'mask' if source == MASK_SOURCE else 'input'} failed: {exc}") from None
    finally:
        if proxy:
            root["proxy"].setValue(True)
        nuke.delete(write)
    return {f: pattern % f for f in frames}


def _runs(frames: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs of sorted frames: one execute call each."""
    runs: list[list[int]] = []
    for f in sorted(frames):
        if runs and f == runs[-1][1] + 1:
            runs[-1][1] = f
        else:
            runs.append([f, f])
    return [(a, b) for a, b in runs]
