"""Clean plate of the background at one frame, from aligned neighbouring frames.

Neighbours are read through the FrameSource (RGB only, never another pass's result),
aligned to the current frame with a homography fitted to ORB features outside the
tracked object and refined by ECC (a global shift by ECC when features are too few; the
identity when it fits as well: a locked-off camera), and
combined with a per-pixel median in scene-linear light. A small LRU cache of proxy
frames keeps memory flat in the shot's length.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from mam2_server.io.srgb import linear_to_srgb
from mam2_server.stages.base import FrameSource
from mam2_server.stages.segment.common import resize


@dataclass
class Plate:
    background: np.ndarray  # (h, w, 3) linear, proxy resolution
    valid: np.ndarray  # (h, w) number of neighbours that saw the pixel
    spread: np.ndarray  # (h, w) median absolute deviation of the neighbours (linear)
    noise: float  # robust noise level of |I - B| on the background


def _gray_u8(linear: np.ndarray) -> np.ndarray:
    x = linear_to_srgb(linear)
    y = x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
    return np.clip(y * 255 + 0.5, 0, 255).astype(np.uint8)


REACH = 12  # frames on either side a plate may be made from
NOISE_FLOOR = 2e-3  # the noise level of a clean (synthetic or denoised) plate: a floor for noise-relative tests


class CleanPlateEstimator:
    def __init__(self, source: FrameSource, shape: tuple[int, int], *, max_neighbours: int = 6,
                 reach: int = REACH, cache_size: int = 32, refine: bool = True) -> None:
        self.refine = refine
        self.source = source
        self.shape = shape
        self.max_neighbours = max_neighbours
        self.reach = reach
        self._cache: OrderedDict[int, tuple] = OrderedDict()
        self._cache_size = cache_size
        # (frame, neighbour) -> homography neighbour -> frame, fitted this pass: the pair seen from
        # the other side is its inverse (half the alignments of a pass, about 0.2 s a 1080p frame)
        self._aligned: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        patch = 31 if min(shape) >= 200 else 15
        self._orb = cv2.ORB_create(nfeatures=800, fastThreshold=10, edgeThreshold=patch, patchSize=patch)

    def _get(self, frame: int, linear: np.ndarray | None = None):
        if frame in self._cache:
            self._cache.move_to_end(frame)
            return self._cache[frame]
        if linear is None:
            linear = self.source.linear(frame)
        small = resize(np.asarray(linear, np.float32), self.shape)
        gray = _gray_u8(small)
        kp, des = self._orb.detectAndCompute(gray, None)
        pts = np.float32([k.pt for k in kp]) if kp else np.zeros((0, 2), np.float32)
        item = (small, gray, pts, des)
        self._cache[frame] = item
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return item

    def neighbours(self, frame: int) -> list[int]:
        # within `reach` frame numbers (not list positions: the server's cache keys count frame
        # numbers, and a sequence may have gaps); the farthest first: the object has moved most there
        cands = [f for f in self.source.frames if f != frame and abs(f - frame) <= self.reach]
        cands.sort(key=lambda f: (-abs(f - frame), f))
        return sorted(cands[:self.max_neighbours])

    def begin_pass(self) -> None:
        """Forget the pass's alignments: a pass's result must not depend on which passes ran before."""
        self._aligned.clear()

    def _align(self, frame: int, f: int, cur, nb, object_now, object_there, both) -> np.ndarray:
        """Homography neighbour f -> frame: features, refined by ECC (or ECC's shift when features are
        too few), or the identity where that fits as well; the inverse of f's when f had frame as a
        neighbour earlier in the pass."""
        back = self._aligned.get((f, frame))
        if back is not None:
            return np.linalg.inv(back)
        H = self._homography(cur, nb, object_now)
        if H is None:
            H = self._translation(cur, nb, both)
        elif self.refine:
            H = self._refine(cur, nb, H, object_now, object_there)
        H = self._prefer_identity(cur, nb, H, both)
        self._aligned[(frame, f)] = H
        if len(self._aligned) > 16 * self.max_neighbours:
            self._aligned.popitem(last=False)
        return H

    def _homography(self, cur, nb, object_mask: np.ndarray | None) -> np.ndarray | None:
        _, _, pts_c, des_c = cur
        _, _, pts_n, des_n = nb
        if des_c is None or des_n is None or len(pts_c) < 12 or len(pts_n) < 12:
            return None
        matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
        matches = matcher.match(des_n, des_c)
        if object_mask is not None:
            h, w = object_mask.shape
            keep = []
            for m in matches:
                x, y = pts_c[m.trainIdx]
                if not object_mask[min(h - 1, int(y)), min(w - 1, int(x))]:
                    keep.append(m)
            matches = keep
        if len(matches) < 12:
            return None
        src = np.float32([pts_n[m.queryIdx] for m in matches])
        dst = np.float32([pts_c[m.trainIdx] for m in matches])
        H, inl = cv2.findHomography(src, dst, cv2.RANSAC, 1.5, maxIters=500, confidence=0.99)
        if H is None or inl is None or inl.sum() < 10:
            return None
        return H

    @staticmethod
    def _refine(cur, nb, H: np.ndarray, object_now: np.ndarray | None, object_there: np.ndarray | None) -> np.ndarray:
        """Sub-pixel alignment: ECC (homography) on the background, started from the feature
        homography H (neighbour -> current). Features at proxy resolution leave a pixel or so of
        error, which at a background edge looks like background texture seen through the object.

        object_now: the object in the current frame; object_there: where it is in the neighbour,
        both in current-frame coordinates (boolean, proxy size). Both are left out of the fit.
        The refinement is kept only where it fits the background better than H.
        """
        a = cur[1].astype(np.float32) / 255.0
        b = nb[1].astype(np.float32) / 255.0
        h, w = a.shape
        obj = np.zeros((h, w), bool)
        for m in (object_now, object_there):
            if m is not None:
                obj |= m
        keep_cur = (~obj).astype(np.uint8)
        # the neighbour's own mask, in its coordinates: current-frame mask pulled back through H
        keep_nb = (cv2.warpPerspective(obj.astype(np.uint8), H, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=0) == 0).astype(np.uint8)
        # ECC warps the current frame's coordinates into the neighbour's; on large proxies it runs
        # at about half size (the sub-pixel fit scales up, at a quarter of the cost)
        if min(h, w) >= 200:
            size = (round(w / 2), round(h / 2))
            S = np.diag([size[0] / w, size[1] / h, 1.0])
            a_s, b_s = (cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in (a, b))
            km_a, km_b = (cv2.resize(x, size, interpolation=cv2.INTER_NEAREST) for x in (keep_cur, keep_nb))
        else:
            S = np.eye(3)
            a_s, b_s, km_a, km_b = a, b, keep_cur, keep_nb
        W = (S @ np.linalg.inv(H) @ np.linalg.inv(S)).astype(np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 1e-5)
        try:
            _, W = cv2.findTransformECCWithMask(a_s, b_s, km_a, km_b, W, cv2.MOTION_HOMOGRAPHY, criteria, 3)
            W = np.linalg.inv(S) @ W.astype(np.float64) @ S
            if not np.isfinite(W).all() or abs(np.linalg.det(W)) < 1e-6:
                return H
            refined = np.linalg.inv(W)
        except (cv2.error, np.linalg.LinAlgError):
            return H

        def warp(img, M):
            return cv2.warpPerspective(img, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                       borderValue=0)
        ones = np.ones((h, w), np.float32)
        fit = (keep_cur > 0) & (warp(ones, H) > 0.999) & (warp(ones, refined) > 0.999)  # valid under both
        if fit.sum() < 50:
            return H

        def error(M):
            return float(np.abs(warp(b, M) - a)[fit].mean())
        return refined if error(refined) < error(H) else H

    @staticmethod
    def _prefer_identity(cur, nb, H: np.ndarray, object_mask: np.ndarray | None) -> np.ndarray:
        """The identity where it fits the background as well as H: a locked-off camera over a periodic
        texture (tiles, a fence) also fits a shift by one period, which would put the object's own
        pixels among the 'revealed' background."""
        a, b = cur[0], nb[0]
        h, w = a.shape[:2]
        keep = np.ones((h, w), bool) if object_mask is None else ~object_mask
        warped = cv2.warpPerspective(b, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        inside = cv2.warpPerspective(np.ones((h, w), np.float32), H, (w, h)) > 0.999
        fit = keep & inside
        if fit.sum() < 50:
            return H
        moved = float(np.abs(warped - a)[fit].mean())
        still = float(np.abs(b - a)[fit].mean())
        return np.eye(3) if still <= 1.1 * moved + 1e-4 else H

    @staticmethod
    def _translation(cur, nb, object_mask: np.ndarray | None) -> np.ndarray:
        """Fallback alignment (too few features): a global shift fitted by ECC on the background
        (coarse to fine, the object masked out of the current frame)."""
        a = cur[1].astype(np.float32) / 255.0
        b = nb[1].astype(np.float32) / 255.0
        keep = np.ones(a.shape, np.uint8) if object_mask is None else (~object_mask).astype(np.uint8)
        warp = np.eye(2, 3, dtype=np.float32)
        levels = [2, 1] if min(a.shape) >= 200 else [1]
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
        for lv in levels:
            size = (max(8, a.shape[1] // lv), max(8, a.shape[0] // lv))
            sa, sb = cv2.resize(a, size, interpolation=cv2.INTER_AREA), cv2.resize(b, size, interpolation=cv2.INTER_AREA)
            sm = cv2.resize(keep, size, interpolation=cv2.INTER_NEAREST)
            w = warp.copy()
            w[:, 2] /= lv
            try:
                _, w = cv2.findTransformECC(sa, sb, w, cv2.MOTION_TRANSLATION, criteria, sm, 3)
            except cv2.error:
                continue
            warp = w.copy()
            warp[:, 2] *= lv
        # ECC maps current -> neighbour coordinates; the plate wants neighbour -> current
        return np.array([[1, 0, -warp[0, 2]], [0, 1, -warp[1, 2]], [0, 0, 1]], np.float64)

    def estimate(self, frame: int, linear: np.ndarray, object_mask: np.ndarray | None = None,
                 velocity: tuple[float, float] | None = None) -> Plate | None:
        """Plate at `frame` (proxy resolution); None when the shot has no usable neighbours.

        `object_mask` (proxy resolution, generously dilated) is where the object is now;
        `velocity` its motion against the background in proxy pixels per frame. A
        neighbour's sample counts only where the object, moved by velocity x offset, has
        uncovered the background (without a velocity: outside the mask only).
        """
        cur = self._get(frame, linear)
        h, w = self.shape
        valids, samples = [], []
        for f in self.neighbours(frame):
            nb = self._get(f)
            there = object_mask
            if object_mask is not None and velocity is not None:
                d = f - frame
                M = np.float32([[1, 0, velocity[0] * d], [0, 1, velocity[1] * d]])
                there = cv2.warpAffine(object_mask.astype(np.uint8), M, (w, h), flags=cv2.INTER_NEAREST) > 0
            # the object in either frame is no background to align on
            both = object_mask if there is None or object_mask is None else object_mask | there
            H = self._align(frame, f, cur, nb, object_mask, there, both)
            warped = cv2.warpPerspective(nb[0], H, (w, h), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
            ones = cv2.warpPerspective(np.ones((h, w), np.float32), H, (w, h), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            ok = ones > 0.999
            if ok.mean() < 0.3:
                continue
            revealed = ok & ~there if there is not None else ok
            # reject a misalignment: the background away from the object must match
            bgm = ok if object_mask is None else ok & ~object_mask
            if bgm.sum() > 50:
                err = np.median(np.abs(warped[bgm] - cur[0][bgm]))
                ref = np.median(np.abs(cur[0][bgm] - np.median(cur[0][bgm], axis=0))) + 1e-4
                if err > 0.5 * ref and err > 0.02:
                    continue
            valids.append(revealed)
            samples.append(np.where(revealed[..., None], warped, np.nan).astype(np.float32))
        if len(valids) < 2:
            return None
        stack = np.stack(samples)  # (n, h, w, 3): where the object uncovered the background, NaN elsewhere
        with np.errstate(all="ignore"):
            bg = _nanmedian0(stack)
            spread = _nanmedian0(np.abs(stack - bg[None])).max(axis=2)
        valid = np.sum(valids, axis=0)
        bg = np.where(np.isfinite(bg), bg, cur[0]).astype(np.float32)
        spread = np.where(np.isfinite(spread), spread, 1.0).astype(np.float32)
        diff = np.linalg.norm(cur[0] - bg, axis=2)
        away = valid >= 1
        if object_mask is not None:
            away &= ~object_mask
        noise = float(1.4826 * np.median(diff[away])) if away.sum() > 50 else 0.01
        return Plate(bg, valid, spread, max(noise, NOISE_FLOOR))


def _nanmedian0(x: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN (NaN where all are NaN); fast for a few samples."""
    srt = np.sort(x, axis=0)  # NaN sort last
    n = np.sum(~np.isnan(x), axis=0)
    lo = np.clip((n - 1) // 2, 0, x.shape[0] - 1)
    hi = np.clip(n // 2, 0, x.shape[0] - 1)
    a = np.take_along_axis(srt, lo[None], axis=0)[0]
    b = np.take_along_axis(srt, hi[None], axis=0)[0]
    out = 0.5 * (a + b)
    return np.where(n > 0, out, np.nan).astype(np.float32)
