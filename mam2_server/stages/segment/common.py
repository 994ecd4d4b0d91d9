"""Helpers shared by the weights-free stages: proxy resolution, prompt -> GrabCut seeds."""
from __future__ import annotations

import math

import cv2
import numpy as np

from mam2_server.prompts import FOREGROUND, Prompt


def proxy_shape(height: int, width: int, long_side: int | None) -> tuple[int, int]:
    """(h, w) scaled so that the long side is at most `long_side` (never upscaled)."""
    if not long_side or max(height, width) <= long_side:
        return height, width
    s = long_side / max(height, width)
    return max(1, int(round(height * s))), max(1, int(round(width * s)))


def resize(img: np.ndarray, shape: tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    """Resize to (h, w); area filter when shrinking, linear when growing."""
    h, w = shape
    if img.shape[:2] == (h, w):
        return img
    if nearest:
        interp = cv2.INTER_NEAREST
    elif h < img.shape[0] and w < img.shape[1]:
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def to_u8(display: np.ndarray) -> np.ndarray:
    """Display-referred float RGB in [0, 1] -> uint8 BGR (what cv2.grabCut wants)."""
    u8 = np.clip(display * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(u8[..., ::-1])


def disc_radius(shape: tuple[int, int], frac: float = 0.012, minimum: int = 2) -> int:
    return max(minimum, int(round(frac * max(shape))))


def prompt_seeds(prompt: Prompt, shape: tuple[int, int], full: tuple[int, int]) -> np.ndarray:
    """A GrabCut label mask (GC_BGD / GC_PR_BGD / GC_PR_FGD / GC_FGD) at `shape` for `prompt`.

    `full` is the (h, w) of the full-resolution frame the prompt's coordinates refer to.
    """
    h, w = shape
    fh, fw = full
    sx, sy = w / fw, h / fh
    seeds = np.full((h, w), cv2.GC_BGD, np.uint8)
    have_region = False
    if prompt.mask is not None:
        m = resize(prompt.mask.astype(np.float32), shape) > 0.5
        if m.any():
            # the drawn mask is the object: GrabCut may only grow it into a ring around it (a mask
            # drawn a little tight), never take any of it away
            have_region = True
            r = disc_radius(shape, 0.01)
            k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
            outer = cv2.dilate(m.astype(np.uint8), k) > 0
            seeds[outer] = cv2.GC_PR_BGD
            seeds[m] = cv2.GC_FGD
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.clipped_box(fw, fh)
        bx0, by0 = int(math.floor(x0 * sx)), int(math.floor(y0 * sy))
        bx1, by1 = max(bx0 + 1, int(math.ceil(x1 * sx))), max(by0 + 1, int(math.ceil(y1 * sy)))
        region = seeds[by0:by1, bx0:bx1]
        if prompt.mask is None:
            region[...] = cv2.GC_PR_FGD
        else:  # mask + box: the box bounds where the mask may grow
            region[region == cv2.GC_BGD] = cv2.GC_PR_BGD
        have_region = True
    fg_points = [p for p in prompt.points if p.label == FOREGROUND]
    if not have_region and fg_points:
        # points only: the object is somewhere around the points
        xs = np.array([p.x * sx for p in fg_points])
        ys = np.array([p.y * sy for p in fg_points])
        pad = 0.2 * max(h, w)
        bx0, bx1 = int(max(0, xs.min() - pad)), int(min(w, xs.max() + pad + 1))
        by0, by1 = int(max(0, ys.min() - pad)), int(min(h, ys.max() + pad + 1))
        seeds[:] = cv2.GC_PR_BGD
        seeds[by0:by1, bx0:bx1] = cv2.GC_PR_FGD
    r = disc_radius(shape)
    for p in prompt.points:
        cx, cy = int(p.x * sx), int(p.y * sy)
        if not (0 <= cx < w and 0 <= cy < h):
            continue
        cv2.circle(seeds, (cx, cy), r, int(cv2.GC_FGD if p.label == FOREGROUND else cv2.GC_BGD), -1)
    return seeds


def run_grabcut(bgr: np.ndarray, seeds: np.ndarray, iterations: int = 4, seed: int = 1234) -> np.ndarray:
    """GrabCut initialised from a label mask; returns a bool object mask.

    Deterministic: OpenCV's global RNG (used by GrabCut's k-means) is reseeded per call, so
    re-running a pass gives bit-identical masks.
    """
    seeds = seeds.copy()
    is_fg = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    if not is_fg.any():
        return np.zeros(seeds.shape, bool)
    if is_fg.all():  # nothing to learn the background from: use the border as probable background
        seeds[0, :] = seeds[-1, :] = seeds[:, 0] = seeds[:, -1] = cv2.GC_PR_BGD
    if (seeds == cv2.GC_FGD).all() or seeds.size < 16:
        return is_fg
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(seed)
    try:
        cv2.grabCut(bgr, seeds, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return is_fg
    return (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) exclusive bounds of a bool mask, None when empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def cut_from_prompt(bgr: np.ndarray, prompt: Prompt, full: tuple[int, int], iterations: int = 5) -> np.ndarray:
    """Keyframe object mask (bool, at bgr's size) from a prompt with GrabCut.

    When GrabCut collapses (less than 0.5 % of the prompt's region kept: an object whose colours
    also fill the background) the answer is the prompt's own mask if it has one, else nothing: a
    guessed shape could be worse than no matte at all.
    """
    shape = bgr.shape[:2]
    seeds = prompt_seeds(prompt, shape, full)
    region = (seeds == cv2.GC_PR_FGD) | (seeds == cv2.GC_FGD)
    mask = run_grabcut(bgr, seeds, iterations)
    if region.any() and mask.sum() < 0.005 * region.sum():
        if prompt.mask is not None:
            return resize(prompt.mask.astype(np.float32), shape) > 0.5
        return np.zeros(shape, bool)
    return mask
