"""One interface for every engine: frames + prompts in, alpha per frame out."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Collection, Iterable, Iterator, Mapping

import numpy as np

from mam2_server.engines.plan import Pass, pass_keyframes, plan_passes
from mam2_server.prompts import Prompt, keyframes
from mam2_server.stages.base import FrameImages, FrameSource, Matter, Segmenter, Trimapper


class EngineError(RuntimeError):
    """An engine cannot run as configured (missing checkpoint, unknown name, ...)."""


@dataclass
class FrameResult:
    frame: int
    alpha: np.ndarray  # (H, W) float32 in [0, 1]
    mask: np.ndarray | None = None  # (H, W) float32 in [0, 1]
    trimap: np.ndarray | None = None  # (H, W) float32, 0 / 0.5 / 1


@dataclass(frozen=True)
class EngineConfig:
    name: str = "classic"
    checkpoint: str | None = None  # weights for the model engines (mam2, hybrid)
    device: str | None = None  # "cpu", "cuda", "cuda:1"; None = CUDA when present, else CPU


class Engine(ABC):
    name: ClassVar[str]
    # Re-tracking dependency model, see engines.plan: True when a forward pass uses every
    # earlier keyframe, so an edit changes every later frame of the shot.
    chained: ClassVar[bool] = False
    # True when a forward pass continues the state the previous forward pass left (a memory bank),
    # so it can only be computed after it; False when a pass gets what it uses of earlier keyframes
    # from their prompts alone and can run on its own (a farm may split the shot at keyframes).
    passes_continue: ClassVar[bool] = False
    # True when the engine runs a network that wants a GPU: a cluster or farm gives each of its tasks one
    # by default, and `--device cuda` means something to it. Read from the class, without building it.
    needs_gpu: ClassVar[bool] = False
    # How many frames on either side a frame's result may read beyond its own pass (a clean plate
    # from neighbouring frames): a server's cache key must cover their pixels too.
    neighbour_reach: ClassVar[int] = 0

    @abstractmethod
    def run_pass(self, source: FrameSource, plan: Pass, prompts: Mapping[int, Prompt]) -> Iterator[FrameResult]:
        """Yield one result per frame of `plan`, in its order. `prompts` holds every keyframe."""

    def run(self, source: FrameSource, prompts: Iterable[Prompt],
            only: Collection[int] | None = None) -> Iterator[FrameResult]:
        """Matte the shot (or just the frames in `only`), pass by pass, frames streamed as they finish."""
        keys = keyframes(prompts)
        for prompt in keys.values():
            prompt.validate(source.width, source.height)
        for plan in plan_passes(source.frames, list(keys)):
            if only is not None and not any(f in only for f in plan.frames):
                continue
            for result in self.run_pass(source, plan, keys):
                if only is None or result.frame in only:
                    yield result


class StagedEngine(Engine):
    """An engine made of a segmenter, a trimapper and a matter run frame by frame."""

    def __init__(self, *, segmenter: Segmenter, trimapper: Trimapper, matter: Matter) -> None:
        self.segmenter = segmenter
        self.trimapper = trimapper
        self.matter = matter

    def run_pass(self, source: FrameSource, plan: Pass, prompts: Mapping[int, Prompt]) -> Iterator[FrameResult]:
        used = {k: prompts[k] for k in pass_keyframes(plan, list(prompts), chained=self.chained)}
        for stage in (self.segmenter, self.trimapper, self.matter):
            stage.begin_pass(source, plan, used)
        for frame in plan.frames:
            images = FrameImages(frame, source.linear(frame), source.display(frame))
            seg = self.segmenter.process(images)
            trimap = self.trimapper.process(images, seg)
            alpha = self.matter.process(images, seg, trimap)
            yield FrameResult(frame, np.clip(alpha, 0.0, 1.0).astype(np.float32), seg.mask, trimap)
        self.matter.end_pass()
