"""`mam2`: the MAM2 network (SAM2 + PDD/MSS trimaps + MEMatte-style matter), streamed frame by frame.

Needs `--checkpoint`: a MAM2 `.safetensors` (everything trained) or an official SAM2.1
`.pt` (masks and trimap head from SAM2 / freshly initialised, matter *untrained*: a
warning says so). Chained: keyframes stay in the memory bank as conditioning frames
for the rest of the shot; the backward pass before the first keyframe uses the first
keyframe only (see `engines.plan`).

Consecutive forward passes continue one memory bank (no reset at a keyframe); the
bank at the end of each forward pass is kept, so re-running a later pass after an
edit (re-tracking) starts from the same memory as a full run did. A pass whose
predecessor never ran in this engine is rebuilt from the earlier keyframes alone.

On a CUDA device a pass reads one frame ahead: frame i + 1's upload and image encoder run on a
side stream while frame i decodes (`StreamingTracker.prefetch`). The speed options
(`model.runtime.CudaOptions`) come from the ``MAM2_CUDA`` environment variable, e.g.
``MAM2_CUDA=graphs=off,overlap=off``; they change nothing on the CPU.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections import OrderedDict
from typing import Iterator, Mapping

import numpy as np

from mam2_server.engines.base import Engine, EngineConfig, EngineError, FrameResult
from mam2_server.engines.plan import BACKWARD, Pass
from mam2_server.prompts import Prompt
from mam2_server.stages.base import FrameSource

log = logging.getLogger(__name__)

MAX_SNAPSHOTS = 32


class MAM2Engine(Engine):
    name = "mam2"
    chained = True
    passes_continue = True  # each forward pass continues the previous one's memory bank
    needs_gpu = True

    def __init__(self, model, *, cuda=None, encoder_stream=None) -> None:
        """cuda: `CudaOptions` (default all on); encoder_stream: see `StreamingTracker`."""
        from mam2_server.model.tracker import StreamingTracker

        self.model = model
        self.tracker = StreamingTracker(model, cuda=cuda, encoder_stream=encoder_stream)
        # (source id, keyframe) -> (prompts the bank depends on, bank at the end of the previous pass)
        self._snapshots: OrderedDict = OrderedDict()

    def run_pass(self, source: FrameSource, plan: Pass, prompts: Mapping[int, Prompt]) -> Iterator[FrameResult]:
        frames = list(source.frames)
        index = {f: i for i, f in enumerate(frames)}
        tracker = self.tracker
        if plan.direction == BACKWARD:  # its frames start after the keyframe, which the forward pass yields
            state = tracker.new_shot(source.width, source.height, num_frames=len(frames))
            tracker.add_keyframe(state, index[plan.keyframe], source.display(plan.keyframe),
                                 prompts[plan.keyframe], reverse=True)
        else:
            state = self._forward_state(source, plan, prompts, index)
        for frame, image in tracker.prefetch(plan.frames, source.display):
            if frame == plan.keyframe:
                out = tracker.add_keyframe(state, index[frame], image, prompts[frame])
            else:
                out = tracker.track(state, index[frame], image)
            yield self._result(frame, out)
        if plan.direction != BACKWARD:
            later = [k for k in sorted(prompts) if k > plan.keyframe]
            if later:
                deps = tuple(prompts[k] for k in sorted(prompts) if k <= plan.keyframe)
                self._remember((id(source), later[0]), deps, state)

    def _forward_state(self, source, plan, prompts, index):
        earlier = [k for k in sorted(prompts) if k < plan.keyframe]
        deps = tuple(prompts[k] for k in earlier)
        snap = self._snapshots.get((id(source), plan.keyframe))
        if snap is not None and len(snap[0]) == len(deps) and all(a.same_as(b) for a, b in zip(snap[0], deps)):
            self._snapshots.move_to_end((id(source), plan.keyframe))
            return _copy_state(snap[1])
        state = self.tracker.new_shot(source.width, source.height, num_frames=len(source.frames))
        for k in earlier:  # rebuild the conditioning frames (chained keyframes)
            self.tracker.add_keyframe(state, index[k], source.display(k), prompts[k])
        return state

    def _remember(self, key, deps, state) -> None:
        self._snapshots[key] = (deps, _copy_state(state))
        self._snapshots.move_to_end(key)
        while len(self._snapshots) > MAX_SNAPSHOTS:
            self._snapshots.popitem(last=False)

    @staticmethod
    def _result(frame: int, out) -> FrameResult:
        alpha = out.alpha if out.alpha is not None else out.mask
        return FrameResult(frame, np.clip(alpha, 0.0, 1.0).astype(np.float32), out.mask, out.trimap)


def _copy_state(state):
    """A bank copy that later tracking cannot mutate (tensors are shared, never written in place)."""
    return dataclasses.replace(
        state, cond={i: dataclasses.replace(m) for i, m in state.cond.items()},
        recent=OrderedDict((i, dataclasses.replace(m)) for i, m in state.recent.items()))


def build(config: EngineConfig) -> MAM2Engine:
    try:
        from mam2_server.model.checkpoint import CheckpointError, load_model
        from mam2_server.model.runtime import ENV_VAR, CudaOptions
    except ImportError as exc:  # torch / sam2 missing
        raise EngineError(f"the mam2 engine needs torch and sam2 ({exc}); run install.py") from None
    try:
        cuda = CudaOptions.parse(os.environ.get(ENV_VAR))
    except ValueError as exc:
        raise EngineError(f"mam2: {exc}") from None
    try:
        model, report = load_model(config.checkpoint, device=config.device)
    except CheckpointError as exc:
        raise EngineError(f"mam2: {exc}") from None
    if report is not None:
        log.info("mam2: %s", report.summary())
        warnings.warn(f"mam2: {config.checkpoint} is an official SAM2.1 checkpoint: masks come from SAM2, the PDD "
                      "trimap head and the matter are untrained (random init), so trimaps and alphas are not "
                      "meaningful. Use a trained MAM2 .safetensors, or the 'hybrid' engine for SAM2 masks with "
                      "classic trimap + matte.", RuntimeWarning, stacklevel=2)
    if model.device.type == "cuda":
        log.info("mam2: CUDA options %s", cuda.describe())
    return MAM2Engine(model, cuda=cuda)
