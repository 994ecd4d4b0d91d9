"""`baseline`: per-frame GrabCut -> fixed unknown band -> closed-form matting at a proxy resolution.

The reference every other engine is measured against (see `mam2 bench engines`).
"""
from __future__ import annotations

from mam2_server.engines.base import EngineConfig, StagedEngine
from mam2_server.stages.matte.closed_form import ClosedFormMatter
from mam2_server.stages.segment.grabcut import GrabCutSegmenter
from mam2_server.stages.trimap.band import FixedBandTrimapper


class BaselineEngine(StagedEngine):
    name = "baseline"
    chained = False

    def __init__(self) -> None:
        super().__init__(segmenter=GrabCutSegmenter(), trimapper=FixedBandTrimapper(),
                         matter=ClosedFormMatter())


def build(config: EngineConfig) -> BaselineEngine:
    return BaselineEngine()
