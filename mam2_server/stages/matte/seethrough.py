"""A see-through layer over a known background, in scene-linear light: I = (1 - a) B + a F.

Local texture regression (`seethrough_alpha`) and the box mean it is built on.
"""
from __future__ import annotations

import cv2
import numpy as np


def box_mean(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def seethrough_alpha(lin: np.ndarray, bg: np.ndarray, sigma: float, r: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, confidence), (h, w) float32, of a layer over a known background (scene-linear in).

    In a small window, with alpha and F locally constant, I = (1 - alpha) B + alpha F is linear in
    B: the slope is 1 - alpha. The background's texture seen through gives a slope near 1 (alpha
    near 0), an object's own texture, uncorrelated with B, a slope near 0 (opaque). Only the part
    of the slope above twice its standard error counts: a chance correlation of an opaque object's
    texture with the background's would otherwise read as a little see-through on average (the
    clipped estimate is biased). Confidence grows with the window's background variance over the
    noise (a flat background says nothing).
    """
    # moments in float64: in float32, E[x^2] - E[x]^2 of a bright near-flat window is mostly
    # rounding (even below zero), which would read as background texture
    I = lin.astype(np.float64)
    B = bg.astype(np.float64)
    mI, mB = box_mean(I, r), box_mean(B, r)
    cov = (box_mean(I * B, r) - mI * mB).sum(axis=2)
    var = np.maximum((box_mean(B * B, r) - mB * mB).sum(axis=2), 0.0)
    var_i = np.maximum((box_mean(I * I, r) - mI * mI).sum(axis=2), 0.0)
    slope = cov / (var + 1e-8)
    samples = 3 * (2 * r + 1) ** 2
    stderr = np.sqrt(np.maximum(var_i - slope * cov, 0.0) / (samples * var + 1e-12))
    alpha = np.clip(1.0 - np.maximum(slope - 2.0 * stderr, 0.0), 0.0, 1.0)
    conf = var / (var + (3.0 * sigma) ** 2)
    return alpha.astype(np.float32), conf.astype(np.float32)
