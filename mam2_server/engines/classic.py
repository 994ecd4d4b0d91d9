"""`classic`: weights-free video matting.

segment: GrabCut from the prompt carried by DIS optical flow, with colour models accumulated over
the pass and anchored on every keyframe up to the pass's own (`stages.segment.tracker.FlowTracker`);
trimap: an unknown band whose width follows local uncertainty, smoothed over time
(`stages.trimap.adaptive.AdaptiveTrimapper`); matte: closed-form matting at a proxy resolution,
guided-filter upsampled, where the inside of the mask stays opaque unless the background that
other frames reveal shows through it (`stages.matte.evidence.EvidenceMatter`).
"""
from __future__ import annotations

from mam2_server.engines.base import EngineConfig, StagedEngine
from mam2_server.stages.base import Matter, Trimapper
from mam2_server.stages.matte.cleanplate import REACH
from mam2_server.stages.matte.evidence import EvidenceMatter
from mam2_server.stages.segment.tracker import FlowTracker
from mam2_server.stages.trimap.adaptive import AdaptiveTrimapper


def trimap_and_matte_stages() -> tuple[Trimapper, Matter]:
    """classic's own trimap and matte stages (for engines that bring their own masks, e.g. hybrid)."""
    return AdaptiveTrimapper(), EvidenceMatter()


class ClassicEngine(StagedEngine):
    name = "classic"
    chained = True  # a pass uses the colour models of every earlier keyframe (see stages.segment.tracker)
    neighbour_reach = REACH  # the matte's clean plate reads frames on either side

    def __init__(self) -> None:
        super().__init__(segmenter=FlowTracker(), trimapper=AdaptiveTrimapper(), matter=EvidenceMatter())


def build(config: EngineConfig) -> ClassicEngine:
    return ClassicEngine()
