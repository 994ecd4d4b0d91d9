"""Synthetic shots with exact ground-truth alpha, generated lazily frame by frame.

A clip is a foreground generator (one of KINDS) over a photographic background seen by a
moving or locked camera, composited in scene-linear light:

    plate = alpha * F + (1 - alpha) * B      (= premult + (1 - alpha) * B)

Nothing is stored per frame: `SynthClip.frame(n)` recomputes frame n from the seed, so
1080p clips of any length stream with flat memory (only the last frame is cached).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import cv2
import numpy as np

from mam2_server.prompts import FOREGROUND, Point, Prompt, save_prompts
from mam2_server.synth.background import Camera, linear_to_srgb, pick_background
from mam2_server.synth.conditions import CONDITIONS, LARGE, Camouflage, Midground, composite, magnify
from mam2_server.synth.kinds_hard import Foliage, Hair, Solid
from mam2_server.synth.kinds_soft import Cloud, Fire, Glass, Smoke, Water
from mam2_server.synth.layer import Foreground

_GENERATORS: dict[str, type[Foreground]] = {
    "solid": Solid, "hair": Hair, "smoke": Smoke, "fire": Fire, "glass": Glass, "foliage": Foliage, "water": Water,
    "cloud": Cloud,
}
KINDS: tuple[str, ...] = tuple(_GENERATORS)
CAMERAS: tuple[str, ...] = ("moving", "locked")


class Layers(NamedTuple):
    """One frame's layers, all float32 scene-linear: plate = premult + (1 - alpha) * background
    (mixed on sRGB-encoded values instead when `space` is 'srgb')."""

    premult: np.ndarray     # (H, W, 3) alpha * F
    alpha: np.ndarray       # (H, W) in [0, 1]
    background: np.ndarray  # (H, W, 3)
    space: str = "linear"   # where the composite is done: "linear" or "srgb"

    @property
    def plate(self) -> np.ndarray:
        return composite(self.premult, self.alpha, self.background, self.space)

    @property
    def foreground(self) -> np.ndarray:
        """F = premult / alpha (0 where alpha is 0)."""
        a = self.alpha[..., None]
        return np.where(a > 0, self.premult / np.maximum(a, 1e-8), 0.0).astype(np.float32)


@dataclass(eq=False)
class SynthClip:
    """A synthetic shot; also usable as a `stages.base.FrameSource` (frames, width, height, linear, display)."""

    kind: str
    width: int
    height: int
    frames: list[int]
    seed: int
    camera: str
    background: str
    prompt: Prompt | None = None  # box + one fg point on the first frame (set by make_clip)
    condition: str = "standard"  # see synth.conditions
    _fg: Foreground = field(default=None, repr=False)  # type: ignore[assignment]
    _cam: Camera = field(default=None, repr=False)  # type: ignore[assignment]
    _mid: Midground | None = field(default=None, repr=False)
    _camo: Camouflage | None = field(default=None, repr=False)
    _last: tuple[int, Layers] | None = field(default=None, repr=False)

    def _time(self, frame: int) -> float:
        if frame not in self.frames:
            raise ValueError(f"frame {frame} is not in this clip ({self.frames[0]}-{self.frames[-1]})")
        return float(frame - self.frames[0])

    def layers(self, frame: int) -> Layers:
        """Premultiplied foreground, alpha and background of a frame (generated on demand)."""
        if self._last is not None and self._last[0] == frame:
            return self._last[1]
        t = self._time(frame)
        premult, alpha = self._fg.render(0.0 if self.condition == "static" else t)
        background = self._cam.render(t)
        if self.condition == "large":
            premult, alpha = magnify(premult, alpha, LARGE)
        if self._camo is not None:
            premult = self._camo.recolour(premult, alpha)
        if self._mid is not None:
            # the midground hides the object: what is seen of it is alpha (1 - m); everything behind
            # the object's visible part (midground included) is its background
            mid_p, mid_a = self._mid.render(t)
            seen = alpha * (1.0 - mid_a)
            rest = mid_p + ((1.0 - mid_a) * (1.0 - alpha))[..., None] * background
            background = np.where((seen < 1.0)[..., None], rest / np.maximum(1.0 - seen, 1e-6)[..., None], 0.0)
            premult, alpha = premult * (1.0 - mid_a)[..., None], seen
        out = Layers(premult.astype(np.float32), alpha.astype(np.float32), background.astype(np.float32),
                     "srgb" if self.condition == "srgb" else "linear")
        self._last = (frame, out)  # one frame only: memory stays flat while streaming
        return out

    def frame(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """(linear plate (H, W, 3), ground-truth alpha (H, W)), float32."""
        lay = self.layers(frame)
        return lay.plate.astype(np.float32), lay.alpha

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for n in self.frames:
            plate, alpha = self.frame(n)
            yield n, plate, alpha

    # FrameSource protocol
    def linear(self, frame: int) -> np.ndarray:
        return self.frame(frame)[0]

    def display(self, frame: int) -> np.ndarray:
        """sRGB-encoded plate clipped to [0, 1] (the plain sRGB curve, not OCIO)."""
        return linear_to_srgb(self.frame(frame)[0])

    def alpha(self, frame: int) -> np.ndarray:
        return self.layers(frame).alpha

    def info(self) -> dict:
        return {"kind": self.kind, "width": self.width, "height": self.height, "frames": list(self.frames),
                "seed": self.seed, "camera": self.camera, "background": self.background, "condition": self.condition}


def prompt_from_alpha(alpha: np.ndarray, frame: int, *, threshold: float = 0.05, pad: float = 0.05) -> Prompt:
    """A box around alpha > threshold (padded by `pad` of its size, >= 2 px, clipped to the frame) and one
    foreground point on the most interior pixel of the largest high-alpha region."""
    h, w = alpha.shape
    ys, xs = np.nonzero(alpha > threshold)
    if len(xs) == 0:
        raise ValueError(f"frame {frame}: the object is not visible (no alpha > {threshold})")
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    px, py = max(2.0, pad * (x1 - x0)), max(2.0, pad * (y1 - y0))
    box = (max(0.0, x0 - px), max(0.0, y0 - py), min(float(w), x1 + px), min(float(h), y1 + py))
    high = (alpha >= max(threshold, 0.5 * float(alpha.max()))).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(high, connectivity=4)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == biggest).astype(np.uint8)
    dist = cv2.distanceTransform(np.pad(region, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    dist += alpha * 1e-3  # tie-break towards higher alpha
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return Prompt(frame=frame, box=box, points=(Point(x + 0.5, y + 0.5, FOREGROUND),))


def make_clip(kind: str, *, num_frames: int = 8, width: int = 256, height: int = 144, seed: int = 0,
              first_frame: int = 1001, camera: str = "moving", background: str | None = None,
              condition: str = "standard") -> SynthClip:
    """Build a clip (renders only the first frame, for the prompt). `condition`: see `synth.conditions`
    ('static' locks the camera, 'still' makes one frame)."""
    if kind not in _GENERATORS:
        raise ValueError(f"unknown kind {kind!r}; choose from {list(KINDS)}")
    if camera not in CAMERAS:
        raise ValueError(f"camera must be one of {CAMERAS}, got {camera!r}")
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    if num_frames < 1 or width < 16 or height < 16:
        raise ValueError(f"need num_frames >= 1 and a frame of at least 16x16, got {num_frames} x {width}x{height}")
    if condition == "still":
        num_frames = 1
    if condition == "static":
        camera = "locked"
    kind_index = KINDS.index(kind)
    bg = background or pick_background(seed, kind_index)
    fg = _GENERATORS[kind](np.random.default_rng([seed, kind_index, 2]), width, height, seed * 1000 + kind_index)
    cam = Camera(np.random.default_rng([seed, kind_index, 3]), bg, width, height, camera == "moving")
    frames = list(range(first_frame, first_frame + num_frames))
    mid = camo = None
    if condition == "parallax":
        mid = Midground(np.random.default_rng([seed, kind_index, 4]), width, height, num_frames, seed * 1000 + 7)
    if condition == "camouflage":
        camo = Camouflage(np.random.default_rng([seed, kind_index, 5]), cam.render(0.0))
    clip = SynthClip(kind, width, height, frames, seed, camera, bg, None, condition, fg, cam, mid, camo)
    clip.prompt = prompt_from_alpha(clip.alpha(frames[0]), frames[0])
    return clip


def make_benchmark(kinds: Sequence[str] = KINDS, *, min_clips: int = 8, num_frames: int = 8, width: int = 256,
                   height: int = 144, seed: int = 0, first_frame: int = 1001) -> Iterator[SynthClip]:
    """One clip per kind, then further seeds (cycling kinds) until at least `min_clips`; cameras alternate
    moving / locked. Clips are built lazily, one at a time."""
    kinds = list(kinds)
    if not kinds:
        raise ValueError("make_benchmark needs at least one kind")
    total = max(min_clips, len(kinds))
    for i in range(total):
        kind = kinds[i % len(kinds)]
        yield make_clip(kind, num_frames=num_frames, width=width, height=height, seed=seed + i // len(kinds),
                        first_frame=first_frame, camera=CAMERAS[(i + i // len(kinds)) % 2])


@dataclass(frozen=True)
class ClipPaths:
    root: Path
    plates: str   # frame pattern of the RGB plate EXRs (no alpha: the plate must not leak ground truth)
    alphas: str   # frame pattern of the ground-truth alpha EXRs
    prompts: Path
    info: Path


def write_clip(clip: SynthClip, outdir: str | Path) -> ClipPaths:
    """Write plate/plate.####.exr (RGB half), alpha/alpha.####.exr, prompts.json and clip.json."""
    from mam2_server.io.image import write_alpha, write_image
    from mam2_server.io.sequence import SequencePattern

    root = Path(outdir)
    (root / "plate").mkdir(parents=True, exist_ok=True)
    (root / "alpha").mkdir(parents=True, exist_ok=True)
    paths = ClipPaths(root, str(root / "plate" / "plate.####.exr"), str(root / "alpha" / "alpha.####.exr"),
                      root / "prompts.json", root / "clip.json")
    plates, alphas = SequencePattern(paths.plates), SequencePattern(paths.alphas)
    for n, plate, alpha in clip:
        write_image(plates.path(n), plate, channels=("R", "G", "B"))
        write_alpha(alphas.path(n), alpha)
    if clip.prompt is not None:
        save_prompts([clip.prompt], paths.prompts)
    paths.info.write_text(json.dumps(clip.info(), indent=2) + "\n")
    return paths
