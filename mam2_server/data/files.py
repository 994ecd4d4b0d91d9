"""File access shared by the dataset readers: listing, decoding, sRGB <-> linear, compositing.

Training images are the 8-bit sRGB files the datasets ship (JPEG / PNG). They are decoded
with OpenCV (fast JPEG / PNG, and video files through its bundled FFmpeg); palette PNGs
(DAVIS / YouTube-VOS / MOSE annotations) through Pillow, which keeps the palette indices
that OpenCV would turn into colours.

Compositing happens in linear light, as our plates are: the sRGB foreground and background
are decoded to linear (`mam2_server.io.srgb`), mixed with the alpha, and the mix is encoded
back to sRGB because the network sees display-encoded frames (see `StreamingTracker`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from mam2_server.io.srgb import linear_to_srgb, srgb_to_linear

__all__ = ["IMAGE_EXTS", "VIDEO_EXTS", "DatasetLayoutError", "list_images", "walk_dirs", "find_dirs", "seen_dirs", "read_rgb", "read_alpha",
           "read_rgba", "read_palette", "composite_linear", "VideoFile"]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm")


class DatasetLayoutError(ValueError):
    """A dataset folder does not have the layout its reader expects; the message names the folder or file."""


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name (hidden files skipped)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise DatasetLayoutError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    return [Path(e.path) for e in entries
            if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTS)]


def walk_dirs(root: Path, depth: int = 3) -> list[Path]:
    """`root` and the folders up to `depth` levels below it (never deeper: datasets hold millions of files)."""
    found, level = [], [root]
    for _ in range(depth + 1):
        found.extend(level)
        nxt = []
        for d in level:
            try:
                nxt.extend(sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")))
            except OSError:
                continue
        level = nxt
    return found


def find_dirs(root: Path, names: Iterable[str], *, depth: int = 3) -> list[Path]:
    """Folders named one of `names` (case-insensitive) at `root` or up to `depth` levels below it, sorted."""
    wanted = {n.lower() for n in names}
    return sorted(d for d in walk_dirs(root, depth) if d.name.lower() in wanted)


def seen_dirs(root: Path, limit: int = 12) -> str:
    """The folders just below `root` (two levels), for error messages."""
    names = [str(d.relative_to(root)) for d in walk_dirs(root, 2)[1:]]
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "") or "(none)"


def _imread(path: Path, flags: int) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    image = cv2.imdecode(data, flags) if data is not None and data.size else None
    if image is None:
        what = "missing" if data is None else "not a readable image"
        raise DatasetLayoutError(f"{path}: {what}")
    return image


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 sRGB of an image file (grey is repeated, alpha dropped)."""
    return cv2.cvtColor(_imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _unit(x: np.ndarray) -> np.ndarray:
    scale = 65535.0 if x.dtype == np.uint16 else 255.0 if x.dtype == np.uint8 else 1.0
    return np.clip(x.astype(np.float32) / scale, 0.0, 1.0)


def read_alpha(path: Path) -> np.ndarray:
    """(H, W) float32 alpha (or mask) in [0, 1]: grey, the first channel of RGB, or the A of RGBA."""
    x = _imread(path, cv2.IMREAD_UNCHANGED)
    if x.ndim == 3:
        x = x[..., 3] if x.shape[2] == 4 else x[..., 0]
    return _unit(x)


def read_rgba(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(RGB (H, W, 3) uint8, alpha (H, W) float32) of an RGBA file; a file without alpha is an error."""
    x = _imread(path, cv2.IMREAD_UNCHANGED)
    if x.ndim != 3 or x.shape[2] != 4:
        raise DatasetLayoutError(f"{path}: expected an RGBA image (foreground + alpha), got shape {x.shape}")
    rgb = cv2.cvtColor(x[..., :3], cv2.COLOR_BGR2RGB)
    if rgb.dtype != np.uint8:
        rgb = (rgb.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    return rgb, _unit(x[..., 3])


def read_palette(path: Path) -> np.ndarray:
    """(H, W) uint8 object ids of a palette ("P") or grey PNG, as DAVIS-style annotations store them."""
    from PIL import Image

    if not Path(path).is_file():
        raise DatasetLayoutError(f"{path}: missing")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DatasetLayoutError(f"{path}: annotation is a {im.mode} image; object masks are palette "
                                         "(P) or grey PNGs whose pixel values are object ids")
            return np.asarray(im, dtype=np.uint8).copy()
    except OSError as exc:
        raise DatasetLayoutError(f"{path}: not a readable PNG ({exc})") from None


def composite_linear(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """alpha * fg + (1 - alpha) * bg in linear light. fg / bg: (H, W, 3) sRGB (uint8 or float in [0, 1]),
    alpha (H, W) in [0, 1]; returns (H, W, 3) float32 sRGB in [0, 1]."""
    a = np.asarray(alpha, np.float32)[..., None]
    return linear_to_srgb(a * srgb_to_linear(fg) + (1.0 - a) * srgb_to_linear(bg))


class VideoFile:
    """Frames of a video file by index through OpenCV (VideoMatte240K's fgr/<clip>.mp4, pha/<clip>.mp4)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise DatasetLayoutError(f"{self.path}: not a readable video file")
        self.num_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        if self.num_frames <= 0:
            raise DatasetLayoutError(f"{self.path}: the video has no frames")

    def read(self, indices: Sequence[int]) -> list[np.ndarray]:
        """(H, W, 3) uint8 RGB frames at `indices` (any order; decoded forward from the first)."""
        cap = cv2.VideoCapture(str(self.path))
        try:
            out: dict[int, np.ndarray] = {}
            wanted = sorted(set(indices))
            cap.set(cv2.CAP_PROP_POS_FRAMES, wanted[0])
            pos = wanted[0]
            for idx in wanted:
                while pos <= idx:
                    ok, frame = cap.read()
                    if not ok:
                        raise DatasetLayoutError(f"{self.path}: cannot decode frame {pos} "
                                                 f"(the file says it has {self.num_frames})")
                    pos += 1
                out[idx] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            return [out[i] for i in indices]
        finally:
            cap.release()
