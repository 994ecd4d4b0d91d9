"""Classic segmenter: GrabCut from the prompt, carried frame to frame by DIS optical flow.

Per frame of a pass (at a proxy resolution):

1. dense flow current -> previous (and previous -> current for a forward-backward check);
2. the previous mask is warped into the current frame; pixels whose flow is not
   consistent both ways are occluded / disoccluded and left to the colour model;
3. colour models of object and background (3-D histograms accumulated over the pass
   with the keyframe's kept as an anchor) give a per-pixel object probability;
4. GrabCut re-fits the mask in a crop around the warped mask, seeded with sure
   object (eroded warped mask agreeing with colour), sure background (far from it)
   and probable labels in between.

On a keyframe the object is cut from its prompt (a mask the user drew seeds the cut and is
where its edge is). Pixels whose colour the pass's models call background, not merely
ambiguous, are holes in the mask (gaps between leaves that GrabCut's smoothing closed); an object
sharing its background's colours is ambiguous and keeps its inside.

The colour models of every keyframe the pass may use (its own and, the engine being chained,
the earlier ones) anchor the pass's colour model: a correction keeps what the earlier keyframes
taught. (Seeding the keyframe's cut with them as well made a second, correct box worse than the
tracked mask it replaced: 16-bin histograms are too coarse to overrule GrabCut's own models.)

When the cut finds nothing in a box (the object cannot be told from its background by colour)
the frame is left empty, the conservative answer, and the log says so. An object that leaves the
frame leaves an empty warped mask and the result stays empty (alpha 0) from then on.
"""
from __future__ import annotations

import logging
from typing import Mapping

import cv2
import numpy as np

from mam2_server.engines.plan import Pass
from mam2_server.prompts import Prompt
from mam2_server.stages.base import FrameImages, FrameSource, Segmentation, Segmenter
from mam2_server.stages.segment.common import (bbox, cut_from_prompt, disc_radius, proxy_shape, resize,
                                               run_grabcut, to_u8)

log = logging.getLogger(__name__)

BINS = 16


def _hist_index(bgr: np.ndarray) -> np.ndarray:
    q = (bgr >> 4).astype(np.int32)
    return (q[..., 0] * BINS + q[..., 1]) * BINS + q[..., 2]


def _histogram(idx: np.ndarray, mask: np.ndarray) -> np.ndarray:
    h = np.bincount(idx[mask].ravel(), minlength=BINS ** 3).astype(np.float64)
    h = h.reshape(BINS, BINS, BINS)
    h = cv2.GaussianBlur(h.reshape(BINS, BINS * BINS), (3, 3), 0).reshape(BINS, BINS, BINS)  # cheap smoothing
    s = h.sum()
    return h / s if s > 0 else h


def dis_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flow from uint8 gray `a` to `b` (a(x) ~ b(x + flow(x)))."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(a, b, None)


def warp(img: np.ndarray, flow: np.ndarray, border_value: float = 0.0, nearest: bool = False) -> np.ndarray:
    """Sample img at x + flow(x)."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(img, gx + flow[..., 0], gy + flow[..., 1],
                     cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)


def flow_consistency(flow_b: np.ndarray, flow_f: np.ndarray, tol: float = 1.0) -> np.ndarray:
    """True where following flow_b (cur->prev) then flow_f (prev->cur) comes back (not occluded)."""
    back = warp(flow_f, flow_b, border_value=1e4)
    err = np.linalg.norm(flow_b + back, axis=2)
    mag = np.linalg.norm(flow_b, axis=2)
    return err < tol + 0.05 * mag


class FlowTracker(Segmenter):
    def __init__(self, proxy_long_side: int = 480, key_iterations: int = 5, iterations: int = 2,
                 memory: float = 0.7, hole_below: float = 0.25) -> None:
        self.hole_below = hole_below
        self.proxy_long_side = proxy_long_side
        self.key_iterations = key_iterations
        self.iterations = iterations
        self.memory = memory  # weight of the accumulated colour model vs this frame's
        self._key_source: FrameSource | None = None  # keyframe colour models are cached per source
        self._key_cache: dict[int, tuple[Prompt, tuple[np.ndarray, np.ndarray] | None]] = {}
        self._reset()

    def _reset(self) -> None:
        self._prompt: Prompt | None = None
        self._prev_gray = None
        self._prev_frame: int | None = None
        self._prev_mask = None  # float32 proxy
        self._hist_fg = self._hist_bg = None
        self._key_fg = self._key_bg = None
        self._earlier: tuple[np.ndarray, np.ndarray] | None = None  # colour models of the earlier keyframes

    def begin_pass(self, source: FrameSource, plan: Pass, prompts: Mapping[int, Prompt]) -> None:
        self._reset()
        self._prompt = prompts[plan.keyframe]
        earlier = [self._key_models(source, p) for k, p in sorted(prompts.items()) if k != plan.keyframe]
        earlier = [m for m in earlier if m is not None]
        if earlier:
            self._earlier = (np.mean([m[0] for m in earlier], axis=0), np.mean([m[1] for m in earlier], axis=0))
        if plan.frames and plan.frames[0] != plan.keyframe:
            self._process_display(plan.keyframe, source.display(plan.keyframe))

    def _key_models(self, source: FrameSource, prompt: Prompt) -> tuple[np.ndarray, np.ndarray] | None:
        """(object, background) colour histograms of a keyframe's cut (cached per keyframe prompt)."""
        if self._key_source is not source:
            self._key_source, self._key_cache = source, {}
        if prompt.frame in self._key_cache and self._key_cache[prompt.frame][0].same_as(prompt):
            return self._key_cache[prompt.frame][1]
        display = source.display(prompt.frame)
        shape = proxy_shape(*display.shape[:2], self.proxy_long_side)
        bgr = to_u8(resize(display, shape))
        mask = self._cut(bgr, prompt, display.shape[:2])
        idx = _hist_index(bgr)
        models = (_histogram(idx, mask), _histogram(idx, ~mask)) if mask.any() and not mask.all() else None
        self._key_cache[prompt.frame] = (prompt, models)
        return models

    def _cut(self, bgr: np.ndarray, prompt: Prompt, full: tuple[int, int]) -> np.ndarray:
        """The keyframe's object mask at proxy size: GrabCut from the prompt (a drawn mask seeds it and
        bounds how far it may move)."""
        mask = cut_from_prompt(bgr, prompt, full, self.key_iterations)
        if prompt.box is None and prompt.mask is None:
            log.warning("frame %d: only points: a click does not say how big the object is, so the classic engine "
                        "guesses its extent around them (it may take in background of similar colour); a box or a "
                        "mask says it", prompt.frame)
        if not mask.any():
            log.warning("frame %d: the prompt's object cannot be told from its background by colour; nothing is "
                        "matted there (the conservative answer): give a mask or more points", prompt.frame)
        return mask

    # -- colour model -------------------------------------------------------------
    def _colour_prob(self, idx: np.ndarray) -> np.ndarray:
        key_fg, key_bg = self._key_fg, self._key_bg
        if self._earlier is not None:  # every keyframe's model anchors the pass
            key_fg, key_bg = 0.5 * key_fg + 0.5 * self._earlier[0], 0.5 * key_bg + 0.5 * self._earlier[1]
        f = 0.5 * self._hist_fg + 0.5 * key_fg
        b = 0.5 * self._hist_bg + 0.5 * key_bg
        pf, pb = f.ravel()[idx], b.ravel()[idx]
        return ((pf + 1e-6) / (pf + pb + 2e-6)).astype(np.float32)

    def _update_colour(self, idx: np.ndarray, mask: np.ndarray, key: bool) -> None:
        if not mask.any() or mask.all():
            return
        hf, hb = _histogram(idx, mask), _histogram(idx, ~mask)
        if key:
            self._key_fg, self._key_bg = hf, hb
            self._hist_fg, self._hist_bg = hf.copy(), hb.copy()
        else:
            m = self.memory
            self._hist_fg = m * self._hist_fg + (1 - m) * hf
            self._hist_bg = m * self._hist_bg + (1 - m) * hb

    # -- per frame -----------------------------------------------------------------
    def _process_display(self, frame: int, display: np.ndarray) -> tuple[np.ndarray, dict]:
        full = display.shape[:2]
        shape = proxy_shape(*full, self.proxy_long_side)
        small = resize(display, shape)
        bgr = to_u8(small)
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        idx = _hist_index(bgr)
        extras: dict = {}
        if frame == self._prompt.frame or self._prev_mask is None:
            mask = self._cut(bgr, self._prompt, full)
            self._update_colour(idx, mask, key=True)
            # a mask the user drew (full size) is where the edge is: no colour model makes it less sure,
            # and what the cut added around it is the trimap's to doubt
            if self._prompt.mask is not None and frame == self._prompt.frame:
                extras["drawn_mask"] = self._prompt.mask > 0.5
            extras["flow"] = np.zeros(shape + (2,), np.float32)
            extras["consistent"] = np.ones(shape, bool)
            soft = mask.astype(np.float32)
        else:
            flow_b = dis_flow(gray, self._prev_gray)
            flow_f = dis_flow(self._prev_gray, gray)
            ok = flow_consistency(flow_b, flow_f)
            warped = warp(self._prev_mask, flow_b, 0.0)
            extras["flow"], extras["consistent"] = flow_b, ok
            extras["flow_to"] = self._prev_frame  # flow maps this frame's pixels into that frame
            back = warp(self._prev_gray.astype(np.float32), flow_b, 0.0)
            extras["warp_residual"] = np.abs(gray.astype(np.float32) - back) / 255.0
            if self._hist_fg is None or not (warped > 0.5).any():
                mask = np.zeros(shape, bool)  # nothing left to track (left the frame / vanished)
            else:
                mask = self._refit(bgr, idx, warped, ok, shape)
                self._update_colour(idx, mask, key=False)
            soft = mask.astype(np.float32)
        extras["colour_prob"] = self._colour_prob(idx) if self._hist_fg is not None else None
        if extras["colour_prob"] is not None and self.hole_below > 0 and "drawn_mask" not in extras:
            # pixels whose colour the models call background, not merely ambiguous (gaps between
            # leaves the cut smoothed over): holes in the mask. An object sharing its background's
            # colours is ambiguous (near 0.5), never below this; a mask the user drew is kept
            soft = np.where(extras["colour_prob"] < self.hole_below, 0.0, soft).astype(np.float32)
        self._prev_gray, self._prev_mask, self._prev_frame = gray, soft, frame
        return soft, extras

    def _refit(self, bgr, idx, warped, ok, shape) -> np.ndarray:
        h, w = shape
        prob = self._colour_prob(idx)
        m = (warped > 0.5).astype(np.uint8)
        r = disc_radius(shape, 0.012)
        k_in = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        R = disc_radius(shape, 0.04, 4)
        k_out = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * R + 1, 2 * R + 1))
        inner = cv2.erode(m, k_in) > 0
        outer = cv2.dilate(m, k_out) > 0
        seeds = np.full(shape, cv2.GC_BGD, np.uint8)
        seeds[outer] = cv2.GC_PR_BGD
        seeds[outer & (prob > 0.5)] = cv2.GC_PR_FGD
        seeds[m > 0] = cv2.GC_PR_FGD
        seeds[(m > 0) & ~ok & (prob < 0.3)] = cv2.GC_PR_BGD  # occluder coming in: let colour decide
        seeds[inner & ok & (prob > 0.6)] = cv2.GC_FGD
        # crop around the region of interest
        box = bbox(outer)
        if box is None:
            return np.zeros(shape, bool)
        x0, y0, x1, y1 = box
        pad = R
        x0, y0, x1, y1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
        sub = seeds[y0:y1, x0:x1]
        if (x1 - x0) < 4 or (y1 - y0) < 4:
            return m > 0
        cut = run_grabcut(np.ascontiguousarray(bgr[y0:y1, x0:x1]), sub, self.iterations)
        mask = np.zeros(shape, bool)
        mask[y0:y1, x0:x1] = cut
        # keep the components that overlap the warped mask (drop stray colour blobs)
        n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        if n > 2:
            keep = np.zeros(n, bool)
            keep[np.unique(lab[(m > 0) & mask])] = True
            keep[0] = False
            mask = keep[lab]
        return mask

    def process(self, images: FrameImages) -> Segmentation:
        soft, extras = self._process_display(images.frame, images.display)
        full = images.display.shape[:2]
        out = resize(soft, full)
        return Segmentation(np.clip(out, 0, 1).astype(np.float32), extras)
