"""On-disk state of a shot: spilled frames, prompts and the alpha cache, all written atomically.

Layout under ``<cache-dir>/shots/<shot id>/``::

    shot.json                      size, frame range, colour space, prompts (boxes/points)
    frames/<frame>.<digest>.exr    received pixels (half or float, as received; RGB, or Y for grey)
    frames/<frame>.<digest>.path   text file holding a shared-disk path (encoding "path")
    prompts/<frame>.mask.exr       mask prompts
    alpha/<frame>.<key>.exr        finished alpha, float32 'A'; key = hash of what it depends on

Every file is written to a temporary name in the same directory and renamed, so a
crash (even ``kill -9``) leaves either the old file or the new one, never half
of one. Because the alpha key covers the prompts and the pixels the frame
depends on, a restarted server serves every finished frame from disk and
recomputes only what is missing.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from host_plugins.mam2_client import wire
from mam2_server.io.atomic import atomic_write_bytes
from mam2_server.io.image import read_image, to_display_window, write_image
from mam2_server.protocol import ProtocolError

_SHOT_RE = re.compile(wire.SHOT_ID_PATTERN)
_FRAME_FILE = re.compile(r"^(-?\d+)\.([0-9a-f]{8,64})\.(exr|path)$")
MANIFEST_VERSION = 1


def check_shot_id(shot: str) -> str:
    """The shot id if it is safe as a directory name, else ProtocolError(bad_shot)."""
    if not isinstance(shot, str) or not _SHOT_RE.fullmatch(shot) or ".." in shot:
        raise ProtocolError(wire.E_BAD_SHOT, f"shot id {shot!r:.80} is not allowed: use 1-128 of A-Z a-z 0-9 _ . - "
                                             "starting with a letter or digit, without '..'")
    return shot


class ShotDisk:
    """Files of one shot. Methods are called from the server's worker threads, one shot at a time."""

    def __init__(self, root: Path, shot: str, spill_compression: str = "none") -> None:
        self.spill_compression = spill_compression
        self.root = Path(root).resolve()
        self.dir = (self.root / "shots" / check_shot_id(shot)).resolve()
        if self.dir.parent != self.root / "shots":
            raise ProtocolError(wire.E_BAD_SHOT, f"shot id {shot!r} escapes the cache directory")
        self.frames_dir = self.dir / "frames"
        self.alpha_dir = self.dir / "alpha"
        self.prompt_dir = self.dir / "prompts"

    def create(self) -> None:
        for d in (self.frames_dir, self.alpha_dir, self.prompt_dir):
            d.mkdir(parents=True, exist_ok=True)

    # -- manifest -------------------------------------------------------------
    def load_manifest(self) -> dict | None:
        try:
            data = json.loads((self.dir / "shot.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("version") == MANIFEST_VERSION else None

    def save_manifest(self, data: dict) -> None:
        atomic_write_bytes(self.dir / "shot.json", json.dumps({"version": MANIFEST_VERSION, **data}, indent=1).encode())

    # -- frames ---------------------------------------------------------------
    def scan_frames(self) -> dict[int, tuple[str, Path]]:
        """frame -> (digest, file) for every received frame."""
        found: dict[int, tuple[str, Path]] = {}
        if not self.frames_dir.is_dir():
            return found
        for entry in os.scandir(self.frames_dir):
            m = _FRAME_FILE.match(entry.name)
            if m:
                found[int(m.group(1))] = (m.group(2), Path(entry.path))
        return found

    def put_frame(self, frame: int, digest: str, pixels: np.ndarray | None, shared_path: str | None,
                  exr_bytes: bytes | memoryview | None = None, check=None) -> Path:
        """Store one frame (pixels spilled as EXR, EXR bytes as received, or a pointer to a shared file).

        `check(path)` validates the written file (it is deleted on failure). Older versions of the
        frame stay until the caller calls `remove_other_versions`.
        """
        if shared_path is not None:
            path = self.frames_dir / f"{frame}.{digest}.path"
            atomic_write_bytes(path, os.path.realpath(shared_path).encode())
        else:
            path = self.frames_dir / f"{frame}.{digest}.exr"
            if exr_bytes is None:
                channels = ("R", "G", "B") if pixels.shape[2] == 3 else ("Y",)
                write_image(path, pixels, channels=channels, compression=self.spill_compression,
                            pixel_type="half" if pixels.dtype == np.float16 else "float")
            else:
                atomic_write_bytes(path, exr_bytes)
        if check is not None:
            try:
                check(path)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        return path

    def remove_other_versions(self, frame: int, keep: Path) -> None:
        """Delete the files of `frame` other than `keep` (older uploads of it)."""
        for old in self.frames_dir.glob(f"{frame}.*"):
            if old != keep and _FRAME_FILE.match(old.name):
                old.unlink(missing_ok=True)

    @staticmethod
    def read_frame(path: Path, read_shared: Callable[[str], np.ndarray] | None = None) -> np.ndarray:
        """(H, W, 3) float32 scene-linear RGB over the display window of a stored frame (NaN/inf -> 0).

        read_shared(path) reads a shared-disk plate (the server passes `FileReader.pixels`, which
        keeps a hung disk from stalling the compute thread and checks that the file is still the one
        accepted at put_frames); default: read it directly, unchecked (tests)."""
        if path.suffix == ".path" and read_shared is not None:
            pixels = read_shared(path.read_text())
        else:
            image = read_image(Path(path.read_text()) if path.suffix == ".path" else path)
            pixels = image.pixels if image.info.data_is_display else to_display_window(image)
        if pixels.shape[2] < 3:  # a grey (Y) plate
            pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
        return np.ascontiguousarray(pixels[:, :, :3])

    # -- prompt masks ------------------------------------------------------------
    def mask_path(self, frame: int) -> Path:
        return self.prompt_dir / f"{frame}.mask.exr"

    def save_mask(self, frame: int, mask: np.ndarray) -> str:
        path = self.mask_path(frame)
        write_image(path, mask[:, :, None], channels=("A",), pixel_type="float")
        return path.name

    def load_mask(self, frame: int) -> np.ndarray:
        return read_image(self.mask_path(frame)).pixels[:, :, 0]

    # -- alpha cache ---------------------------------------------------------------
    def alpha_path(self, frame: int, key: str) -> Path:
        return self.alpha_dir / f"{frame}.{key}.exr"

    def has_alpha(self, frame: int, key: str) -> bool:
        return self.alpha_path(frame, key).is_file()

    def save_alpha(self, frame: int, key: str, alpha: np.ndarray) -> None:
        path = self.alpha_path(frame, key)
        write_image(path, alpha[:, :, None], channels=("A",), pixel_type="float")
        for old in self.alpha_dir.glob(f"{frame}.*.exr"):
            if old != path:
                old.unlink(missing_ok=True)

    def load_alpha(self, frame: int, key: str) -> np.ndarray | None:
        path = self.alpha_path(frame, key)
        try:
            return np.ascontiguousarray(read_image(path).pixels[:, :, 0])
        except Exception:  # noqa: BLE001 - a missing or unreadable file is a cache miss
            return None

    def purge(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
