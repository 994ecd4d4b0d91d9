"""Baseline trimap: a fixed-width unknown band around the mask edge."""
from __future__ import annotations

import cv2
import numpy as np

from mam2_server.stages.base import FrameImages, Segmentation, Trimapper


def band_trimap(mask: np.ndarray, radius: int) -> np.ndarray:
    """0 / 0.5 / 1 trimap: `radius` pixels of unknown on each side of the mask's edge (mask > 0.5)."""
    m = (mask > 0.5).astype(np.uint8)
    tri = m.astype(np.float32)
    if radius <= 0:
        return tri
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    inner = cv2.erode(m, k, borderType=cv2.BORDER_REPLICATE)
    outer = cv2.dilate(m, k, borderType=cv2.BORDER_REPLICATE)
    tri[(outer > 0) & (inner == 0)] = 0.5
    return tri


class FixedBandTrimapper(Trimapper):
    """Unknown band of `fraction` x the frame's long side (at least `minimum` px) each side of the edge."""

    def __init__(self, fraction: float = 0.01, minimum: int = 2) -> None:
        self.fraction = fraction
        self.minimum = minimum

    def process(self, images: FrameImages, seg: Segmentation) -> np.ndarray:
        radius = max(self.minimum, int(round(self.fraction * max(seg.mask.shape))))
        return band_trimap(seg.mask, radius)
