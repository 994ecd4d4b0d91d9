"""`classic`: weights-free video matting.

segment: GrabCut from the prompt carried by DIS optical flow with accumulated colour models
(`stages.segment.tracker.FlowTracker`); trimap: unknown band adapted to local uncertainty,
smoothed over time (`stages.trimap.adaptive.AdaptiveTrimapper`); matte: closed-form
matting with clean-plate and layer (difference-matting) evidence in linear light, a
see-through test that softens sure foreground, and temporal priors at a proxy resolution,
guided-filter upsampled (`stages.matte.video.VideoMatter`).
"""
from __future__ import annotations

from mam2_server.engines.base import EngineConfig, StagedEngine
from mam2_server.stages.base import Matter, Trimapper
from mam2_server.stages.matte.evidence import EvidenceMatter
from mam2_server.stages.segment.tracker import FlowTracker
from mam2_server.stages.trimap.adaptive import AdaptiveTrimapper


def trimap_and_matte_stages() -> tuple[Trimapper, Matter]:
    """classic's own trimap and matte stages (for engines that bring their own masks, e.g. hybrid)."""
    return AdaptiveTrimapper(), EvidenceMatter()


class ClassicEngine(StagedEngine):
    name = "classic"
    chained = True  # a pass uses the colour models of every earlier keyframe (see stages.segment.tracker)

    def __init__(self, **matter_options) -> None:
        super().__init__(segmenter=FlowTracker(), trimapper=AdaptiveTrimapper(), matter=EvidenceMatter(**matter_options))


def build(config: EngineConfig) -> ClassicEngine:
    return ClassicEngine()
