"""Shooting conditions for synthetic clips: the same foregrounds under other camera set-ups and composites.

A condition changes how a clip's layers are made or mixed, never the ground truth's meaning
(alpha is the visible coverage of the object). Used to judge the engines on material they were
not tuned on (`mam2 bench engines --split heldout`):

* ``standard``: the foreground over the photograph, composited in linear light;
* ``static``: a locked-off camera and a foreground frozen in time (a still translucent layer never
  reveals the background behind it);
* ``srgb``: composited on display-encoded values (what many stock elements and renders are),
  then decoded back to linear;
* ``large``: the foreground magnified 1.8x about the frame centre, so soft objects fill most of
  the box;
* ``camouflage``: the object keeps its pattern and shading but in two colours of its own
  background (an opaque object textured with colours taken from its background);
* ``parallax``: an opaque midground layer (poles) passing between camera and object at its own
  speed: it hides the object where it passes, so the truth is alpha x (1 - midground);
* ``still``: one frame only (the clip length is forced to 1).
"""
from __future__ import annotations

import cv2
import numpy as np

from mam2_server.synth.background import linear_to_srgb, srgb_to_linear
from mam2_server.synth.layer import Canvas, draw_coverage
from mam2_server.synth.noise import fractal_noise, supersample_factor

CONDITIONS: tuple[str, ...] = ("standard", "static", "srgb", "large", "camouflage", "parallax", "still")
LARGE = 1.8


def magnify(premult: np.ndarray, alpha: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale a layer by `factor` about the frame centre (premultiplied, so edges stay consistent)."""
    h, w = alpha.shape
    M = np.float32([[factor, 0, (1 - factor) * w / 2], [0, factor, (1 - factor) * h / 2]])
    warp = lambda x: cv2.warpAffine(x, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)  # noqa: E731
    return warp(premult), np.clip(warp(alpha), 0, 1)


def composite(premult: np.ndarray, alpha: np.ndarray, background: np.ndarray, space: str) -> np.ndarray:
    """The plate: alpha F + (1 - alpha) B in linear light, or on sRGB-encoded values ('srgb')."""
    a = alpha[..., None]
    if space == "linear":
        return (premult + (1.0 - a) * background).astype(np.float32)
    fg = np.where(a > 0, premult / np.maximum(a, 1e-8), 0.0)
    mixed = a * linear_to_srgb(fg) + (1.0 - a) * linear_to_srgb(background)
    return srgb_to_linear(mixed)


class Midground:
    """1-3 opaque textured poles, nearer than the object, sliding across the frame during the clip."""

    def __init__(self, rng: np.random.Generator, width: int, height: int, frames: int, seed: int) -> None:
        self.width, self.height, self.seed = width, height, seed
        n = int(rng.integers(1, 4))
        span = max(frames - 1, 1)
        direction = rng.choice([-1.0, 1.0])
        # each pole crosses the middle of the frame at some point of the clip
        self.x_mid = rng.uniform(0.3, 0.7, n) * width
        self.speed = direction * rng.uniform(0.6, 1.2, n) * width / span / 2
        self.t_mid = rng.uniform(0.2, 0.8, n) * span
        self.half = rng.uniform(0.02, 0.06, n) * min(width, height)
        self.tilt = rng.normal(0, 0.15, n)
        self.colour = np.array([0.05, 0.035, 0.02], np.float32) * rng.uniform(0.6, 2.0)
        self.ss = supersample_factor(height)

    def render(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        canvas = Canvas(self.width, self.height)
        box = (0, 0, self.width, self.height)
        polys = []
        for x, v, tm, hw, tilt in zip(self.x_mid, self.speed, self.t_mid, self.half, self.tilt):
            cx = x + v * (t - tm)
            top, bottom = -0.1 * self.height, 1.1 * self.height
            dx = np.tan(tilt) * (bottom - top) / 2
            polys.append(np.array([[cx - hw - dx, top], [cx + hw - dx, top], [cx + hw + dx, bottom],
                                   [cx - hw + dx, bottom]], np.float64))
        cov = draw_coverage(box, self.ss, polygons=polys)
        bark = fractal_noise(self.seed, self.width, self.height, cell=0.05 * self.height, octaves=3)
        canvas.over(box, self.colour * np.clip(1.0 + 0.5 * bark, 0.3, 2.0)[..., None], cov)
        return canvas.result()


class Camouflage:
    """The object keeps its own pattern and shading, but in two colours taken from its background
    (a grey-purple toy in front of grey-purple curtains)."""

    def __init__(self, rng: np.random.Generator, background: np.ndarray) -> None:
        smooth = cv2.blur(background, (9, 9)).reshape(-1, 3)
        picks = rng.choice(len(smooth), 64)
        lum = smooth[picks] @ np.float32([0.2126, 0.7152, 0.0722])
        order = np.argsort(lum)
        self.dark, self.light = smooth[picks[order[8]]], smooth[picks[order[-8]]]  # robust ends

    def recolour(self, premult: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        a = alpha[..., None]
        fg = np.where(a > 0, premult / np.maximum(a, 1e-8), 0.0)
        lum = fg @ np.float32([0.2126, 0.7152, 0.0722])
        seen = alpha > 0.5
        if seen.sum() < 4:
            return premult
        lo, hi = np.percentile(lum[seen], [5, 95])
        t = np.clip((lum - lo) / max(hi - lo, 1e-6), 0, 1)[..., None]
        return (a * (self.dark * (1 - t) + self.light * t)).astype(np.float32)
