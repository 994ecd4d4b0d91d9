"""A see-through layer over a known background, in scene-linear light: I = (1 - a) B + a F.

Local texture regression and projection estimates of a (`seethrough_alpha`), and the small
image helpers the see-through tests share (box mean, high-pass luminance).
"""
from __future__ import annotations

import cv2
import numpy as np


def box_mean(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def seethrough_alpha(lin: np.ndarray, bg: np.ndarray, sigma: float, r: int = 3):
    """Alpha of a see-through layer over a known background, two ways (scene-linear in).

    * texture regression: in a small window, with alpha and F locally constant,
      I = (1 - alpha) B + alpha F is linear in B: the slope is 1 - alpha. Needs texture in B;
      confidence grows with the window's background variance over the noise;
    * projection: alpha = <I - B, F - B> / |F - B|^2 with F = (mean I - (1 - alpha) mean B) / alpha
      from the regression, spread into flat areas by normalised convolution.

    Returns (alpha_t, conf_t, alpha_p, conf_p), all (h, w) float32.
    """
    I = lin.astype(np.float32)
    B = bg.astype(np.float32)
    mI, mB = box_mean(I, r), box_mean(B, r)
    cov = (box_mean(I * B, r) - mI * mB).sum(axis=2)
    var = (box_mean(B * B, r) - mB * mB).sum(axis=2)
    slope = cov / (var + 1e-8)
    a_t = np.clip(1.0 - slope, 0.0, 1.0)
    c_t = (var / (var + (3.0 * sigma) ** 2)).astype(np.float32)
    # object colour where the regression is trustworthy and the layer not too thin
    Fw = c_t * np.clip(a_t - 0.1, 0, 1) ** 2
    F_pix = (mI - (1.0 - a_t)[..., None] * mB) / np.maximum(a_t, 0.1)[..., None]
    big = max(3, 4 * r)
    num = box_mean(F_pix * Fw[..., None], big)
    den = box_mean(Fw, big)
    for _ in range(3):  # grow the estimate into flat areas
        missing = den < 1e-4
        if not missing.any():
            break
        num = np.where(missing[..., None], box_mean(num, big), num)
        den = np.where(missing, box_mean(den, big), den)
    F = num / np.maximum(den, 1e-8)[..., None]
    FB = F - B
    nrm = (FB * FB).sum(axis=2)
    D = I - B
    a_p = np.clip((D * FB).sum(axis=2) / np.maximum(nrm, (4 * sigma) ** 2), 0, 1)
    res = np.linalg.norm(D - a_p[..., None] * FB, axis=2)
    c_p = (den > 1e-4) * np.exp(-(res / (3 * sigma + 1e-6)) ** 2) * (nrm / (nrm + (6 * sigma) ** 2))
    return a_t.astype(np.float32), c_t, a_p.astype(np.float32), c_p.astype(np.float32)


def highpass(img: np.ndarray) -> np.ndarray:
    y = img.mean(axis=2) if img.ndim == 3 else img
    y = y.astype(np.float32)
    return y - cv2.GaussianBlur(y, (0, 0), 1.0)
