"""Closed-form matting (Levin et al.) through pymatting, at a proxy resolution."""
from __future__ import annotations

import numpy as np

from mam2_server.stages.base import FrameImages, Matter, Segmentation
from mam2_server.stages.matte.priors import quietly
from mam2_server.stages.segment.common import proxy_shape, resize


def solve_alpha(image: np.ndarray, trimap: np.ndarray, method: str = "cf") -> np.ndarray:
    """Alpha in the trimap's unknown region from a display-referred RGB image (float64 inside pymatting).

    Degenerate trimaps (no unknown, no known foreground or background) give a defined
    answer without calling the solver.
    """
    unknown = (trimap > 0.25) & (trimap < 0.75)
    fg = trimap >= 0.75
    bg = trimap <= 0.25
    if not unknown.any():
        return fg.astype(np.float32)
    if not fg.any() or not bg.any():
        # nothing to anchor one side: unknown goes to the side that exists
        return (fg | (unknown & fg.any())).astype(np.float32)
    from pymatting import estimate_alpha_cf, estimate_alpha_lkm  # noqa: lazy (numba)
    img = np.clip(image, 0.0, 1.0).astype(np.float64)
    tri = np.where(unknown, 0.5, fg.astype(np.float64))
    try:
        alpha = quietly(estimate_alpha_lkm if method == "lkm" else estimate_alpha_cf, img, tri)
    except Exception:  # pragma: no cover - solver failure: keep the trimap's guess
        alpha = np.where(unknown, 0.5, tri)
    return np.clip(alpha, 0.0, 1.0).astype(np.float32)


class ClosedFormMatter(Matter):
    """Baseline matte stage: closed-form matting at a proxy resolution, bilinear upsample."""

    def __init__(self, proxy_long_side: int = 720) -> None:
        self.proxy_long_side = proxy_long_side

    def process(self, images: FrameImages, seg: Segmentation, trimap: np.ndarray) -> np.ndarray:
        full = trimap.shape
        shape = proxy_shape(*full, self.proxy_long_side)
        small_tri = resize(trimap.astype(np.float32), shape, nearest=True)
        alpha = solve_alpha(resize(images.display, shape), small_tri)
        alpha = resize(alpha, full)
        alpha = np.where(trimap >= 0.75, 1.0, np.where(trimap <= 0.25, 0.0, alpha))
        return alpha.astype(np.float32)
