"""See-through evidence: at which pixels of the object the background shows through, and how much.

The layer model in scene-linear light: I = (1 - a) B + a F. Where the background B behind a pixel
is known, the pixel says how opaque the object is there. B is known where some other frame
revealed it: neighbouring frames aligned on the background (`CleanPlateEstimator`), where the
object has moved off the pixel. The estimate is a texture regression (`seethrough_alpha`): in a
small window, with a and F locally constant, I is linear in B with slope 1 - a. The background's
texture seen through says "see-through", the object's own texture (or none) says "opaque"; it is
trusted as far as B has texture above the noise, so a flat background says nothing.

Tried and dropped (docs/benchmarks.md): a uniform layer's colour line (the pixel's shift from B
towards the layer's colour) to reach flat backgrounds, which made multi-coloured opaque objects
partly see-through; and a background filled in from around the object for layers that never move
off it, which did the same to well-segmented opaque objects in real photographs as often as it
helped; and the background's texture carried through a layer that moves against it but never off
it (a window fitting the neighbour aligned on the background, not the one moved with the object),
which paid on glass only, needs the object's own motion that a tracked see-through mask does not
have, and read a rotating opaque object's slow middle as see-through.

Evidence is per pixel: `alpha` its estimate, `confidence` how far to trust it (0: none).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mam2_server.stages.base import FrameSource, Segmentation
from mam2_server.stages.matte.cleanplate import REACH, CleanPlateEstimator
from mam2_server.stages.matte.seethrough import seethrough_alpha
from mam2_server.stages.segment.common import resize


@dataclass
class Evidence:
    alpha: np.ndarray  # (h, w) float32 in [0, 1]
    confidence: np.ndarray  # (h, w) float32 >= 0; 0 where there is none


def _disc(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _luminance(lin: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(lin.mean(axis=2), np.float32)


def background_shift(seg: Segmentation, mask: np.ndarray, lum: np.ndarray,
                     previous: tuple[int, np.ndarray, np.ndarray]) -> tuple[float, float] | None:
    """(bx, by): this frame's background at x was at x + (bx, by) in the previous frame. From the
    tracker's flow outside the mask when it has some, else by phase correlation of the two frames
    with the object (in either) blanked out (segmenters that give no flow, e.g. hybrid's SAM2)."""
    flow, to = seg.extras.get("flow"), seg.extras.get("flow_to")
    if flow is not None and to == previous[0]:
        shape = mask.shape
        fs = flow.shape[:2]
        if fs != shape:
            flow = resize(flow, shape) * np.array([shape[1] / fs[1], shape[0] / fs[0]], np.float32)
        return tuple(float(v) for v in np.median(flow[~mask], axis=0))
    away = ~(mask | previous[1])
    if away.sum() < 0.2 * mask.size:
        return None
    def blank(img):
        return np.where(away, img, float(img[away].mean())).astype(np.float32)
    window = cv2.createHanningWindow(mask.shape[::-1], cv2.CV_32F)
    (bx, by), response = cv2.phaseCorrelate(blank(lum), blank(previous[2]), window)
    return (bx, by) if response > 0.05 else None


def object_velocity(seg: Segmentation, frame: int, mask: np.ndarray, lum: np.ndarray,
                    previous: tuple[int, np.ndarray, np.ndarray] | None):
    """The object's motion against the background, proxy px per frame (None when unknown): the shift
    between its mask now and its mask on the previous frame of the pass carried along with the
    background. Measured on the masks, not on the flow inside them, which follows the
    background's texture through a see-through layer."""
    if previous is None or not mask.any() or mask.all():
        return None
    shift = background_shift(seg, mask, lum, previous)
    if shift is None:
        return None
    bx, by = shift
    carried = cv2.warpAffine(previous[1].astype(np.float32), np.float32([[1, 0, bx], [0, 1, by]]), mask.shape[::-1],
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    (dx, dy), response = cv2.phaseCorrelate(carried, mask.astype(np.float32))
    if response < 0.05:
        return None
    steps = float(frame - previous[0])
    return dx / steps, dy / steps


def revealed_evidence(lin: np.ndarray, mask: np.ndarray, plate) -> Evidence | None:
    """Evidence from background revealed in other frames: the texture regression of the frame on the
    clean plate (`seethrough_alpha`), where the plate is reliable."""
    sigma = plate.noise  # floored at cleanplate.NOISE_FLOOR
    B = plate.background
    reliable = (plate.valid >= 1) & (plate.spread < 3 * sigma + 0.1 * np.linalg.norm(B, axis=2))
    if not (reliable & mask).any():
        return None
    a_t, c_t = seethrough_alpha(lin, B, sigma, r=max(2, int(0.012 * max(lin.shape[:2]))))
    return Evidence(a_t, (c_t * reliable).astype(np.float32))


class SeeThrough:
    """Per-pixel see-through evidence for one shot (its background model is kept across passes)."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self._plates: CleanPlateEstimator | None = None
        # (frame, mask, luminance) of the pass's previous frame
        self._previous: tuple[int, np.ndarray, np.ndarray] | None = None

    def begin_pass(self) -> None:
        self._previous = None
        if self._plates is not None:
            self._plates.begin_pass()

    def evidence(self, frame: int, linear_full: np.ndarray, lin: np.ndarray, mask: np.ndarray,
                 seg: Segmentation) -> Evidence | None:
        """Evidence at `frame` (proxy resolution); None where no other frame revealed the background."""
        shape = mask.shape
        lum = _luminance(lin)
        velocity = object_velocity(seg, frame, mask, lum, self._previous)
        self._previous = (frame, mask, lum)
        if len(self.source.frames) < 3 or velocity is None:
            return None  # no motion against the background measured: nothing counts as revealed
        if max(abs(velocity[0]), abs(velocity[1])) * REACH < 0.5:
            return None  # it covers the same pixels in every neighbour within reach
        if self._plates is None or self._plates.shape != shape:
            self._plates = CleanPlateEstimator(self.source, shape)
        around = cv2.dilate(mask.astype(np.uint8), _disc(max(2, int(0.03 * max(shape))))) > 0
        plate = self._plates.estimate(frame, linear_full, around, velocity)
        return None if plate is None else revealed_evidence(lin, mask, plate)
