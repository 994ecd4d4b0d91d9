"""The three stages of every engine: segment -> trimap -> matte.

All images handed to stages are float32 arrays:

* ``linear``:  (H, W, 3) scene-linear RGB as read from the plate (may exceed 1);
* ``display``: (H, W, 3) display-referred (sRGB-encoded) RGB in [0, 1], what networks
  and colour-model methods see;
* ``mask``:    (H, W) object probability in [0, 1];
* ``trimap``:  (H, W) with 0 = background, 0.5 = unknown, 1 = foreground;
* ``alpha``:   (H, W) in [0, 1].

Stages are stateful over one propagation pass (see `engines.plan`): `begin_pass`
is called with the keyframe prompts the pass may use (its own, ``prompts[plan.keyframe]``,
and with a chained engine the earlier ones, `engines.plan.pass_keyframes`), then `process`
once per frame in the pass's order. A stage may read other frames of the shot through the source
(e.g. neighbours for a clean plate) but must not hold the whole shot in memory.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

import numpy as np

from mam2_server.prompts import Prompt

if TYPE_CHECKING:  # engines import stages; a runtime import here would be circular
    from mam2_server.engines.plan import Pass


class FrameSource(Protocol):
    """Random access to a shot's frames (by frame number)."""

    frames: Sequence[int]
    width: int
    height: int

    def linear(self, frame: int) -> np.ndarray:
        """(H, W, 3) float32 scene-linear RGB, NaN/inf already sanitised."""

    def display(self, frame: int) -> np.ndarray:
        """(H, W, 3) float32 display-referred RGB in [0, 1]."""


@dataclass
class FrameImages:
    frame: int
    linear: np.ndarray
    display: np.ndarray


@dataclass
class Segmentation:
    mask: np.ndarray  # (H, W) float32 in [0, 1]
    extras: dict[str, Any] = field(default_factory=dict)  # stage-specific (flow, confidence, ...)


class Segmenter(ABC):
    """Segment stage: from the keyframe's prompt, an object mask on every frame of a pass."""

    @abstractmethod
    def begin_pass(self, source: FrameSource, plan: Pass, prompts: Mapping[int, Prompt]) -> None: ...

    @abstractmethod
    def process(self, images: FrameImages) -> Segmentation: ...


class Trimapper(ABC):
    """Trimap stage: mask (+ image) -> trimap with 0 / 0.5 / 1."""

    def begin_pass(self, source: FrameSource, plan: Pass, prompts: Mapping[int, Prompt]) -> None:
        """Reset any temporal state; stateless trimappers need not override."""

    @abstractmethod
    def process(self, images: FrameImages, seg: Segmentation) -> np.ndarray: ...


class Matter(ABC):
    """Matte stage: image + trimap -> alpha."""

    def begin_pass(self, source: FrameSource, plan: Pass, prompts: Mapping[int, Prompt]) -> None:
        """Reset any temporal state; stateless matters need not override."""

    @abstractmethod
    def process(self, images: FrameImages, seg: Segmentation, trimap: np.ndarray) -> np.ndarray: ...

    def end_pass(self) -> None:
        """Called after the pass's last frame (not when the pass is abandoned half-way)."""
