"""Foreground colour estimation for clean premultiplied RGBA."""
from __future__ import annotations

import numpy as np


def estimate_foreground(image: np.ndarray, alpha: np.ndarray, *, linear: bool = True) -> np.ndarray:
    """Foreground colour F with I = alpha F + (1 - alpha) B (pymatting's multilevel estimator).

    `image` is (H, W, 3) float; scene-linear values above 1 are kept (the estimator is run
    on the image scaled into [0, 1] and scaled back), so F stays in the plate's units.
    """
    from pymatting import estimate_foreground_ml

    img = np.asarray(image, np.float64)
    scale = max(1.0, float(img.max())) if linear else 1.0
    fg = estimate_foreground_ml(img / scale, np.clip(np.asarray(alpha, np.float64), 0, 1))
    return (fg * scale).astype(np.float32)


def premultiplied_rgba(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H, W, 4) float32: alpha * F and alpha."""
    fg = estimate_foreground(image, alpha)
    a = np.clip(alpha, 0, 1).astype(np.float32)[..., None]
    return np.concatenate([fg * a, a], axis=2)
