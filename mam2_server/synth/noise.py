"""Deterministic, lazily evaluated building blocks: fractal noise, smooth motion, coverage.

Everything here is a pure function of (seed, frame time, parameters), so any frame of a
clip can be generated on its own, in any order, with identical results.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

_GRID = 128  # lattice size of the wrapped value-noise grids


def _lattice(seed: int, octave: int, key: int) -> np.ndarray:
    rng = np.random.default_rng([seed & 0xFFFFFFFF, octave, key & 0xFFFFFFFF, 0x5EED])
    return rng.standard_normal((_GRID, _GRID)).astype(np.float32)


def _smoothstep(x: float) -> float:
    return x * x * (3.0 - 2.0 * x)


def _evolving_lattice(seed: int, octave: int, time: float, period: float | None) -> np.ndarray:
    """Lattice that changes smoothly with time (cross-fade of keys every `period` frames)."""
    if not period:
        return _lattice(seed, octave, 0)
    k = math.floor(time / period)
    w = _smoothstep(time / period - k)
    a, b = _lattice(seed, octave, k), _lattice(seed, octave, k + 1)
    return (a * (1.0 - w) + b * w) / math.sqrt((1.0 - w) ** 2 + w ** 2)


def fractal_noise(seed: int, width: int, height: int, *, cell: float, octaves: int = 4,
                  gain: float = 0.5, time: float = 0.0, period: float | None = None,
                  affine: np.ndarray | None = None) -> np.ndarray:
    """(height, width) float32 fractal value noise, roughly zero mean and unit variance.

    Args:
        cell: size in (object) pixels of the coarsest octave's lattice cell; octave o uses cell / 2**o.
        gain: amplitude ratio between successive octaves.
        time, period: the lattices cross-fade to new random ones every `period` frames
            (None: static noise).
        affine: 2x3 map from output pixel (x, y) to object coordinates in pixels (so the
            noise can translate/rotate/scale with an object); identity if None.
    """
    A = np.eye(2, 3, dtype=np.float64) if affine is None else np.asarray(affine, np.float64)
    finest = cell / 2 ** (octaves - 1)
    # evaluate on a coarser working grid (finest lattice cell >= ~2 working pixels), then upsample
    ds = max(1, int(finest // 2))
    ww, wh = max(2, -(-width // ds)), max(2, -(-height // ds))
    work = np.eye(3)
    work[0, 0] = work[1, 1] = ds  # working pixel -> output pixel
    total = np.zeros((wh, ww), np.float32)
    norm = 0.0
    for o in range(octaves):
        lat = _evolving_lattice(seed, o, time, period)
        c = cell / 2 ** o
        shift = np.random.default_rng([seed & 0xFFFFFFFF, o, 77]).uniform(0, _GRID, 2)
        M = (A / c) @ work  # working pixel -> lattice coordinates
        M[:, 2] += shift
        M[:, 2] %= _GRID
        amp = gain ** o
        total += amp * cv2.warpAffine(lat, M.astype(np.float32), (ww, wh),
                                      flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                      borderMode=cv2.BORDER_WRAP)
        norm += amp * amp
    total *= 1.0 / math.sqrt(norm)
    if ds > 1:
        total = cv2.resize(total, (ww * ds, wh * ds), interpolation=cv2.INTER_CUBIC)[:height, :width]
    return np.ascontiguousarray(total)


@dataclass(frozen=True)
class Wobble:
    """Smooth bounded 1-D motion: base + sum of sines (deterministic from its parameters)."""

    base: float
    amps: tuple[float, ...]
    freqs: tuple[float, ...]  # radians per frame
    phases: tuple[float, ...]

    @classmethod
    def random(cls, rng: np.random.Generator, base: float, amp: float, period: tuple[float, float] = (40, 120),
               terms: int = 2) -> "Wobble":
        amps = tuple(float(amp) * (0.7 ** i) * rng.uniform(0.6, 1.0) for i in range(terms))
        freqs = tuple(2 * math.pi / rng.uniform(*period) * (1.7 ** i) for i in range(terms))
        phases = tuple(rng.uniform(0, 2 * math.pi) for _ in range(terms))
        return cls(float(base), amps, freqs, phases)

    def __call__(self, t: float) -> float:
        return self.base + sum(a * math.sin(f * t + p) for a, f, p in zip(self.amps, self.freqs, self.phases))


def similarity(cx: float, cy: float, angle: float, scale: float) -> np.ndarray:
    """2x3 map from image pixel (x, y) to object coordinates (centred at (cx, cy), unrotated, unscaled)."""
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    # object = R(-angle) (p - centre) / scale
    return np.array([[c, s, -(c * cx + s * cy)], [-s, c, -(-s * cx + c * cy)]], np.float64)


def apply_affine(A: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return A[0, 0] * x + A[0, 1] * y + A[0, 2], A[1, 0] * x + A[1, 1] * y + A[1, 2]


def pixel_grid(x0: int, y0: int, x1: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x + 0.5, y + 0.5) of the region [x0, x1) x [y0, y1), float32, broadcastable."""
    xs = np.arange(x0, x1, dtype=np.float32) + 0.5
    ys = np.arange(y0, y1, dtype=np.float32) + 0.5
    return xs[None, :], ys[:, None]


def clip_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return (max(0, int(math.floor(x0))), max(0, int(math.floor(y0))),
            min(width, int(math.ceil(x1))), min(height, int(math.ceil(y1))))


def edge_coverage(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a shape from its signed distance in pixels (<0 inside): ~1 px ramp."""
    return np.clip(0.5 - sdf, 0.0, 1.0).astype(np.float32)


def smooth_falloff(r2: np.ndarray) -> np.ndarray:
    """Compactly supported bump: (1 - r^2)^3 for r < 1, exactly 0 outside."""
    v = np.clip(1.0 - r2, 0.0, 1.0)
    return (v * v * v).astype(np.float32)


def supersample_factor(height: int) -> int:
    """Drawing supersampling for fine structures: more for small frames, less for 1080p+."""
    return 4 if height <= 400 else 3 if height <= 1200 else 2
