"""RawSample (files' resolution) -> TrainSample (the model's square input): the paper's augmentations (A.1).

Random affine (scale, rotation, aspect, flip) folded with the crop into one warp per frame
(one resampling, straight to S x S), a slow drift of that warp through a clip (camera
motion), composition of foregrounds over a background in linear light, and a colour
jitter (exposure, white balance, saturation) applied in linear light before the sRGB
encode the network sees. The crop is centred near the object so that it stays in view;
`make_sample` returns None when it does not (the caller draws again).

Everything random comes from the generator passed in, so a sample is a pure function of it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from mam2_server.data.base import Backgrounds, RawSample
from mam2_server.io.srgb import linear_to_srgb, srgb_to_linear
from mam2_server.train.data import KIND_CODES, TrainSample, box_from_mask
from mam2_server.train.losses import trimap_from_alpha

__all__ = ["AugmentConfig", "make_sample"]


@dataclass(frozen=True)
class AugmentConfig:
    crop: tuple[float, float] = (0.5, 1.0)  # crop side as a fraction of the short side (floor: native pixels)
    rotate_deg: float = 10.0
    rotate_p: float = 0.5
    aspect: float = 0.1  # +- relative stretch of x against y
    flip_p: float = 0.5
    drift: float = 0.04  # camera drift over a clip, fraction of the crop (translation) / of its scale
    exposure_stops: float = 0.5  # +- stops
    white_balance: float = 0.08  # +- per-channel gain
    saturation: tuple[float, float] = (0.7, 1.3)
    grey_p: float = 0.03
    min_object_fraction: float = 0.002  # first-frame object area (of S^2) below which the crop is redrawn


def _affine(centre: tuple[float, float], side: float, size: int, angle: float, aspect: float,
            flip: bool) -> np.ndarray:
    """2x3 matrix mapping source pixels to the output: a square of `side` px around `centre` -> S x S."""
    s = size / side
    c, n = math.cos(angle), math.sin(angle)
    sx, sy = s * (1 + aspect), s * (1 - aspect)
    m = np.array([[c * sx, -n * sx], [n * sy, c * sy]], np.float64)
    if flip:
        m[0] *= -1
    t = np.array([size / 2, size / 2]) - m @ np.asarray(centre, np.float64)
    return np.hstack([m, t[:, None]]).astype(np.float32)


def _warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _clip_warps(rng: np.random.Generator, shape: tuple[int, int], target: np.ndarray | None, size: int, frames: int,
                cfg: AugmentConfig, jitter_geometry: bool = True) -> list[np.ndarray]:
    """One warp per frame: a random crop/affine drifting slowly from the first frame to the last."""
    h, w = shape
    short = min(h, w)
    lo = min(1.0, max(cfg.crop[0], min(size, short) / short))  # no smaller than native pixels at S
    side = short * rng.uniform(lo, cfg.crop[1]) if jitter_geometry else short
    if target is not None and (target > 0.5).any():
        ys, xs = np.nonzero(target > 0.5)
        cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    else:
        cx, cy = w / 2, h / 2
    if jitter_geometry:
        cx += rng.uniform(-0.25, 0.25) * side
        cy += rng.uniform(-0.25, 0.25) * side
    cx = float(np.clip(cx, min(side / 2, w / 2), max(w - side / 2, w / 2)))
    cy = float(np.clip(cy, min(side / 2, h / 2), max(h - side / 2, h / 2)))
    angle = math.radians(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)) if rng.random() < cfg.rotate_p else 0.0
    aspect = rng.uniform(-cfg.aspect, cfg.aspect) if jitter_geometry else 0.0
    flip = bool(rng.random() < cfg.flip_p)
    if frames == 1:
        return [_affine((cx, cy), side, size, angle, aspect, flip)]
    dx, dy = rng.uniform(-cfg.drift, cfg.drift, 2) * side
    ds = 1 + rng.uniform(-cfg.drift, cfg.drift)
    out = []
    for t in np.linspace(0.0, 1.0, frames):
        out.append(_affine((cx + t * dx, cy + t * dy), side * (1 + t * (ds - 1)), size, angle, aspect, flip))
    return out


def _colour_jitter(rng: np.random.Generator, cfg: AugmentConfig):
    """A function linear (H, W, 3) -> linear, the same for every frame of a sample."""
    gain = 2.0 ** rng.uniform(-cfg.exposure_stops, cfg.exposure_stops)
    balance = 1 + rng.uniform(-cfg.white_balance, cfg.white_balance, 3)
    sat = 0.0 if rng.random() < cfg.grey_p else rng.uniform(*cfg.saturation)
    scale = (gain * balance).astype(np.float32)
    luma = np.array([0.2126, 0.7152, 0.0722], np.float32)  # Rec.709

    def apply(x: np.ndarray) -> np.ndarray:
        x = x * scale
        y = x @ luma
        return y[..., None] + sat * (x - y[..., None])

    return apply


def make_sample(raw: RawSample, rng: np.random.Generator, size: int, *, backgrounds: Backgrounds | None = None,
                cfg: AugmentConfig = AugmentConfig(),
                trimap_kernel: tuple[int, int] | None = None) -> TrainSample | None:
    """The TrainSample of `raw` at `size` x `size`, or None if the object left the crop."""
    frames = len(raw.targets)
    shape = raw.targets[0].shape
    warps = _clip_warps(rng, shape, raw.targets[0], size, frames, cfg)
    targets = np.stack([_warp(t, m, size) for t, m in zip(raw.targets, warps)])  # (T, S, S)
    if (targets[0] > (0.5 if not raw.soft else 0.1)).mean() < cfg.min_object_fraction:
        return None
    jitter = _colour_jitter(rng, cfg)
    if raw.fgs is None:
        linear = [jitter(srgb_to_linear(_warp(f, m, size))) for f, m in zip(raw.frames, warps)]
    else:
        if raw.backgrounds is not None:  # the dataset's own aligned plates (VM108): same warp as the foreground
            bgs = [_warp(b, m, size) for b, m in zip(raw.backgrounds, warps)]
        else:
            if backgrounds is None:
                raise ValueError(f"{raw.source}: a foreground + alpha sample needs backgrounds (--backgrounds DIR)")
            bg = backgrounds.read(rng)
            bg_warps = _clip_warps(rng, bg.shape[:2], None, size, frames, cfg)
            bgs = [_warp(bg, m, size) for m in bg_warps]
        linear = []
        for f, m, b, a in zip(raw.fgs, warps, bgs, targets):
            a3 = np.clip(a, 0, 1)[..., None]
            linear.append(jitter(a3 * srgb_to_linear(_warp(f, m, size)) + (1 - a3) * srgb_to_linear(b)))
    images = torch.from_numpy(np.stack([linear_to_srgb(x) for x in linear])).permute(0, 3, 1, 2).contiguous()
    target = torch.from_numpy(np.clip(targets, 0, 1))[:, None]  # (T, 1, S, S)
    kind = KIND_CODES[raw.kind]
    if not raw.soft:
        mask = (target > 0.5).float()
        return TrainSample(kind, images, mask, None, None, box_from_mask(mask[0, 0], rng, size))
    mask = (target > 0.5).float()
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    kernel = trimap_kernel or (max(3, size // 64), max(5, size // 16))
    trimap = trimap_from_alpha(target, kernel, generator=gen)
    return TrainSample(kind, images, mask, target, trimap, box_from_mask((target[0, 0] > 0.1).float(), rng, size))
