"""See-through evidence: at which pixels of the object the background shows through, and how much.

The layer model in scene-linear light: I = (1 - a) B + a F. Where the background B behind a pixel
can be told, the pixel says how opaque the object is there. Two sources of B:

* revealed background (`CleanPlateEstimator`): neighbouring frames aligned on the background,
  where the object has moved off the pixel. In a small window, with a and F locally constant, I is
  linear in B with slope 1 - a (`seethrough_alpha`): the background's texture seen through says
  "see-through", the object's own texture says "opaque". Trusted as far as B has texture.
* background reconstructed from around the object (for layers that never move off their
  background: a locked-off shot, a still). B is filled in smoothly from outside the object and
  a is the pixel's shift from B towards the object's colour F. It counts only where the layer
  model explains the pixel: I lies on the segment from B to F, and the pixel keeps (1 - a)^2 of
  the background's texture energy, no more (the object's own texture) and no less (an opaque
  surface). Trusted as far as the fill predicts background it has not seen (measured on a band
  of background left out of the fill) and F stands out from B.

Evidence is per pixel: `alpha` its estimate, `confidence` how far to trust it (0: none).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mam2_server.stages.base import FrameSource, Segmentation
from mam2_server.stages.matte.cleanplate import CleanPlateEstimator
from mam2_server.stages.matte.seethrough import box_mean, seethrough_alpha
from mam2_server.stages.segment.common import resize

# the noise level of a clean (synthetic or denoised) plate: a floor for every noise-relative test
NOISE_FLOOR = 2e-3


@dataclass
class Evidence:
    alpha: np.ndarray  # (h, w) float32 in [0, 1]
    confidence: np.ndarray  # (h, w) float32 >= 0; 0 where there is none


def _disc(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def fill(values: np.ndarray, known: np.ndarray, long_side: int = 160) -> np.ndarray:
    """(h, w, c) `values` filled in where `known` is False by harmonic (membrane) interpolation: the
    smoothest surface through the known pixels around, which continues gradients exactly. Solved at
    a working size of at most `long_side` px (a smooth fill needs no more), known pixels kept."""
    h, w = known.shape
    s = min(1.0, long_side / max(h, w))
    size = (max(2, round(w * s)), max(2, round(h * s)))
    v = cv2.resize(values, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
    k = cv2.resize(known.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.999
    out = v.copy()
    unknown = ~k
    if unknown.any() and k.any():
        out[unknown] = _harmonic(v, k)
    up = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
    return np.where(known[..., None], values.reshape(h, w, -1), up).astype(np.float32)


def _harmonic(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Values at the unknown pixels solving Laplace's equation (4-neighbour) with the known ones fixed."""
    import scipy.sparse
    import scipy.sparse.linalg

    h, w = known.shape
    index = -np.ones((h, w), np.int64)
    unknown = np.flatnonzero(~known.ravel())
    index.ravel()[unknown] = np.arange(len(unknown))
    ys, xs = np.divmod(unknown, w)
    rows, cols, data = [], [], []
    rhs = np.zeros((len(unknown), values.shape[2]), np.float64)
    degree = np.zeros(len(unknown))
    flat = values.reshape(h * w, -1)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        degree += inside
        nbr = ny[inside] * w + nx[inside]
        j = index.ravel()[nbr]
        me = np.flatnonzero(inside)
        free = j >= 0
        rows.append(me[free])
        cols.append(j[free])
        np.add.at(rhs, me[~free], flat[nbr[~free]])
    A = scipy.sparse.csr_matrix((np.concatenate([-np.ones(len(r)) for r in rows] + [degree]),
                                 (np.concatenate(rows + [np.arange(len(unknown))]),
                                  np.concatenate(cols + [np.arange(len(unknown))]))), shape=(len(unknown),) * 2)
    solve = scipy.sparse.linalg.factorized(A.tocsc())
    return np.stack([solve(rhs[:, c]) for c in range(rhs.shape[1])], axis=1).astype(np.float32)


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
    error = np.full(mask.shape, 3 * sigma, np.float32)
    fit = layer_fit(lin, B, mask & reliable, error)
    a_t, c_t = seethrough_alpha(lin, B, sigma, r=max(2, int(0.012 * max(lin.shape[:2]))))
    if fit is None:
        return Evidence(a_t, (c_t * reliable).astype(np.float32))
    a_p, c_p = fit
    conf = (c_t + c_p) * reliable
    return Evidence(((c_t * a_t + c_p * a_p) / np.maximum(c_t + c_p, 1e-6)).astype(np.float32),
                    conf.astype(np.float32))


def layer_fit(lin: np.ndarray, B: np.ndarray, mask: np.ndarray, error: np.ndarray):
    """(alpha, confidence) of a uniform layer over the background B (uncertain by `error`, per pixel):
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


def layer_colour(lin: np.ndarray, B: np.ndarray, mask: np.ndarray, error: np.ndarray) -> np.ndarray | None:
    """The colour F of a uniform layer: every pixel's shift I - B points from its background towards F,
    so F is where those lines meet (least squares over the mask, weighted by how far each shift
    stands out of the background's uncertainty). For an opaque object of one colour it is that colour."""
    D = (lin - B)[mask]
    n = np.linalg.norm(D, axis=1)
    w = n ** 2 / (n ** 2 + (2 * error[mask]) ** 2)
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


def reconstructed_evidence(lin: np.ndarray, mask: np.ndarray, sigma: float = NOISE_FLOOR) -> Evidence | None:
    """Evidence from the background filled in from around the object (see the module's docstring)."""
    h, w = mask.shape
    size = max(h, w)
    R = max(2, int(0.03 * size))
    m8 = mask.astype(np.uint8)
    around = cv2.dilate(m8, _disc(R)) > 0  # the object and its soft edge: not background
    ring = (cv2.dilate(m8, _disc(4 * R)) > 0) & ~around
    if ring.sum() < 50 or around.all():
        return None
    B = fill(lin, ~around)
    # how well the fill predicts background it has not seen: leave a band out and predict it
    held = (cv2.dilate(m8, _disc(2 * R)) > 0) & ~around
    missed = np.linalg.norm(lin - fill(lin, ~(around | held)), axis=2)
    error = fill(missed[..., None], held)[..., 0] + 3 * sigma
    fit = layer_fit(lin, B, mask, error)
    if fit is None:
        return None
    a, fits = fit
    # ... and the texture: a layer leaves (1 - a)^2 of the background's texture energy, neither
    # more (the object's own texture) nor none at all (an opaque surface)
    r = max(1, int(0.012 * size))
    hp = lin - cv2.GaussianBlur(lin, (0, 0), float(r))
    seen = box_mean((hp * hp).sum(axis=2), 2 * r)
    floor = 3 * (2 * sigma) ** 2
    expected = (1.0 - a) ** 2 * fill(seen[..., None], ring)[..., 0] + floor
    texture = np.exp(-np.log((seen + floor) / expected) ** 2 / (2 * np.log(2.0) ** 2))
    return Evidence(a, (fits * texture * mask).astype(np.float32))


class SeeThrough:
    """Per-pixel see-through evidence for one shot (its background model is kept across passes)."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self._plates: CleanPlateEstimator | None = None
        self._previous: tuple[int, np.ndarray] | None = None  # (frame, mask) of the pass's previous frame

    def begin_pass(self) -> None:
        self._previous = None

    def evidence(self, frame: int, linear_full: np.ndarray, lin: np.ndarray, mask: np.ndarray,
                 seg: Segmentation, reconstruct: bool = True) -> Evidence | None:
        """Evidence at `frame` (proxy resolution). `reconstruct=False` leaves out the evidence from a
        reconstructed background (weaker: not used inside a mask the user drew)."""
        shape = mask.shape
        velocity = object_velocity(seg, frame, mask, self._previous)
        self._previous = (frame, mask)
        found = []
        if len(self.source.frames) >= 3:
            if self._plates is None or self._plates.shape != shape:
                self._plates = CleanPlateEstimator(self.source, shape)
            around = cv2.dilate(mask.astype(np.uint8), _disc(max(2, int(0.03 * max(shape))))) > 0
            plate = self._plates.estimate(frame, linear_full, around, velocity)
            if plate is not None:
                found.append(revealed_evidence(lin, mask, plate))
        if reconstruct:
            found.append(reconstructed_evidence(lin, mask))
        found = [e for e in found if e is not None]
        if not found:
            return None
        # independent sources: confidences add, estimates are confidence-weighted
        conf = sum(e.confidence for e in found)
        alpha = sum(e.confidence * e.alpha for e in found) / np.maximum(conf, 1e-9)
        return Evidence(alpha.astype(np.float32), conf.astype(np.float32))
