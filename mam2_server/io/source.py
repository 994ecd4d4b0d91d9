"""Frame sources (the `FrameSource` protocol of `mam2_server.stages.base`) and matte output.

Engines and prompts work in display-window pixel coordinates (origin top-left), so
sources hand out frames placed in the display window; mattes are cut back to the
plate's data window when written (`write_alpha_frame`, `write_rgba_frame`), which keeps
Nuke's bbox.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mam2_server.io.colour import ColourConverter
from mam2_server.io.image import ImageIOError, read_image, read_info, sanitise, write_alpha, write_image
from mam2_server.io.info import ImageInfo, from_display_window, to_display_window
from mam2_server.io.sequence import SequencePattern, format_frame_range

__all__ = ["SequenceSource", "ArraySource", "write_alpha_frame", "write_rgba_frame", "ALPHA_SUFFIXES", "RGBA_SUFFIXES"]

ALPHA_SUFFIXES = (".exr", ".png")  # what a matte is written as: half-float EXR or 16-bit PNG (never 8-bit, lossy)
RGBA_SUFFIXES = (".exr",)  # premultiplied scene-linear RGBA


class _FrameCache:
    """The last few frames' (linear, display) arrays, so linear()+display() of a frame read once."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._items: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    def raw(self, frame: int, kind: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached array itself (made on a miss); not to be handed to callers."""
        entry = self._items.get(frame)
        if entry is None:
            entry = self._items[frame] = {}
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        self._items.move_to_end(frame)
        if kind not in entry:
            entry[kind] = make()
        return entry[kind]

    def get(self, frame: int, kind: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        # A copy (~3 ms at 1080p): callers may modify what they get without corrupting the cache.
        return self.raw(frame, kind, make).copy()


class _SourceBase(ABC):
    frames: list[int]
    width: int
    height: int
    colour: ColourConverter

    def _check(self, frame: int) -> None:
        if frame not in self._frame_set:
            raise ValueError(f"frame {frame} is not in this source (frames {format_frame_range(self.frames)})")

    def _plate(self, frame: int) -> np.ndarray:
        return self._cache.raw(frame, "plate", lambda: self._load(frame))

    def linear(self, frame: int) -> np.ndarray:
        """(height, width, 3) float32 scene-linear RGB over the display window, NaN/inf sanitised
        (a display-encoded plate, e.g. an 8-bit sRGB PNG, decoded to linear)."""
        self._check(frame)
        return self._cache.get(frame, "linear", lambda: self.colour.to_linear(self._plate(frame)))

    def display(self, frame: int) -> np.ndarray:
        """(height, width, 3) float32 display-encoded RGB in [0, 1]."""
        self._check(frame)
        return self._cache.get(frame, "display", lambda: self.colour.to_display(self._plate(frame)))

    @abstractmethod
    def _load(self, frame: int) -> np.ndarray:
        """(height, width, 3) float32 RGB of `frame` in the plate's colour space, read afresh."""

    def __len__(self) -> int:
        return len(self.frames)


class SequenceSource(_SourceBase):
    """A shot on disk: an image sequence read frame by frame (never held whole).

    frames: the frames to use (default: all files present). At construction only the
    headers are read, to check that every frame exists and all share one display window.
    """

    def __init__(self, pattern: SequencePattern | str | Path, frames: Sequence[int] | None = None,
                 colour: ColourConverter | None = None, channels: str | Sequence[str] | None = None) -> None:
        self.pattern = pattern if isinstance(pattern, SequencePattern) else SequencePattern(pattern)
        self.channels = channels
        self.colour = colour or ColourConverter()
        existing = self.pattern.existing_frames()
        if frames is None:
            if not existing:
                raise ImageIOError(f"{self.pattern}: no frames found in {self.pattern.directory}")
            frames = existing
        self.frames = sorted(set(int(f) for f in frames))
        if not self.frames:
            raise ImageIOError(f"{self.pattern}: empty frame list")
        missing = sorted(set(self.frames) - set(existing))
        if missing:
            have = format_frame_range(existing) if existing else "none"
            raise ImageIOError(f"{self.pattern}: missing frames {format_frame_range(missing)} "
                               f"(first missing file {self.pattern.path(missing[0])}; frames on disk: {have})")
        self._frame_set = set(self.frames)
        self._infos: dict[int, ImageInfo] = {}
        first = None
        for frame in self.frames:  # headers only: fast even for long shots
            info = read_info(self.pattern.path(frame), channels=channels)
            if _colour_kind(info.channels, channels is not None) is None:
                raise ImageIOError(f"{self.pattern.path(frame)}: a plate needs R,G,B or Y channels, "
                                   f"found {', '.join(info.channels)}")
            if first is None:
                first = info
            elif info.display_window != first.display_window:
                raise ImageIOError(f"{self.pattern.path(frame)}: display window {info.display_window} differs from "
                                   f"{first.display_window} of {self.pattern.path(self.frames[0])}")
            self._infos[frame] = info
        assert first is not None
        self.width, self.height = first.full_width, first.full_height
        # integer files are sRGB-encoded, float ones scene-linear, unless a colour space was given
        self.colour = self.colour.for_pixel_type(first.pixel_type)
        self._cache = _FrameCache(2)

    def __repr__(self) -> str:
        return f"SequenceSource({str(self.pattern)!r}, frames={format_frame_range(self.frames)!r})"

    def path(self, frame: int) -> Path:
        return self.pattern.path(frame)

    def info(self, frame: int) -> ImageInfo:
        """The plate header of `frame` (windows and metadata), for writing its matte."""
        self._check(frame)
        return self._infos[frame].copy()

    def _load(self, frame: int) -> np.ndarray:
        path = self.pattern.path(frame)
        image = read_image(path, channels=self.channels)
        if image.info.display_window != self._infos[frame].display_window:
            raise ImageIOError(f"{path}: display window changed on disk since the sequence was opened")
        image.pixels = _rgb(image.pixels, image.info.channels)
        return to_display_window(image)


def _colour_kind(channels: tuple[str, ...], explicit: bool) -> str | None:
    """'rgb' or 'grey' for a channel selection that a plate can use, else None."""
    bases = [c.rsplit(".", 1)[-1] for c in channels]  # "diffuse.R" -> "R"
    if bases[:3] == ["R", "G", "B"] or (explicit and len(bases) >= 3):
        return "rgb"
    return "grey" if bases[:1] == ["Y"] else None


def _rgb(pixels: np.ndarray, channels: tuple[str, ...]) -> np.ndarray:
    """(H, W, 3): the colour channels, grey (Y) repeated (checked at construction)."""
    return pixels[..., :3] if pixels.shape[2] >= 3 and channels[:1] != ("Y",) else np.repeat(pixels[..., :1], 3, 2)


class ArraySource(_SourceBase):
    """A shot in memory: a list of (H, W, 3) scene-linear arrays (tests, server uploads)."""

    def __init__(self, linear: Sequence[np.ndarray], frames: Sequence[int] | None = None,
                 colour: ColourConverter | None = None, first_frame: int = 1) -> None:
        if not linear:
            raise ValueError("ArraySource needs at least one frame")
        self._arrays = [np.asarray(a, np.float32) for a in linear]
        shape = self._arrays[0].shape
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"frames must be (H, W, 3), frame 0 is {shape}")
        for i, arr in enumerate(self._arrays):
            if arr.shape != shape:
                raise ValueError(f"frame index {i} has shape {arr.shape}, expected {shape} like frame index 0")
        self.frames = list(frames) if frames is not None else list(range(first_frame, first_frame + len(linear)))
        if len(self.frames) != len(self._arrays) or len(set(self.frames)) != len(self.frames):
            raise ValueError(f"{len(self._arrays)} arrays need as many distinct frame numbers, got {self.frames}")
        self._frame_set = set(self.frames)
        self._index = {f: i for i, f in enumerate(self.frames)}
        self.height, self.width = shape[:2]
        self.colour = colour or ColourConverter()
        self._cache = _FrameCache(2)

    def info(self, frame: int) -> ImageInfo:
        """A plain header (data window = display window) for writing this frame's matte."""
        self._check(frame)
        return ImageInfo.for_size(self.width, self.height, ("R", "G", "B"))

    def _load(self, frame: int) -> np.ndarray:
        arr = self._arrays[self._index[frame]]
        return np.where(np.isfinite(arr), arr, 0.0).astype(np.float32)  # the protocol promises no NaN/inf


def write_alpha_frame(pattern: SequencePattern, frame: int, alpha: np.ndarray, like: ImageInfo | None = None) -> Path:
    """Write the matte of `frame`: alpha (H, W) over the display window, cut to the plate's data window.

    With `like` (the plate's `info(frame)`), the file gets the plate's data/display
    windows and metadata; alpha must then be (like.full_height, like.full_width).
    """
    path = pattern.path(frame)
    alpha = np.asarray(alpha, np.float32)
    if alpha.ndim == 3 and alpha.shape[2] == 1:
        alpha = alpha[..., 0]
    if like is None:
        return write_alpha(path, alpha)
    if alpha.shape != (like.full_height, like.full_width):
        raise ImageIOError(f"{path}: alpha is {alpha.shape[1]}x{alpha.shape[0]} but the plate's display window is "
                           f"{like.full_width}x{like.full_height}")
    return write_alpha(path, from_display_window(alpha, like), like=like)


def write_rgba_frame(pattern: SequencePattern, frame: int, rgba: np.ndarray, like: ImageInfo) -> Path:
    """Write premultiplied RGBA (display window, H x W x 4, scene-linear) of `frame` as EXR with the
    plate's windows and metadata, cut to its data window (overscan beyond the display window is 0:
    no matte there); float plates stay float, others are written half."""
    path = pattern.path(frame)
    if path.suffix.lower() not in RGBA_SUFFIXES:
        raise ImageIOError(f"{path}: premultiplied scene-linear RGBA is written as EXR only")
    rgba = np.array(rgba, np.float32)
    if rgba.shape != (like.full_height, like.full_width, 4):
        raise ImageIOError(f"{path}: RGBA is {rgba.shape} but the plate's display window is "
                           f"{like.full_width}x{like.full_height} (4 channels)")
    sanitise(rgba, str(path))
    pixel_type = "float" if like.pixel_type == "float" else "half"
    return write_image(path, from_display_window(rgba, like), channels=("R", "G", "B", "A"), info=like,
                       pixel_type=pixel_type)
