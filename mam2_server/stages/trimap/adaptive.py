"""Classic trimap: an unknown band whose width follows local uncertainty, smoothed over time.

Width per pixel (proxy resolution) grows with

* colour ambiguity: the tracker's object probability near 0.5 around the edge;
* motion: flow magnitude (motion blur smears the edge by about the displacement);
* occlusion: pixels where the forward-backward flow check failed;
* edge complexity: a ragged mask boundary (hair, foliage) has many edge pixels per area;

and shrinks where the image has a strong edge exactly on the mask edge (hard edge). Around a
mask the user drew, on its keyframe, the band is the narrowest: the cut only grew it, so its
edge is where the user put it or just outside; the ring the cut grew is unknown (the cut's colour
models call a soft edge's fainter part, a cloud's or a bubble's, object as readily as a tight mask's
missing rim).

Inside the band the mask is sure foreground: whether a pixel there is see-through is for the
matte stage to decide from evidence at that pixel (the background seen through it), never
from its colour alone (an opaque object may share its background's colours). Inside the mask
the band takes at most 3/4 of the object's local half-thickness, so a thin or narrow part keeps
a core of sure foreground (half that made foliage and hair clips worse; 3/4 did not).

The width map is blended with the previous frame's (warped by the flow) so the band does not
flicker; the state is reset at every pass.
"""
from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np

from mam2_server.engines.plan import Pass
from mam2_server.prompts import Prompt
from mam2_server.stages.base import FrameImages, FrameSource, Segmentation, Trimapper
from mam2_server.stages.segment.common import proxy_shape, resize


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Pixels to the mask edge: > 0 inside, < 0 outside (float32)."""
    m = (mask > 0.5).astype(np.uint8)
    if not m.any():
        return np.full(m.shape, -1e4, np.float32)
    if m.all():
        return np.full(m.shape, 1e4, np.float32)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 3)
    return (inside - outside).astype(np.float32)


class AdaptiveTrimapper(Trimapper):
    def __init__(self, proxy_long_side: int = 480, min_frac: float = 0.006, max_frac: float = 0.045,
                 temporal: float = 0.6) -> None:
        self.proxy_long_side = proxy_long_side
        self.min_frac = min_frac
        self.max_frac = max_frac
        self.temporal = temporal
        self._prev_width = None

    def begin_pass(self, source: FrameSource, plan: Pass, prompts: Mapping[int, Prompt]) -> None:
        self._prev_width = None

    def uncertainty(self, images: FrameImages, seg: Segmentation, shape) -> np.ndarray:
        unc = np.zeros(shape, np.float32)
        if seg.extras.get("drawn_mask") is not None:
            return unc  # the edge is where the user drew it: the narrowest band
        mask = resize(seg.mask, shape) > 0.5
        prob = seg.extras.get("colour_prob")
        if prob is not None and prob.shape == shape:
            unc = np.maximum(unc, 1.0 - 2.0 * np.abs(prob - 0.5))
        flow = seg.extras.get("flow")
        if flow is not None and flow.shape[:2] == shape:
            mag = np.linalg.norm(flow, axis=2)
            unc = np.maximum(unc, np.clip(mag / (0.02 * max(shape)), 0, 1))
            ok = seg.extras.get("consistent")
            if ok is not None:
                unc = np.maximum(unc, (~ok).astype(np.float32))
        # edge complexity: edge pixels per window vs a straight edge
        m8 = mask.astype(np.uint8)
        edge = (cv2.morphologyEx(m8, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0).astype(np.float32)
        win = max(5, int(0.04 * max(shape)) | 1)
        density = cv2.boxFilter(edge, -1, (win, win))
        straight = 2.0 / win  # a straight edge two pixels thick
        complexity = np.clip((density / straight - 1.0) / 2.0, 0, 1)
        unc = np.maximum(unc, complexity)
        # hard edge: strong image gradient right on the mask edge lowers the uncertainty
        gray = cv2.cvtColor(resize(images.display, shape), cv2.COLOR_RGB2GRAY)
        gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
        g = np.sqrt(gx * gx + gy * gy)
        hard = np.clip(g / 0.8, 0, 1)
        hard = cv2.dilate(hard, np.ones((3, 3), np.uint8))
        unc = unc * (1.0 - 0.5 * hard * (1.0 - complexity))
        # spread to a smooth field
        k = max(3, int(0.06 * max(shape)) | 1)
        return cv2.GaussianBlur(unc, (k, k), 0)

    def process(self, images: FrameImages, seg: Segmentation) -> np.ndarray:
        full = seg.mask.shape
        shape = proxy_shape(*full, self.proxy_long_side)
        unc = self.uncertainty(images, seg, shape)
        lo, hi = self.min_frac * max(shape), self.max_frac * max(shape)
        width = lo + (hi - lo) * unc
        lo = max(lo, 1.5)
        width = np.maximum(width, lo)
        if self._prev_width is not None and self._prev_width.shape == shape:
            prev = self._prev_width
            flow = seg.extras.get("flow")
            if flow is not None and flow.shape[:2] == shape:
                prev = cv2.remap(prev, *_grid_plus(flow), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            width = self.temporal * prev + (1 - self.temporal) * width
        self._prev_width = width.astype(np.float32)
        # band at full resolution from the full-resolution mask, width upsampled
        scale = max(full) / max(shape)
        sd = signed_distance(seg.mask)
        wfull = resize(self._prev_width, full) * scale
        # inside, the band takes at most 3/4 of the object's local half-thickness: a thin or narrow
        # part keeps a core of sure foreground (a band as wide as the object would leave it nothing).
        # The thickness (the deepest inside distance within a band's width) is taken at proxy size:
        # at full size the dilation's kernel grows with the frame (~350 px wide at 4K).
        inside = np.maximum(signed_distance(resize(seg.mask.astype(np.float32), shape) > 0.5), 0.0)
        reach = 2 * int(np.ceil(float(self._prev_width.max()))) + 1
        thickness = cv2.dilate(inside, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (reach, reach)))
        thickness = resize(thickness, full) * scale
        wfull = np.where(sd > 0, np.minimum(wfull, 0.75 * thickness), wfull)
        tri = (sd > 0).astype(np.float32)
        tri[np.abs(sd) < wfull] = 0.5
        drawn = seg.extras.get("drawn_mask")
        if drawn is not None:  # the ring the cut grew around a drawn mask: unknown, not sure
            tri[(sd > 0) & ~(resize(drawn.astype(np.float32), full) > 0.5)] = 0.5
        return tri


def _grid_plus(flow: np.ndarray):
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return gx + flow[..., 0], gy + flow[..., 1]
