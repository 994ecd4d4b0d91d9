"""Classic matte stage: closed-form matting in which only evidence at a pixel makes the object see-through.

Alpha at a proxy resolution minimises

    a^T L a + sum_i c_i (a_i - p_i)^2

with L the matting Laplacian of the display image and priors p with confidences c:

* the trimap: background outside the band is a hard 0; inside the band the mask is a hard 1,
  softened to a prior of 1 (`opaque_weight`) only around pixels with see-through evidence;
* see-through evidence (`layer.SeeThrough`), inside the band only: the background behind the
  object where some other frame revealed it (the clean plate). It joins the prior of 1 weighted
  by its confidence (`evidence_weight`): scattered evidence gives way to the opaque prior, dense
  evidence (a layer) does not. In the unknown band the revealed background is least reliable (a
  swaying edge is not the rigid motion that decides what was revealed) and the Laplacian does
  better alone: evidence there raised the demo shot's MAD from 5.6 to 13;
* on unknown pixels outside the mask, a weak pull towards 0 far from sure foreground
  (`unknown_pull`): where nothing informs them, erring towards background is the safer error;
* temporal coherence: the previous frame's alpha carried by the tracker's flow, where the flow
  is consistent and the warp photometrically right.

No switch decided for a whole pass or frame can turn the inside of the mask into background: with
no evidence, the answer is the mask's (the conservative one), and the log says so once per pass
(a see-through object whose background no frame reveals — still smoke on a locked-off shot, a
single photograph — is then matted as opaque: give the mam2 engine or a tighter mask).
The proxy matte is brought to full resolution with a guided filter (edge-aware).
"""
from __future__ import annotations

import logging
from typing import Mapping

import cv2
import numpy as np

from mam2_server.engines.plan import Pass
from mam2_server.prompts import Prompt
from mam2_server.stages.base import FrameImages, FrameSource, Matter, Segmentation
from mam2_server.stages.matte.guided import guided_upsample
from mam2_server.stages.matte.layer import Evidence, SeeThrough
from mam2_server.stages.matte.priors import HARD, solve_with_priors
from mam2_server.stages.segment.common import proxy_shape, resize

log = logging.getLogger(__name__)


class EvidenceMatter(Matter):
    def __init__(self, proxy_long_side: int = 640, temporal: float = 0.05, evidence_weight: float = 2.0,
                 opaque_weight: float = 1.0, unknown_pull: float = 0.5, pull_distance: float = 0.05) -> None:
        self.unknown_pull = unknown_pull
        self.pull_distance = pull_distance
        self.proxy_long_side = proxy_long_side
        self.temporal = temporal
        self.evidence_weight = evidence_weight
        self.opaque_weight = opaque_weight
        self._layers: SeeThrough | None = None
        self._prev: np.ndarray | None = None
        # this pass's frames, those where the background was revealed behind the object, and those
        # where that evidence says see-through (for the pass's log line)
        self._frames: list[int] = []
        self._revealed: list[int] = []
        self._seethrough: list[int] = []

    def begin_pass(self, source: FrameSource, plan: Pass, prompts: Mapping[int, Prompt]) -> None:
        # the aligned neighbour frames are the shot's, not the pass's: a new pass reuses them
        if self._layers is None or self._layers.source is not source:
            self._layers = SeeThrough(source)
        self._layers.begin_pass()
        self._prev = None
        self._frames, self._revealed, self._seethrough = [], [], []

    def process(self, images: FrameImages, seg: Segmentation, trimap: np.ndarray) -> np.ndarray:
        full = trimap.shape
        shape = proxy_shape(*full, self.proxy_long_side)
        disp = resize(images.display, shape)
        lin = resize(np.asarray(images.linear, np.float32), shape)
        tri = resize(trimap.astype(np.float32), shape, nearest=True)
        mask = resize(seg.mask, shape) > 0.5
        prior = (tri >= 0.75).astype(np.float32)
        known = (tri >= 0.75) | (tri <= 0.25)
        # outside the mask, a pull towards 0 far from sure foreground; inside it the Laplacian alone
        # (leaning those pixels to the mask's 1 filled the sky between hair strands: demo 5.8 -> 7.6)
        conf = np.where(known, HARD, np.where(mask, 0.0, self._pull(tri, known))).astype(np.float32)
        evidence = self._layers.evidence(images.frame, images.linear, lin, mask, seg) if mask.any() else None
        self._frames.append(images.frame)
        if evidence is not None:
            revealed, seethrough = self._add_evidence(evidence, tri, prior, conf)
            if revealed:
                self._revealed.append(images.frame)
            if seethrough:
                self._seethrough.append(images.frame)
        if self.temporal > 0 and self._prev is not None and self._prev.shape == shape:
            self._add_temporal(seg, shape, prior, conf)
        if not mask.any() and not (conf < HARD).any():
            alpha_s = np.zeros(shape, np.float32)
        else:
            alpha_s = solve_with_priors(disp, prior, conf)
        self._prev = alpha_s
        return guided_upsample(alpha_s, images.display)

    def _pull(self, tri: np.ndarray, known: np.ndarray) -> np.ndarray:
        """A weak pull towards 0 on unknown pixels far from sure foreground (the band of a wide trimap):
        where nothing informs them, erring towards background is the safer error. Stronger the further
        a pixel is from sure foreground (nothing within `pull_distance` x the long side, then ramping)."""
        fg = (tri >= 0.75).astype(np.uint8)
        if self.unknown_pull <= 0 or not fg.any() or known.all():
            return np.zeros(tri.shape, np.float32)
        dist = cv2.distanceTransform(1 - fg, cv2.DIST_L2, 3) / (self.pull_distance * max(tri.shape))
        return (self.unknown_pull * np.clip(dist - 1.0, 0.0, 1.0)).astype(np.float32)

    def end_pass(self) -> None:
        if not self._frames:
            return
        span = f"frames {min(self._frames)}-{max(self._frames)}"
        if not self._revealed:
            log.info("%s: no frame revealed the background behind the object, so nothing says it is "
                     "see-through: matted as opaque inside its mask (the conservative answer)", span)
        else:
            log.info("%s: background revealed behind the object on %d of %d frames, seen through it on %d",
                     span, len(self._revealed), len(self._frames), len(self._seethrough))

    def _add_evidence(self, ev: Evidence, tri: np.ndarray, prior: np.ndarray,
                      conf: np.ndarray) -> tuple[bool, bool]:
        """Around pixels with evidence the hard 1 inside the band becomes a prior of 1, weighted by how
        little of the neighbourhood says "see-through" (scattered evidence gives way to it, a layer
        does not), joined by the evidence as a soft prior. Elsewhere nothing changes. Returns whether
        the evidence reached the inside of the mask, and whether it says see-through there (its
        confidence-weighted alpha under 0.8; for the log line only)."""
        has = ev.confidence > 0.05
        if not has.any():
            return False, False
        size = max(tri.shape)
        r = max(2, int(0.012 * size))
        soften = (tri >= 0.75) & (cv2.dilate(has.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0)
        inside = (tri >= 0.75).astype(np.float32)
        k = 2 * max(3, int(0.05 * size)) + 1
        seethrough = cv2.blur(np.minimum(ev.confidence, 1.0) * (1.0 - ev.alpha) * inside, (k, k))
        density = seethrough / np.maximum(cv2.blur(inside, (k, k)), 1e-6)
        opaque = self.opaque_weight * np.clip(1.0 - density[soften], 0.0, 1.0) ** 2 + 1e-3
        c = self.evidence_weight * ev.confidence[soften]
        prior[soften] = (opaque + c * ev.alpha[soften]) / (opaque + c)
        conf[soften] = opaque + c
        w = ev.confidence[soften]
        seen_through = w.sum() > 0 and float((w * ev.alpha[soften]).sum() / w.sum()) < 0.8
        return bool(soften.any()), seen_through

    def _add_temporal(self, seg: Segmentation, shape, prior, conf) -> None:
        flow = seg.extras.get("flow")
        ok = seg.extras.get("consistent")
        if flow is None:
            return
        fs = flow.shape[:2]
        if fs != shape:
            sx, sy = shape[1] / fs[1], shape[0] / fs[0]
            flow = resize(flow, shape) * np.array([sx, sy], np.float32)
            ok = resize(ok.astype(np.float32), shape) > 0.5 if ok is not None else None
        h, w = shape
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        warped = cv2.remap(self._prev, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        c_t = np.full(shape, self.temporal, np.float32)
        if ok is not None:
            c_t[~ok] = 0.0
        res = seg.extras.get("warp_residual")
        if res is not None:
            res = resize(res, shape) if res.shape != shape else res
            c_t *= np.exp(-(res / 0.03) ** 2)
        soft = conf < HARD
        tot = conf + c_t
        blend = np.where(tot > 0, (conf * prior + c_t * warped) / np.maximum(tot, 1e-9), prior)
        prior[soft] = blend[soft]
        conf[soft] = tot[soft]
