"""Photographic backgrounds (bundled with scikit-image, no network) seen by a moving or locked camera."""
from __future__ import annotations

import functools

import cv2
import numpy as np

from mam2_server.io.srgb import linear_to_srgb, srgb_to_linear  # noqa: F401 (synth's colour helpers, re-exported)
from mam2_server.synth.noise import Wobble

# skimage.data images that ship inside the wheel (checked offline); grey ones get a tint
BACKGROUNDS: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "camera", "grass", "gravel", "brick")
_TINTS = {"camera": (1.0, 0.97, 0.9), "grass": (0.75, 1.0, 0.6), "gravel": (1.0, 0.95, 0.85), "brick": (1.0, 0.8, 0.7)}


@functools.lru_cache(maxsize=len(BACKGROUNDS))
def load_background(name: str) -> np.ndarray:
    """(h, w, 3) float32 scene-linear RGB of a bundled skimage.data image (read-only, cached)."""
    if name not in BACKGROUNDS:
        raise ValueError(f"unknown background {name!r}; choose from {list(BACKGROUNDS)}")
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3]
    lut = srgb_to_linear(np.arange(256, dtype=np.float32) / 255.0)
    lin = lut[img]
    if name in _TINTS:
        lin = lin * np.asarray(_TINTS[name], np.float32)
    lin = np.ascontiguousarray(lin, dtype=np.float32)
    lin.setflags(write=False)
    return lin


class Camera:
    """A crop window over a background image: pans and zooms smoothly ('moving') or stays put ('locked')."""

    def __init__(self, rng: np.random.Generator, name: str, width: int, height: int, moving: bool) -> None:
        self.name, self.width, self.height, self.moving = name, width, height, moving
        self.image = load_background(name)
        ih, iw = self.image.shape[:2]
        self.k_min = max(width / iw, height / ih)  # output px per source px that just covers the frame
        self.zoom = Wobble.random(rng, 1.3 if moving else 1.08, 0.08 if moving else 0.0, (60, 150), 1)
        self.pan_x = Wobble.random(rng, rng.uniform(-0.3, 0.3), 0.6 if moving else 0.0, (50, 140))
        self.pan_y = Wobble.random(rng, rng.uniform(-0.3, 0.3), 0.5 if moving else 0.0, (60, 160))

    def transform(self, t: float) -> np.ndarray:
        """2x3 map from output pixel to source pixel at frame time t."""
        ih, iw = self.image.shape[:2]
        k = self.k_min * self.zoom(t)
        hx, hy = self.width / (2 * k), self.height / (2 * k)  # half visible extent in source px
        px = max(-1.0, min(1.0, self.pan_x(t)))
        py = max(-1.0, min(1.0, self.pan_y(t)))
        cx = iw / 2 + px * (iw / 2 - hx)
        cy = ih / 2 + py * (ih / 2 - hy)
        # source = (x + 0.5) / k + (c - h) - 0.5
        return np.array([[1 / k, 0, cx - hx + 0.5 / k - 0.5], [0, 1 / k, cy - hy + 0.5 / k - 0.5]], np.float32)

    def render(self, t: float) -> np.ndarray:
        """(H, W, 3) float32 scene-linear background at frame time t."""
        t = t if self.moving else 0.0
        return cv2.warpAffine(self.image, self.transform(t), (self.width, self.height),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)


def pick_background(seed: int, index: int) -> str:
    """Background of the index-th clip of a seed: a seeded permutation, so one seed's clips all differ."""
    order = np.random.default_rng([seed, 0xB6]).permutation(len(BACKGROUNDS))
    return BACKGROUNDS[int(order[index % len(BACKGROUNDS)])]

