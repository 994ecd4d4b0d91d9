"""See-through evidence: at which pixels of the object the background shows through, and how much.

The layer model in scene-linear light: I = (1 - a) B + a F. Where the background B behind a pixel
is known, the pixel says how opaque the object is there. B is known where some other frame
revealed it: neighbouring frames aligned on the background (`CleanPlateEstimator`), where the
object has moved off the pixel. Two estimates, both as ready to say "opaque" as "see-through":

* texture regression (`seethrough_alpha`): in a small window, with a and F locally constant, I is
  linear in B with slope 1 - a: the background's texture seen through says "see-through", the
  object's own texture says "opaque". Trusted as far as B has texture above the noise;
* a uniform layer (`layer_fit`): the pixel's shift from B towards the layer's colour F, where the
  pixel lies on the segment from B to F and F stands out of B's noise. Reaches flat backgrounds.

A background filled in from around the object (for layers that never move off it) was tried as
a third source and dropped: on real photographs it made well-segmented opaque objects partly
see-through as often as it helped (docs/benchmarks.md).

Evidence is per pixel: `alpha` its estimate, `confidence` how far to trust it (0: none).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mam2_server.stages.base import FrameSource, Segmentation
from mam2_server.stages.matte.cleanplate import CleanPlateEstimator
from mam2_server.stages.matte.seethrough import seethrough_alpha
from mam2_server.stages.segment.common import resize

# the noise level of a clean (synthetic or denoised) plate: a floor for every noise-relative test
NOISE_FLOOR = 2e-3


@dataclass
class Evidence:
    alpha: np.ndarray  # (h, w) float32 in [0, 1]
    confidence: np.ndarray  # (h, w) float32 >= 0; 0 where there is none


def _disc(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def object_velocity(seg: Segmentation, frame: int, mask: np.ndarray, previous: tuple[int, np.ndarray] | None):
    """The object's motion against the background, proxy px per frame (None when unknown): the shift
    between its mask now and its mask on the previous frame of the pass carried along with the
    background (the tracker's flow outside the mask). Measured on the masks, not on the flow inside
    them, which follows the background's texture through a see-through layer."""
    flow, to = seg.extras.get("flow"), seg.extras.get("flow_to")
    if previous is None or flow is None or to != previous[0] or not mask.any() or mask.all():
        return None
    shape = mask.shape
    fs = flow.shape[:2]
    if fs != shape:
        flow = resize(flow, shape) * np.array([shape[1] / fs[1], shape[0] / fs[0]], np.float32)
    bx, by = np.median(flow[~mask], axis=0)  # this frame's background at x was at x + (bx, by) there
    carried = cv2.warpAffine(previous[1].astype(np.float32), np.float32([[1, 0, bx], [0, 1, by]]), shape[::-1],
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    (dx, dy), response = cv2.phaseCorrelate(carried, mask.astype(np.float32))
    if response < 0.05:
        return None
    steps = float(frame - to)
    return dx / steps, dy / steps


def revealed_evidence(lin: np.ndarray, mask: np.ndarray, plate) -> Evidence | None:
    """Evidence from background revealed in other frames: the layer model against the clean plate
    (`layer_fit`) and, where the plate has texture, the texture regression (`seethrough_alpha`)."""
    sigma = max(plate.noise, NOISE_FLOOR)
    B = plate.background
    reliable = (plate.valid >= 1) & (plate.spread < 3 * sigma + 0.1 * np.linalg.norm(B, axis=2))
    if not (reliable & mask).any():
        return None
    fit = layer_fit(lin, B, mask & reliable, 3 * sigma)
    a_t, c_t = seethrough_alpha(lin, B, sigma, r=max(2, int(0.012 * max(lin.shape[:2]))))
    if fit is None:
        return Evidence(a_t, (c_t * reliable).astype(np.float32))
    a_p, c_p = fit
    conf = (c_t + c_p) * reliable
    return Evidence(((c_t * a_t + c_p * a_p) / np.maximum(c_t + c_p, 1e-6)).astype(np.float32),
                    conf.astype(np.float32))


def layer_fit(lin: np.ndarray, B: np.ndarray, mask: np.ndarray, error: float):
    """(alpha, confidence) of a uniform layer over the background B (uncertain by `error`):
    alpha is the pixel's shift from B towards the layer's colour F (`layer_colour`); it counts where
    the pixel lies on the segment from B to F and F stands out of B's uncertainty. None without F."""
    F = layer_colour(lin, B, mask, error)
    if F is None:
        return None
    FB = F - B
    contrast = (FB * FB).sum(axis=2)
    a = np.clip(((lin - B) * FB).sum(axis=2) / np.maximum(contrast, 1e-6), 0.0, 1.0)
    residual = np.linalg.norm(lin - (B + a[..., None] * FB), axis=2)
    on_segment = np.exp(-(residual / (2 * error)) ** 2)
    trust = contrast / (contrast + (2 * error) ** 2)
    return a.astype(np.float32), (trust * on_segment).astype(np.float32)


def layer_colour(lin: np.ndarray, B: np.ndarray, mask: np.ndarray, error: float) -> np.ndarray | None:
    """The colour F of a uniform layer: every pixel's shift I - B points from its background towards F,
    so F is where those lines meet (least squares over the mask, weighted by how far each shift
    stands out of the background's uncertainty). For an opaque object of one colour it is that colour."""
    D = (lin - B)[mask]
    n = np.linalg.norm(D, axis=1)
    w = n ** 2 / (n ** 2 + (2 * error) ** 2)
    keep = w > 0.5
    if keep.sum() < 20:
        return None
    u = D[keep] / n[keep, None]
    P = np.eye(3)[None] - u[:, :, None] * u[:, None, :]  # projections across each line
    wk = w[keep, None, None]
    A = (wk * P).sum(axis=0)
    b = (wk * P @ B[mask][keep][:, :, None]).sum(axis=0)[:, 0]
    try:
        F = np.linalg.solve(A + 1e-6 * np.eye(3), b)
    except np.linalg.LinAlgError:
        return None
    return F.astype(np.float32) if np.isfinite(F).all() else None


class SeeThrough:
    """Per-pixel see-through evidence for one shot (its background model is kept across passes)."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self._plates: CleanPlateEstimator | None = None
        self._previous: tuple[int, np.ndarray] | None = None  # (frame, mask) of the pass's previous frame

    def begin_pass(self) -> None:
        self._previous = None

    def evidence(self, frame: int, linear_full: np.ndarray, lin: np.ndarray, mask: np.ndarray,
                 seg: Segmentation) -> Evidence | None:
        """Evidence at `frame` (proxy resolution); None where no other frame revealed the background."""
        shape = mask.shape
        velocity = object_velocity(seg, frame, mask, self._previous)
        self._previous = (frame, mask)
        if len(self.source.frames) < 3:
            return None
        if self._plates is None or self._plates.shape != shape:
            self._plates = CleanPlateEstimator(self.source, shape)
        around = cv2.dilate(mask.astype(np.uint8), _disc(max(2, int(0.03 * max(shape))))) > 0
        plate = self._plates.estimate(frame, linear_full, around, velocity)
        return None if plate is None else revealed_evidence(lin, mask, plate)
