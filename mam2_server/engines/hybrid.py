"""`hybrid`: SAM2 masks (official SAM2.1 checkpoint, streamed) + classic trimap and matte stages.

The segment stage is the MAM2 streaming tracker with the MAM2 parts disabled (exactly
SAM2's video tracking, bounded memory); the trimap and matte stages are classic's
(`mam2_server.engines.classic.trimap_and_matte_stages`). Passes are independent: each
starts from its own keyframe and uses no other (SAM2's memory is per pass; classic, unlike
hybrid, is chained: its tracker keeps the earlier keyframes' colour models).
"""
from __future__ import annotations

from typing import Mapping

from mam2_server.engines.base import EngineConfig, EngineError, StagedEngine
from mam2_server.engines.plan import BACKWARD, Pass
from mam2_server.stages.matte.cleanplate import REACH
from mam2_server.prompts import Prompt
from mam2_server.stages.base import FrameImages, FrameSource, Segmentation, Segmenter


class SAM2Segmenter(Segmenter):
    """Streaming SAM2 masks over one pass (no trimap / matter)."""

    def __init__(self, model) -> None:
        from mam2_server.model.tracker import StreamingTracker

        self.tracker = StreamingTracker(model, run_matter=False)
        self._state = None
        self._index: dict[int, int] = {}
        self._plan: Pass | None = None
        self._prompt: Prompt | None = None

    def begin_pass(self, source: FrameSource, plan: Pass, prompts: Mapping[int, Prompt]) -> None:
        prompt = prompts[plan.keyframe]
        self._index = {f: i for i, f in enumerate(source.frames)}
        self._plan, self._prompt = plan, prompt
        self._state = self.tracker.new_shot(source.width, source.height, num_frames=len(self._index))
        if plan.direction == BACKWARD:
            self.tracker.add_keyframe(self._state, self._index[plan.keyframe], source.display(plan.keyframe),
                                      prompt, reverse=True)

    def process(self, images: FrameImages) -> Segmentation:
        if self._state is None or self._plan is None:
            raise RuntimeError("begin_pass was not called")
        i = self._index[images.frame]
        if images.frame == self._plan.keyframe and self._plan.direction != BACKWARD:
            out = self.tracker.add_keyframe(self._state, i, images.display, self._prompt)
        else:
            out = self.tracker.track(self._state, i, images.display)
        return Segmentation(mask=out.mask, extras={"object_score": out.object_score})


class HybridEngine(StagedEngine):
    name = "hybrid"
    chained = False
    neighbour_reach = REACH  # classic's matte stage: its clean plate reads frames on either side
    needs_gpu = True  # the SAM2 segmenter


def sam2_only_config(config):
    """The MAM2 config with MAM2's additions off (pure SAM2 tracking)."""
    from mam2_server.model.config import LoRAConfig, PDDConfig

    return config.replace(pdd=PDDConfig(enabled=False), lora=LoRAConfig(rank=0))


def build(config: EngineConfig) -> HybridEngine:
    try:
        from mam2_server.model.build import build_mam2, resolve_device
        from mam2_server.model.checkpoint import (CheckpointError, config_for_official, load_mam2,
                                                  load_official_sam2, where_to_put_weights)
    except ImportError as exc:
        raise EngineError(f"the hybrid engine needs torch and sam2 ({exc}); run install.py") from None
    from mam2_server.engines.classic import trimap_and_matte_stages

    try:
        if config.checkpoint is None:
            raise CheckpointError(f"no checkpoint given; {where_to_put_weights()}")
        if str(config.checkpoint).endswith(".safetensors"):  # a MAM2 file: use its SAM2 part only
            model = load_mam2(config.checkpoint, device=resolve_device(config.device))
        else:
            model = build_mam2(sam2_only_config(config_for_official(config.checkpoint)), device="cpu")
            load_official_sam2(model, config.checkpoint)
            model = model.to(resolve_device(config.device)).eval()
    except CheckpointError as exc:
        raise EngineError(f"hybrid: {exc}") from None
    trimapper, matter = trimap_and_matte_stages()
    return HybridEngine(segmenter=SAM2Segmenter(model), trimapper=trimapper, matter=matter)
