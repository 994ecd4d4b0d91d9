"""Foreground layer plumbing: the generator interface, an 'over' canvas, shape coverage helpers.

Foregrounds are rendered **premultiplied** in scene-linear light: `premult = alpha * F`.
The plate is then `premult + (1 - alpha) * background`, i.e. alpha * F + (1 - alpha) * B.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Sequence

import cv2
import numpy as np

from mam2_server.synth.noise import clip_box

_SHIFT = 4  # fractional bits of cv2 drawing coordinates


class Foreground(ABC):
    """One kind of synthetic foreground; all randomness is drawn in __init__ from `rng`."""

    def __init__(self, rng: np.random.Generator, width: int, height: int, seed: int) -> None:
        self.width, self.height, self.seed = width, height, seed
        self.unit = float(min(width, height))  # object sizes are fractions of this

    @abstractmethod
    def render(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Frame time t (0 = first frame) -> (premult (H, W, 3), alpha (H, W)), float32."""


class Canvas:
    """Full-frame premultiplied RGB + alpha accumulated with the 'over' operator."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.premult = np.zeros((height, width, 3), np.float32)
        self.alpha = np.zeros((height, width), np.float32)

    def region(self, box: tuple[float, float, float, float]) -> tuple[int, int, int, int] | None:
        x0, y0, x1, y1 = clip_box(box, self.width, self.height)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def over(self, box: tuple[int, int, int, int], colour: np.ndarray, alpha: np.ndarray,
             premultiplied: bool = False) -> None:
        """Composite a layer over the canvas inside box (x0, y0, x1, y1); colour (h, w, 3) or (3,)."""
        x0, y0, x1, y1 = box
        a = np.clip(alpha, 0.0, 1.0).astype(np.float32)
        c = np.asarray(colour, np.float32)
        layer = c if premultiplied else c * a[..., None]
        keep = 1.0 - a
        self.premult[y0:y1, x0:x1] = layer + keep[..., None] * self.premult[y0:y1, x0:x1]
        self.alpha[y0:y1, x0:x1] = a + keep * self.alpha[y0:y1, x0:x1]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.premult, self.alpha


def polar_blob_sdf(u: np.ndarray, v: np.ndarray, radius: float, amps: Sequence[float],
                   phases: Sequence[float], first_harmonic: int = 2) -> np.ndarray:
    """Approximate signed distance (object px, < 0 inside) to r(theta) = R (1 + sum a_k cos(k theta + p_k))."""
    rho = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    r = np.ones_like(theta)
    dr = np.zeros_like(theta)
    for i, (a, p) in enumerate(zip(amps, phases)):
        k = first_harmonic + i
        r += a * np.cos(k * theta + p)
        dr -= a * k * np.sin(k * theta + p)
    r *= radius
    dr *= radius
    return (rho - r) / np.sqrt(1.0 + (dr / np.maximum(r, 1e-3)) ** 2)


def polygon_sdf(x: np.ndarray, y: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Exact signed distance to a simple polygon (verts (N, 2)), < 0 inside (even-odd rule)."""
    x, y = np.broadcast_arrays(x, y)
    d2 = np.full(x.shape, np.inf, np.float32)
    inside = np.zeros(x.shape, bool)
    n = len(verts)
    for i in range(n):
        ax, ay = verts[i]
        bx, by = verts[(i + 1) % n]
        ex, ey = bx - ax, by - ay
        wx, wy = x - ax, y - ay
        h = np.clip((wx * ex + wy * ey) / max(ex * ex + ey * ey, 1e-9), 0.0, 1.0)
        d2 = np.minimum(d2, (wx - ex * h) ** 2 + (wy - ey * h) ** 2)
        crosses = (ay > y) != (by > y)
        xint = ax + (y - ay) * ex / np.where(ey == 0, 1e-9, ey)
        inside ^= crosses & (x < xint)
    d = np.sqrt(d2)
    return np.where(inside, -d, d)


def bounds(points: Sequence[np.ndarray], margin: float) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) of point arrays (N, 2), grown by margin."""
    allp = np.concatenate([np.asarray(p, np.float64).reshape(-1, 2) for p in points])
    lo, hi = allp.min(axis=0) - margin, allp.max(axis=0) + margin
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _to_fixed(points: np.ndarray, x0: int, y0: int, ss: int) -> np.ndarray:
    """Image pixel coordinates -> cv2 fixed-point coordinates on an ss-times supersampled canvas."""
    p = (np.asarray(points, np.float64) - (x0, y0)) * ss - 0.5  # pixel centre (i + .5)/ss -> cv2 integer i
    return np.round(p * (1 << _SHIFT)).astype(np.int32)


def draw_coverage(box: tuple[int, int, int, int], ss: int, *, polylines: Sequence[tuple[Sequence[np.ndarray], float]] = (),
                  polygons: Sequence[np.ndarray] = (), ellipses: Sequence[tuple[float, float, float, float, float]] = (),
                  ) -> np.ndarray:
    """Coverage in [0, 1] over box (x0, y0, x1, y1) of shapes drawn anti-aliased at ss x supersampling.

    polylines: (list of (N, 2) arrays, width in px) pairs; polygons: filled (N, 2) arrays;
    ellipses: filled (cx, cy, rx, ry, angle_deg). Coordinates are image pixels (centre of pixel i at i + .5).
    """
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    canvas = np.zeros((h * ss, w * ss), np.uint8)
    if polygons:
        cv2.fillPoly(canvas, [_to_fixed(p, x0, y0, ss) for p in polygons], 255, cv2.LINE_AA, _SHIFT)
    for lines, width in polylines:
        if len(lines):
            thick = max(1, int(round(width * ss)))
            cv2.polylines(canvas, [_to_fixed(p, x0, y0, ss) for p in lines], False, 255, thick, cv2.LINE_AA, _SHIFT)
    for cx, cy, rx, ry, ang in ellipses:
        c = _to_fixed(np.array([[cx, cy]]), x0, y0, ss)[0]
        axes = (max(1, int(round(rx * ss * (1 << _SHIFT)))), max(1, int(round(ry * ss * (1 << _SHIFT)))))
        cv2.ellipse(canvas, (int(c[0]), int(c[1])), axes, ang, 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)
    if ss > 1:
        canvas = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA)
    return canvas.astype(np.float32) * (1.0 / 255.0)


def rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]], points.dtype if points.dtype.kind == "f" else np.float64)
