"""Frame-numbered file patterns and frame-range text.

Pattern styles (in the file name, the last token wins):

* ``plate.####.exr``  - one ``#`` per digit of padding (Nuke);
* ``plate.%04d.exr`` / ``plate.%d.exr`` - printf style (Nuke, ffmpeg);
* ``plate.@@@@.exr`` / ``plate.@.exr`` - one ``@`` per digit (Houdini/Katana style);
* ``plate.$F4.exr`` / ``plate.$F.exr`` - Houdini.

Frame numbers are formatted like C's ``%0Nd`` (so -1 with padding 4 is ``-001``),
and a file only counts as a frame when its number is formatted exactly that way.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

__all__ = ["SequencePattern", "parse_frame_range", "format_frame_range", "holes"]

_TOKEN = re.compile(r"#+|@+|%(0?\d+)?d|\$F(\d*)")


class SequencePattern:
    """A frame-numbered path such as ``/shots/sh010/plate.####.exr``."""

    def __init__(self, pattern: str | Path) -> None:
        self.pattern = str(pattern)
        head, name = os.path.split(self.pattern)
        matches = list(_TOKEN.finditer(name))
        if not matches:
            raise ValueError(f"{self.pattern}: no frame number token in the file name "
                             "(use e.g. name.####.exr, name.%04d.exr, name.@@@@.exr or name.$F4.exr)")
        token = matches[-1]
        text = token.group(0)
        if text[0] in "#@":
            self.padding = len(text)
        else:
            digits = token.group(1) if text[0] == "%" else token.group(2)
            self.padding = max(1, int(digits)) if digits else 1
        self.directory = Path(head) if head else Path(".")
        self._prefix, self._suffix = name[:token.start()], name[token.end():]
        self._regex = re.compile(re.escape(self._prefix) + r"(-?\d+)" + re.escape(self._suffix) + r"\Z")

    def __repr__(self) -> str:
        return f"SequencePattern({self.pattern!r})"

    def __str__(self) -> str:
        return self.pattern

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SequencePattern) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def _number(self, frame: int) -> str:
        return f"{int(frame):0{self.padding}d}"

    def path(self, frame: int) -> Path:
        """The file of `frame`, e.g. plate.####.exr -> plate.1001.exr."""
        return self.directory / f"{self._prefix}{self._number(frame)}{self._suffix}"

    def files_key(self) -> Path:
        """A path two patterns share exactly when they name the same files (resolved, and numbered with a
        frame of more digits than any padding, so plate.####.exr and plate.%04d.exr match)."""
        return self.path(123456789).resolve()

    def frame_of(self, path: str | Path) -> int | None:
        """The frame number of a file name of this sequence, or None if it is not one."""
        match = self._regex.match(Path(path).name)
        if match is None or match.group(1) != self._number(int(match.group(1))):
            return None  # e.g. 0001 for a %d pattern: another sequence
        return int(match.group(1))

    def existing_frames(self) -> list[int]:
        """Sorted frame numbers of the files present on disk ([] if the directory is missing)."""
        try:
            names = os.listdir(self.directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        frames = (self.frame_of(n) for n in names if not n.startswith("."))  # dot-files are temp writes
        return sorted(f for f in frames if f is not None)


_RANGE = re.compile(r"\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*(?:x\s*(\d+)\s*)?)?\Z")


def parse_frame_range(text: str) -> list[int]:
    """Frames of a range text, sorted and unique.

    "1001" -> [1001]; "1001-1005" -> 1001..1005; "1001-1009x2" -> every 2nd;
    "1,3,5-7" -> [1, 3, 5, 6, 7]; negative frames work ("-5--1"). ValueError otherwise.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty frame range {text!r} (expected e.g. 1001-1100, 1001-1100x2 or 1,3,5-7)")
    frames: set[int] = set()
    for part in text.split(","):
        match = _RANGE.match(part)
        if match is None:
            raise ValueError(f"bad frame range {text!r}: cannot read {part.strip()!r} "
                             "(expected e.g. 1001, 1001-1100, 1001-1100x2 or 1,3,5-7)")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        step = int(match.group(3)) if match.group(3) is not None else 1
        if end < start:
            raise ValueError(f"bad frame range {text!r}: {part.strip()!r} ends before it starts")
        if step < 1:
            raise ValueError(f"bad frame range {text!r}: step must be at least 1 in {part.strip()!r}")
        frames.update(range(start, end + 1, step))
    return sorted(frames)


def holes(frames: Iterable[int]) -> list[int]:
    """The frames missing between the first and the last of `frames` (a render that failed to write some)."""
    have = set(frames)
    return sorted(set(range(min(have), max(have) + 1)) - have) if have else []


def format_frame_range(frames: Iterable[int]) -> str:
    """Compact text for frames, the inverse of `parse_frame_range`: [1,2,3,5,7,9] -> "1-3,5-9x2"."""
    values = sorted(set(int(f) for f in frames))
    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        if i + 1 < len(values):
            step = values[i + 1] - values[i]
            while j + 1 < len(values) and values[j + 1] - values[j] == step:
                j += 1
            if step > 1 and j - i < 2:
                j = i  # two frames with a gap read better as a list than as a stepped range
        if j == i:
            parts.append(str(values[i]))
        elif values[j] - values[i] == j - i:
            parts.append(f"{values[i]}-{values[j]}")
        else:
            parts.append(f"{values[i]}-{values[j]}x{values[i + 1] - values[i]}")
        i = j + 1
    return ",".join(parts)
