"""User prompts: points, a box or a mask on a keyframe.

Coordinates are pixels of the full image (the display window), origin top-left,
x to the right, y down; a pixel's centre is at (i + 0.5). Host plugins convert
from their own conventions (Nuke's origin is bottom-left) before they get here.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

FOREGROUND = 1
BACKGROUND = 0


class PromptError(ValueError):
    """A prompt that cannot be used (empty box, point off the frame, ...)."""


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: int = FOREGROUND  # 1 = foreground, 0 = background


@dataclass(frozen=True, eq=False)
class Prompt:
    """What the user said about one frame. A later prompt on the same frame replaces it."""

    frame: int
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 (x0 < x1, y0 < y1)
    points: tuple[Point, ...] = ()
    mask: np.ndarray | None = field(default=None, repr=False)  # (H, W) in [0, 1], > 0.5 is the object
    mask_path: str | None = None  # where `mask` was read from (kept so the prompt can be written back)

    def __post_init__(self) -> None:
        if self.box is not None:
            box = tuple(float(v) for v in self.box)
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise PromptError(f"frame {self.frame}: a box is four finite numbers x0,y0,x1,y1, got {self.box!r}")
            object.__setattr__(self, "box", box)
        points = tuple(p if isinstance(p, Point) else Point(*p) for p in self.points)
        for p in points:
            if not (math.isfinite(p.x) and math.isfinite(p.y)) or p.label not in (FOREGROUND, BACKGROUND):
                raise PromptError(f"frame {self.frame}: bad point {p!r} (label must be 1 = fg or 0 = bg)")
        object.__setattr__(self, "points", points)
        if self.mask is not None:
            mask = np.asarray(self.mask, dtype=np.float32)
            if mask.ndim != 2 or not np.isfinite(mask).all():
                raise PromptError(f"frame {self.frame}: a mask is a finite 2-D array, got shape {mask.shape}")
            object.__setattr__(self, "mask", mask)
        if self.box is None and not self.points and self.mask is None:
            raise PromptError(f"frame {self.frame}: a prompt needs a box, points or a mask")

    def validate(self, width: int, height: int) -> None:
        """Raise PromptError unless the prompt fits a width x height frame."""
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if x1 <= x0 or y1 <= y0:
                raise PromptError(f"frame {self.frame}: empty box {self.box} (need x0 < x1 and y0 < y1)")
            if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
                raise PromptError(f"frame {self.frame}: box {self.box} lies outside the {width}x{height} frame")
        for p in self.points:
            if not (0 <= p.x < width and 0 <= p.y < height):
                raise PromptError(f"frame {self.frame}: point ({p.x}, {p.y}) lies outside the {width}x{height} frame")
        if self.box is None and self.mask is None and not any(p.label == FOREGROUND for p in self.points):
            raise PromptError(f"frame {self.frame}: only background points; nothing says where the object is "
                              "(add a box, a mask or a foreground point, label 1)")
        if self.mask is not None and self.mask.shape != (height, width):
            raise PromptError(f"frame {self.frame}: mask is {self.mask.shape[1]}x{self.mask.shape[0]}, "
                              f"the frame is {width}x{height}")
        if self.mask is not None and self.box is None and not self.points:  # the mask alone says where it is
            named = f" {self.mask_path}" if self.mask_path else ""
            inside = self.mask > 0.5
            if inside.all():
                raise PromptError(f"frame {self.frame}: the mask{named} covers the whole frame, so nothing is "
                                  "background (the object is where its A channel, else its first channel, is above 0.5)")
            if not inside.any():
                raise PromptError(f"frame {self.frame}: the mask{named} is empty (nothing of its A channel, else its "
                                  "first channel, is above 0.5)")

    def clipped_box(self, width: int, height: int) -> tuple[int, int, int, int] | None:
        """The box as integer pixel bounds clipped to the frame (x0, y0, x1, y1; x1/y1 exclusive)."""
        if self.box is None:
            return None
        x0, y0, x1, y1 = self.box
        return (max(0, int(math.floor(x0))), max(0, int(math.floor(y0))),
                min(width, int(math.ceil(x1))), min(height, int(math.ceil(y1))))

    def same_as(self, other: "Prompt | None") -> bool:
        """Value equality (arrays compared by content)."""
        if other is None:
            return False
        if (self.frame, self.box, self.points) != (other.frame, other.box, other.points):
            return False
        if (self.mask is None) != (other.mask is None):
            return False
        return self.mask is None or np.array_equal(self.mask, other.mask)

    def digest(self) -> bytes:
        """Bytes that differ whenever the prompt does (its mask by content): for cache keys and recipes."""
        mask = b"" if self.mask is None else hashlib.sha256(np.ascontiguousarray(self.mask).data).digest()
        return json.dumps([self.frame, self.box, [[p.x, p.y, p.label] for p in self.points]]).encode() + mask

    def to_json(self) -> dict:
        out: dict = {"frame": self.frame}
        if self.box is not None:
            out["box"] = list(self.box)
        if self.points:
            out["points"] = [[p.x, p.y, p.label] for p in self.points]
        if self.mask is not None:
            if self.mask_path is None:
                raise PromptError("a mask prompt is stored in prompt JSON as its image's path; this one has none")
            out["mask"] = self.mask_path
        return out

    @classmethod
    def from_json(cls, obj: dict, base: str | Path | None = None) -> "Prompt":
        """A prompt from JSON; "mask" is an image path (relative to `base`, e.g. the JSON file's folder)
        read with `mam2_server.io.mask.read_mask`."""
        if not isinstance(obj, dict) or "frame" not in obj:
            raise PromptError(f"a prompt is an object with a 'frame' key, got {obj!r}")
        frame = obj["frame"]
        if isinstance(frame, bool) or not isinstance(frame, int):  # 1001.7 or "1001" is a typo, not a frame
            raise PromptError(f"'frame' is a whole frame number, got {frame!r}")
        unknown = set(obj) - {"frame", "box", "points", "mask"}
        if unknown:
            raise PromptError(f"unknown prompt keys {sorted(unknown)} (allowed: frame, box, points, mask)")
        mask = mask_path = None
        if "mask" in obj:
            if not isinstance(obj["mask"], str) or not obj["mask"]:
                raise PromptError(f"'mask' is the path of a mask image, got {obj['mask']!r}")
            mask_path = str((Path(base or ".") / obj["mask"]).resolve())
            mask = load_mask(mask_path)
        try:
            points = tuple(Point(float(p[0]), float(p[1]), int(p[2]) if len(p) > 2 else FOREGROUND)
                           for p in obj.get("points", []))
            return cls(frame=int(obj["frame"]), box=obj.get("box"), points=points, mask=mask, mask_path=mask_path)
        except (TypeError, IndexError, ValueError) as exc:
            if isinstance(exc, PromptError):
                raise
            raise PromptError(f"bad prompt {obj!r}: {exc}") from None


def load_mask(path: str | Path) -> np.ndarray:
    """A mask image as a prompt mask (see `mam2_server.io.mask`); errors name the file."""
    from mam2_server.io.image import ImageIOError
    from mam2_server.io.mask import read_mask
    try:
        return read_mask(path)
    except (ImageIOError, OSError) as exc:
        raise PromptError(f"mask prompt: {exc}") from None


def keyframes(prompts: Iterable[Prompt]) -> dict[int, Prompt]:
    """Prompts by frame; a later prompt for the same frame replaces an earlier one."""
    return {p.frame: p for p in prompts}


def load_prompts(path: str | Path) -> list[Prompt]:
    """Read `[{"frame": N, "box": [x0,y0,x1,y1], "points": [[x, y, label], ...], "mask": "m.png"}, ...]`
    (mask paths relative to the file's folder)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM, as Notepad writes it, is fine
    except FileNotFoundError:
        raise PromptError(f"prompt file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise PromptError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise PromptError(f"{path}: expected a non-empty list of prompts")
    return [Prompt.from_json(item, base=path.parent) for item in data]


def save_prompts(prompts: Sequence[Prompt], path: str | Path) -> None:
    Path(path).write_text(json.dumps([p.to_json() for p in prompts], indent=2) + "\n")
