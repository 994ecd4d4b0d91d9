"""Classic matte stage: closed-form matting with video evidence, at a proxy resolution.

Alpha at the proxy resolution minimises

    a^T L a + sum_i c_i (a_i - p_i)^2

with L the closed-form (matting Laplacian) smoothness term of the display image and
per-pixel priors p with confidences c from

* the trimap: known foreground / background (hard constraints);
* a weak pull towards 0 for unknown pixels far from any sure foreground
  (`unknown_pull`, `pull_distance`): with the trimap's colour gate this is what keeps
  see-through interiors (glass, smoke) and background caught in a box-shaped mask low;
* a clean plate B of the background (neighbouring frames aligned by homography, only
  samples where the object has moved away), in scene-linear light where
  I = aF + (1 - a)B holds. Used once the object is found to be see-through (background
  texture visible through it):
    - background evidence: |I - B| within the noise -> a = 0 (on by default);
    - see-through regression / difference matting (`seethrough_alpha`, weight
      `diff_weight`, off by default: it did not pay on the synthetic benchmark);
* layer (difference) evidence against the least object-like aligned observation
  (`CleanPlateEstimator.estimate(direction=...)`): with d the object's colour direction
  (object minus surrounding background, linear RGB) and F . d the object's robust extreme
  along it, a = (I - B) . d / (F . d - B . d) per pixel (`layer_weight`), near the mask.
  Inside the mask of an opaque object B is the object itself, so there it counts only where
  the background's texture is seen through locally, at pixels that some neighbour saw
  uncovered or whose colour changed over the neighbours (`change_gate`: a still opaque object's
  own texture correlates too); once the object is found see-through
  over the pass (high-pass I correlates with the neighbours' least object-like samples
  inside the mask, `soft_threshold`), sure foreground stops being a hard 1 and the
  evidence decides there too (`soft_weight`). When the differences I - B are mostly not along d
  and the pixels' departures from their typical colour share one colour, the mask caught
  something else than the layer (a still part of the background) and the evidence works along
  the departures' colour instead (`layerdir.LayerDirection`, `switch_below`, `switch_coherence`);
* temporal coherence: the previous frame's alpha warped by the tracker's flow,
  where the flow is consistent and the warp is photometrically right.

The result is brought to full resolution with a guided filter (edge-aware).
"""
from __future__ import annotations

import cv2
import numpy as np

from mam2_server.engines.plan import Pass
from mam2_server.prompts import Prompt
from mam2_server.stages.base import FrameImages, FrameSource, Matter, Segmentation
from mam2_server.stages.matte.cleanplate import CleanPlateEstimator, Plate, lowest_along
from mam2_server.stages.matte.guided import guided_upsample
from mam2_server.stages.matte.layerdir import LayerDirection
from mam2_server.stages.matte.priors import HARD, solve_with_priors
from mam2_server.stages.matte.seethrough import box_mean, highpass, seethrough_alpha
from mam2_server.stages.segment.common import proxy_shape, resize


def _object_velocity(seg: Segmentation, frame: int, shape, mask: np.ndarray):
    """Object motion against the background, proxy px per frame (None when unknown)."""
    flow, to = seg.extras.get("flow"), seg.extras.get("flow_to")
    if flow is None or to is None or to == frame or not mask.any() or mask.all():
        return None
    fs = flow.shape[:2]
    if fs != shape:
        flow = resize(flow, shape) * np.array([shape[1] / fs[1], shape[0] / fs[0]], np.float32)
    rel = np.median(flow[mask], axis=0) - np.median(flow[~mask], axis=0)
    # flow maps to frame `to` (position there = x + rel): per-frame motion is rel / (to - frame)
    v = rel / float(to - frame)
    return float(v[0]), float(v[1])


class VideoMatter(Matter):
    def __init__(self, proxy_long_side: int = 640, use_plate: bool = True, temporal: float = 0.05,
                 diff_weight: float = 0.0, bg_weight: float = 3.0, unknown_pull: float = 0.5, pull_distance: float = 0.05,
                 static_weight: float = 1.0, layer_weight: float = 0.5, soft_weight: float = 1.0,
                 soft_threshold: float = 0.7, opaque_inside: float = 0.0,
                 dead_zone: float = 3.0, sure_local: float = 0.5,
                 fd_percentile: float = 80.0, raise_from: float = 0.3,
                 align_slack: int = 1, contrast_floor: float = 0.3, change_gate: float = 0.25,
                 switch_below: float = 0.5, switch_coherence: float = 0.3) -> None:
        self._layer_dir = LayerDirection(switch_below, switch_coherence, fd_percentile)
        self.change_gate = change_gate
        self.layer_weight = layer_weight
        self.opaque_inside = opaque_inside
        self.dead_zone = dead_zone
        self.sure_local = sure_local
        self.fd_percentile = fd_percentile
        self.raise_from = raise_from
        self.align_slack = align_slack
        self.contrast_floor = contrast_floor
        self.soft_weight = soft_weight
        self.soft_threshold = soft_threshold
        self.unknown_pull = unknown_pull
        self.static_weight = static_weight
        self.pull_distance = pull_distance
        self.proxy_long_side = proxy_long_side
        self.use_plate = use_plate
        self.temporal = temporal
        self.diff_weight = diff_weight
        self.bg_weight = bg_weight
        self._plates: CleanPlateEstimator | None = None
        self._prev: np.ndarray | None = None
        self._transparency: float | None = None
        self._dynamic: float | None = None
        self._direction: np.ndarray | None = None
        self._fd: float | None = None
        self._contrast: float | None = None
        self._seethrough: float | None = None
        self._source: FrameSource | None = None
        self.last_debug: dict = {}

    def begin_pass(self, source: FrameSource, plan: Pass, prompt: Prompt) -> None:
        self._source = source
        self._plates = None
        self._prev = None
        self._transparency = None
        self._dynamic = None
        self._direction = None
        self._fd = None
        self._contrast = None
        self._seethrough = None
        self._layer_dir.reset()

    def _plate(self, frame: int, linear: np.ndarray, shape, mask_s: np.ndarray,
               velocity: tuple[float, float] | None, direction: np.ndarray | None = None) -> Plate | None:
        if not self.use_plate or self._source is None or len(self._source.frames) < 3:
            return None
        if self._plates is None or self._plates.shape != shape:
            self._plates = CleanPlateEstimator(self._source, shape)
        r = max(2, int(0.03 * max(shape)))
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        obj = cv2.dilate(mask_s.astype(np.uint8), k) > 0
        return self._plates.estimate(frame, linear, obj, velocity, direction)

    def process(self, images: FrameImages, seg: Segmentation, trimap: np.ndarray) -> np.ndarray:
        full = trimap.shape
        shape = proxy_shape(*full, self.proxy_long_side)
        disp = resize(images.display, shape)
        lin = resize(np.asarray(images.linear, np.float32), shape)
        tri = resize(trimap.astype(np.float32), shape, nearest=True)
        mask = resize(seg.mask, shape) > 0.5
        prior = (tri >= 0.75).astype(np.float32)
        # unknown pixels get a weak pull towards 0: where nothing else informs them, a matte
        # that errs towards background is the safer error (no garbage over the plate)
        # (stronger the further a pixel is from any sure foreground)
        known = (tri >= 0.75) | (tri <= 0.25)
        dist = np.full(shape, 1e6, np.float32)  # distance to sure foreground, in pull_distance units
        fg_sure = (tri >= 0.75).astype(np.uint8)
        if fg_sure.any() and not known.all():
            dist = cv2.distanceTransform(1 - fg_sure, cv2.DIST_L2, 3) / (self.pull_distance * max(shape))
        pull = self.unknown_pull * np.clip(dist - 1.0, 0, 1)
        far = np.clip(dist, 0, 1).astype(np.float32)
        conf = np.where(known, HARD, pull).astype(np.float32)
        direction = self._object_direction(lin, mask) if self.layer_weight > 0 else None
        plate = self._plate(images.frame, images.linear, shape, mask, _object_velocity(seg, images.frame, shape, mask),
                            direction)
        dbg = {}
        if plate is not None and mask.any():
            self._add_static_evidence(lin, mask, plate, prior, conf, far, dbg)
            self._add_plate_evidence(lin, mask, tri, plate, prior, conf, dbg)
            self._add_layer_evidence(lin, mask, plate, prior, conf, dbg)
        if self.temporal > 0 and self._prev is not None and self._prev.shape == shape:
            self._add_temporal(seg, shape, prior, conf)
        if not mask.any() and not (conf < HARD).any():
            alpha_s = np.zeros(shape, np.float32)
        else:
            alpha_s = solve_with_priors(disp, prior, conf)
        self._prev = alpha_s
        self.last_debug = dbg
        return guided_upsample(alpha_s, images.display)

    def _object_direction(self, lin: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
        """Unit linear-RGB direction from the background around the object to the object (smoothed
        over the pass); also tracks the object's robust extreme along it (F . d, the
        `fd_percentile`-th percentile over the mask)."""
        if mask.sum() < 20 or mask.all():
            return self._direction
        h, w = mask.shape
        r1, r2 = max(2, int(0.03 * max(h, w))), max(4, int(0.08 * max(h, w)))
        m8 = mask.astype(np.uint8)
        near = cv2.dilate(m8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r1 + 1, 2 * r1 + 1))) > 0
        ring = (cv2.dilate(m8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r2 + 1, 2 * r2 + 1))) > 0) & ~near
        if ring.sum() < 20:
            return self._direction
        d = np.median(lin[mask], axis=0) - np.median(lin[ring], axis=0)
        n = float(np.linalg.norm(d))
        if n < 1e-4:
            return self._direction
        d = (d / n).astype(np.float32)
        if self._direction is not None:
            d = 0.7 * self._direction + 0.3 * d
            d = (d / max(float(np.linalg.norm(d)), 1e-6)).astype(np.float32)
        self._direction = d
        fd = float(np.percentile(lin[mask] @ d, self.fd_percentile))
        contrast = max(fd - float(np.median(lin[ring] @ d)), 0.0)
        self._contrast = contrast if self._contrast is None else 0.7 * self._contrast + 0.3 * contrast
        self._fd = fd if self._fd is None else 0.7 * self._fd + 0.3 * fd
        return d

    def _add_layer_evidence(self, lin, mask, plate: Plate, prior, conf, dbg) -> None:
        """Difference matting against the least object-like aligned observation B (see
        `CleanPlateEstimator.estimate`): a = (I - B) . d / (F - B) . d with d the object's colour
        direction and F . d its extreme. Near the mask only; unknown pixels always, sure
        foreground too once the object is found see-through (the background's texture shows
        through it in the aligned neighbours), where it replaces the hard 1."""
        if plate.lowest is None or self._direction is None or self._fd is None:
            return
        d, fd_obj, contrast_obj = self._direction, self._fd, self._contrast
        h, w = mask.shape
        B, nb = plate.lowest, plate.lowest_nb
        alt = self._layer_dir.update(lin, mask, plate, d) if self._layer_dir.switch_below > 0 else None
        dbg.update(explained=self._layer_dir.explained, coherence=self._layer_dir.coherence,
                   switched=self._layer_dir.switched)
        if alt is not None:
            # the mask caught something else than the layer that comes and goes: see `layerdir`
            d, fd_obj, contrast_obj = alt
            B, nb = lowest_along(lin, plate.stack, d)
        bd = B @ d
        if self.align_slack > 0 and plate.resampled:
            # neighbours resampled by a non-trivial warp: a pixel of residual misalignment at a
            # background edge is no layer, so compare with the largest B . d in a small window
            k = 2 * self.align_slack + 1
            bd = cv2.dilate(bd.astype(np.float32), np.ones((k, k), np.uint8))
        num = lin @ d - bd
        den = fd_obj - bd
        sigma = plate.noise
        # the minimum over several noisy / resampled observations sits below the true background:
        # differences within the noise are no evidence of the layer
        num = np.maximum(num - self.dead_zone * sigma, 0.0)
        a = np.clip(num / np.maximum(den, 1e-3), 0.0, 1.0).astype(np.float32)
        # trust grows with the contrast between object and background along d
        # and is ill-conditioned where the background is nearly as far along d as the object
        floor = (6 * sigma) ** 2 + (self.contrast_floor * (contrast_obj or 0.0)) ** 2
        trust = np.clip(den, 0, None) ** 2 / (np.clip(den, 0, None) ** 2 + floor)
        r = max(2, int(0.03 * max(h, w)))
        near = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0
        # a static object (or a slow one) covers the same pixels in every neighbour, and its own
        # texture there correlates with the neighbours' as well as a background seen through would:
        # a pixel tells something only where some neighbour saw the background there (the object
        # had moved away) or something passed over it (its colour changed by a fair part of the
        # object/background contrast)
        # (for the pass-level see-through test: a change above the noise at all)
        informative = moved = np.ones((h, w), np.float32)
        if self.change_gate > 0 and plate.valid is not None and plate.change is not None:
            k = self.change_gate * max(contrast_obj or 0.0, 1e-3)
            seen = (plate.valid >= 1).astype(np.float32)
            informative = np.maximum(seen, np.clip(plate.change / k, 0.0, 1.0))
            moved = np.maximum(seen, np.clip((plate.change - 3 * sigma) / (3 * sigma), 0.0, 1.0))
        # see-through test on the neighbours' least object-like samples
        rc = max(1, int(0.012 * max(h, w)))
        deep = cv2.erode(mask.astype(np.uint8), np.ones((2 * rc + 1, 2 * rc + 1), np.uint8)) > 0
        if nb is not None:
            deep &= np.isfinite(nb).all(axis=2)
            if deep.sum() > 20:
                hi = highpass(lin)[deep]
                hb = highpass(np.nan_to_num(nb))[deep]
                den_s = float(np.sqrt((hi * hi).sum() * (hb * hb).sum()))
                # uninformative pixels count as not seen through
                score = float((moved[deep] * hi * hb).sum()) / den_s if den_s > 1e-12 else 0.0
                self._seethrough = score if self._seethrough is None else 0.7 * self._seethrough + 0.3 * score
        soft = self._seethrough is not None and self._seethrough > self.soft_threshold
        dbg.update(seethrough=self._seethrough, soft=soft, layer_alpha=a)
        unknown = near & (conf < HARD)
        c = self.layer_weight * trust
        if not soft:
            # an opaque object covers its own interior in every neighbour, so B there is the
            # object itself: inside the tracked mask only where the background's texture is
            # seen through locally (high-pass I correlates with high-pass B)
            local = self.opaque_inside * np.ones_like(c)
            if nb is not None:
                rl = max(2, int(0.012 * max(h, w)))
                hi = highpass(lin)
                hb = highpass(np.nan_to_num(nb))
                cov = box_mean(hi * hb, rl)
                vi, vb = box_mean(hi * hi, rl), box_mean(hb * hb, rl)
                corr = cov / np.sqrt((vi + (2 * sigma) ** 2) * (vb + (2 * sigma) ** 2))
                local = np.maximum(local, np.clip(2.0 * corr - 0.6, 0.0, 1.0))
            local_u = local * informative
            # evidence for the layer (well above the least object-like sample) is sound either way
            raise_ = np.clip((a - self.raise_from) / 0.4, 0.0, 1.0) if self.raise_from < 1 else 0.0
            c = np.where(mask, np.maximum(local_u, raise_) * c, c)
            if self.sure_local > 0:
                # sure foreground where the background's texture clearly shows through is not
                # sure: the least object-like sample decides there too
                seen_through = near & (conf >= HARD) & (prior > 0.5) & (local_u >= self.sure_local)
                prior[seen_through] = a[seen_through]
                conf[seen_through] = self.soft_weight * np.maximum(trust[seen_through], 0.1)
        sel = unknown
        prior[sel] = (conf[sel] * prior[sel] + c[sel] * a[sel]) / np.maximum(conf[sel] + c[sel], 1e-9)
        conf[sel] = conf[sel] + c[sel]
        if soft:
            sure = near & (conf >= HARD) & (prior > 0.5)
            prior[sure] = a[sure]
            conf[sure] = self.soft_weight * np.maximum(trust[sure], 0.1)

    def _add_static_evidence(self, lin, mask, plate: Plate, prior, conf, far, dbg) -> None:
        """Inside the mask of an object that changes from frame to frame (moves, deforms, drifts),
        pixels that stay exactly the same in every aligned neighbour are background seen through
        or beside it (the cup under the steam, the wall behind the splash): pull them to 0."""
        if self.static_weight <= 0 or plate.change is None:
            return
        seen = plate.aligned >= 2
        static = seen & (plate.change < 1.5 * plate.noise + 0.005 * np.linalg.norm(lin, axis=2))
        inside = mask & seen
        if inside.sum() < 20:
            return
        moving = 1.0 - float(static[inside].mean())
        # decided over the pass (smoothed), like the see-through test
        self._dynamic = moving if self._dynamic is None else 0.7 * self._dynamic + 0.3 * moving
        dbg.update(dynamic=self._dynamic)
        if self._dynamic < 0.5:
            return  # the object itself is still: unchanged pixels say nothing
        # like the unknown pull: not next to sure foreground (a flat patch of a moving opaque
        # object can look unchanged from frame to frame)
        sel = static & mask & (conf < HARD)
        w = self.static_weight * far[sel]
        prior[sel] = (conf[sel] * prior[sel]) / np.maximum(conf[sel] + w, 1e-9)
        conf[sel] = conf[sel] + w

    def _add_plate_evidence(self, lin, mask, tri, plate: Plate, prior, conf, dbg) -> None:
        sigma = plate.noise
        B = plate.background
        D = lin - B
        e = np.linalg.norm(D, axis=2)
        reliable = (plate.valid >= 1) & (plate.spread < 3 * sigma + 0.1 * np.linalg.norm(B, axis=2))
        h, w = mask.shape
        # only look for the object near where the tracker put it
        R = max(3, int(0.08 * max(h, w)))
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * R + 1, 2 * R + 1))
        near = cv2.dilate(mask.astype(np.uint8), k) > 0
        rc = max(3, int(0.015 * max(h, w)))
        deep = cv2.erode(mask.astype(np.uint8), np.ones((2 * rc + 1, 2 * rc + 1), np.uint8)) > 0
        deep &= reliable
        # a plate that still holds the object (it did not move against the background)
        static = deep.sum() > 20 and float((e[deep] < 3 * sigma).mean()) > 0.6
        dbg.update(sigma=sigma, static=static)
        if static:
            return
        if deep.sum() > 20:
            # see-through test: the background's texture shows through a transparent object,
            # so high-pass I correlates with high-pass B inside the object (away from its
            # edges); not through an opaque one
            hi = highpass(lin)[deep]
            hb = highpass(B)[deep]
            den = float(np.sqrt((hi * hi).sum() * (hb * hb).sum()))
            score = float((hi * hb).sum()) / den if den > 1e-12 else 0.0
            # decided over the pass, not per frame, so the matte does not switch modes (flicker)
            self._transparency = score if self._transparency is None else 0.7 * self._transparency + 0.3 * score
        transparent = self._transparency is not None and self._transparency > 0.35
        dbg.update(transparent=transparent, score=self._transparency)
        if not transparent:
            return  # opaque object: the trimap + Laplacian already do best
        a_t, c_t, a_p, c_p = seethrough_alpha(lin, B, sigma, r=max(2, int(0.012 * max(h, w))))
        dbg.update(a_t=a_t, c_t=c_t, a_p=a_p, c_p=c_p)
        bgev = reliable & near & (e < 2.5 * sigma)
        fgev = reliable & near & ~bgev
        c_bg = np.where(bgev, self.bg_weight, 0.0)
        c_fg = np.where(fgev, self.diff_weight * (c_t + c_p), 0.0)

        a_fg = (c_t * a_t + c_p * a_p) / np.maximum(c_t + c_p, 1e-6)
        sel = (c_bg > 0) | (c_fg > 0.05)
        # these pixels stop being hard constraints: the evidence decides with the Laplacian
        conf[sel] = c_bg[sel] + c_fg[sel]
        prior[sel] = (c_fg[sel] * a_fg[sel]) / np.maximum(conf[sel], 1e-6)
        # elsewhere the trimap stays: its unknown band is solved by the Laplacian alone

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
