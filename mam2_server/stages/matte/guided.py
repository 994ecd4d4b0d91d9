"""Guided filter (He et al.) with cv2.boxFilter, and edge-aware upsampling of a proxy matte."""
from __future__ import annotations

import cv2
import numpy as np

from mam2_server.stages.segment.common import resize


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), normalize=True, borderType=cv2.BORDER_REFLECT)


def guided_coefficients(guide: np.ndarray, src: np.ndarray, r: int, eps: float):
    """Linear coefficients (a, b) of q = a * guide + b for a gray (H, W) guide."""
    mi, mp = _box(guide, r), _box(src, r)
    cov = _box(guide * src, r) - mi * mp
    var = _box(guide * guide, r) - mi * mi
    a = cov / (var + eps)
    b = mp - a * mi
    return _box(a, r), _box(b, r)


def guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float = 1e-3) -> np.ndarray:
    a, b = guided_coefficients(guide.astype(np.float32), src.astype(np.float32), r, eps)
    return a * guide + b


def luminance(display: np.ndarray) -> np.ndarray:
    return (display[..., 0] * 0.299 + display[..., 1] * 0.587 + display[..., 2] * 0.114).astype(np.float32)


def guided_upsample(alpha_small: np.ndarray, display_full: np.ndarray, r: int = 2,
                    eps: float = 1e-4) -> np.ndarray:
    """Bring a proxy-resolution alpha to the full-resolution frame along the image's edges.

    Fast guided filter: coefficients are fitted at the proxy resolution against the
    downscaled guide, upsampled bilinearly and applied to the full-resolution guide.
    """
    full = display_full.shape[:2]
    if alpha_small.shape == full:
        return alpha_small.astype(np.float32)
    guide_full = luminance(display_full)
    guide_small = resize(guide_full, alpha_small.shape)
    a, b = guided_coefficients(guide_small, alpha_small.astype(np.float32), r, eps)
    a, b = resize(a, full), resize(b, full)
    out = a * guide_full + b
    # where the guide has no structure the filter just blurs: fall back to the bilinear matte
    return np.clip(out, 0.0, 1.0).astype(np.float32)
