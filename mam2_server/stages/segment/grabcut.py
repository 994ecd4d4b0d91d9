"""Baseline segmenter: per-frame GrabCut; non-keyframes start from the previous mask's box."""
from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np

from mam2_server.engines.plan import Pass
from mam2_server.prompts import Prompt
from mam2_server.stages.base import FrameImages, FrameSource, Segmentation, Segmenter
from mam2_server.stages.segment.common import (bbox, cut_from_prompt, proxy_shape, resize, run_grabcut,
                                               to_u8)


class GrabCutSegmenter(Segmenter):
    """GrabCut from the box on the keyframe; on other frames from the previous mask's padded box.

    No motion model, no colour memory: each frame is cut on its own, which is what makes
    it a baseline.
    """

    def __init__(self, proxy_long_side: int = 480, iterations: int = 5, pad: float = 0.1) -> None:
        self.proxy_long_side = proxy_long_side
        self.iterations = iterations
        self.pad = pad
        self._prompt: Prompt | None = None
        self._source: FrameSource | None = None
        self._prev: np.ndarray | None = None  # bool mask at proxy resolution

    def begin_pass(self, source: FrameSource, plan: Pass, prompts: Mapping[int, Prompt]) -> None:
        prompt = prompts[plan.keyframe]
        self._source, self._prompt, self._prev = source, prompt, None
        if plan.frames and plan.frames[0] != plan.keyframe:
            # backward pass: the keyframe itself is not in it; cut it to start the chain
            self._prev = self._cut_keyframe(source.display(plan.keyframe))

    def _cut_keyframe(self, display: np.ndarray) -> np.ndarray:
        full = display.shape[:2]
        shape = proxy_shape(*full, self.proxy_long_side)
        bgr = to_u8(resize(display, shape))
        return cut_from_prompt(bgr, self._prompt, full, self.iterations)

    def process(self, images: FrameImages) -> Segmentation:
        full = images.display.shape[:2]
        shape = proxy_shape(*full, self.proxy_long_side)
        if images.frame == self._prompt.frame:
            mask = self._cut_keyframe(images.display)
        else:
            box = None if self._prev is None else bbox(self._prev)
            if box is None:
                mask = np.zeros(shape, bool)
            else:
                h, w = shape
                x0, y0, x1, y1 = box
                px = int(round(self.pad * (x1 - x0))) + 2
                py = int(round(self.pad * (y1 - y0))) + 2
                seeds = np.full(shape, cv2.GC_BGD, np.uint8)
                seeds[max(0, y0 - py):min(h, y1 + py), max(0, x0 - px):min(w, x1 + px)] = cv2.GC_PR_FGD
                mask = run_grabcut(to_u8(resize(images.display, shape)), seeds, self.iterations)
        self._prev = mask
        full_mask = resize(mask.astype(np.float32), full)
        return Segmentation(np.clip(full_mask, 0, 1).astype(np.float32))
