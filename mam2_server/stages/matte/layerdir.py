"""Which colour direction the layer (difference-matting) evidence works along, decided per pass.

`VideoMatter` takes the object's colour direction d from the tracked mask (mask median minus the
median of a ring around it) and the background at a pixel as its least object-like observation
along d over the aligned neighbours. When the mask caught something that is not the moving layer
(a still, dark part of the background inside the prompt's box, with bright droplets flying over
it), d points away from the layer and the difference matte comes out inverted: high wherever the
layer has just left. Two observations tell this apart without knowing the object:

* `explained`: the share of the energy of I - B (B the least object-like sample along d) that lies
  along d. The layer model I = B + a (F - B) puts those differences along the object's colour; a
  low share says d describes something else.
* `coherence`: the pixels' departures from their typical colour (per-pixel median of the frame and
  its aligned neighbours) summed as vectors, over their total length. Near 1 when what comes and
  goes has one colour (a sparse layer over the background: droplets, sparks); near 0 for
  departures of every colour and sign (a dense or deforming object, swaying foliage, misalignment).

When both say so (explained under `switch_below`, coherence over `switch_coherence`, smoothed over
the pass with hysteresis so the mode does not flicker), the layer is taken along the departures'
resultant, with F . d the `percentile`-th percentile over the pixels where the layer is now.
"""
from __future__ import annotations

import cv2
import numpy as np

from mam2_server.stages.matte.cleanplate import Plate, typical_colour


def _smooth(old, new, keep=0.7):
    return new if old is None else keep * old + (1 - keep) * new


class LayerDirection:
    def __init__(self, switch_below: float = 0.5, switch_coherence: float = 0.3, percentile: float = 80.0,
                 hysteresis: float = 0.1) -> None:
        self.switch_below = switch_below
        self.switch_coherence = switch_coherence
        self.percentile = percentile
        self.hysteresis = hysteresis
        self.reset()

    def reset(self) -> None:
        self.explained: float | None = None
        self.coherence: float | None = None
        self.switched = False
        self._dyn: tuple[np.ndarray, float, float] | None = None

    def update(self, lin: np.ndarray, mask: np.ndarray, plate: Plate, direction: np.ndarray):
        """(d, F . d, contrast) of the changing layer when it replaces `direction`, else None."""
        if plate.stack is None or plate.lowest is None or not mask.any():
            return None
        h, w = mask.shape
        sigma = plate.noise
        r = max(2, int(0.03 * max(h, w)))
        near = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0
        ys, xs = np.nonzero(near)
        win = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))  # only near the object
        typical = typical_colour(lin, plate.stack, win)
        lin, near = lin[win], near[win]
        D = (lin - plate.lowest[win])[near]
        big = np.linalg.norm(D, axis=1) > 6 * sigma
        if big.sum() >= 20:
            e = float(((D[big] @ direction) ** 2).sum() / max(float((D[big] ** 2).sum()), 1e-12))
            self.explained = _smooth(self.explained, e)
        C = lin - typical
        dep = near & (np.linalg.norm(C, axis=2) > 6 * sigma)
        if dep.sum() >= 20:
            v = C[dep].sum(axis=0)
            n = float(np.linalg.norm(v))
            self.coherence = _smooth(self.coherence, n / max(float(np.linalg.norm(C[dep], axis=1).sum()), 1e-12))
            v = (v / max(n, 1e-12)).astype(np.float32)
            on = dep & (C @ v > 6 * sigma)  # where the layer is now
            if n > 1e-6 and on.sum() >= 10:
                fd = float(np.percentile(lin[on] @ v, self.percentile))
                con = max(fd - float(np.median(typical[on] @ v)), 0.0)
                if self._dyn is not None:
                    v0, fd0, con0 = self._dyn
                    v = 0.7 * v0 + 0.3 * v
                    v = (v / max(float(np.linalg.norm(v)), 1e-6)).astype(np.float32)
                    fd, con = _smooth(fd0, fd), _smooth(con0, con)
                self._dyn = (v, fd, con)
        if self.explained is not None and self.coherence is not None:
            slack = self.hysteresis if self.switched else 0.0
            self.switched = self.explained < self.switch_below + slack and self.coherence > self.switch_coherence - slack
        return self._dyn if self.switched and self._dyn is not None else None
