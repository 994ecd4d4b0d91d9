"""Matte a shot from files to files: the library behind `mam2 matte`, `mam2 demo` and batch runs."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Collection, Sequence

from tqdm import tqdm

from mam2_server.engines import Engine
from mam2_server.io.sequence import SequencePattern
from mam2_server.io.source import SequenceSource, write_alpha_frame
from mam2_server.prompts import Prompt

log = logging.getLogger(__name__)


@dataclass
class MatteReport:
    written: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def seconds_per_frame(self) -> float:
        return self.seconds / max(1, len(self.written))


def matte_shot(source: SequenceSource, prompts: Sequence[Prompt], engine: Engine, output: str, *,
               only: Collection[int] | None = None, progress: bool = True) -> MatteReport:
    """Run `engine` over `source` and write one alpha per frame to the `output` pattern.

    Each alpha is written atomically as soon as it is finished, with the plate's
    data window, display window and metadata, so an interrupted run keeps every
    frame it completed and never leaves a partial file.
    """
    pattern = SequencePattern(output)
    pattern.path(source.frames[0]).parent.mkdir(parents=True, exist_ok=True)
    total = len(source.frames) if only is None else len(set(only) & set(source.frames))
    report = MatteReport()
    start = time.perf_counter()
    with tqdm(total=total, desc=f"{engine.name}", unit="frame", disable=not progress, leave=False) as bar:
        for result in engine.run(source, prompts, only=only):
            write_alpha_frame(pattern, result.frame, result.alpha, like=source.info(result.frame))
            report.written.append(result.frame)
            bar.update(1)
    report.seconds = time.perf_counter() - start
    log.info("wrote %d alpha frames to %s in %.1f s", len(report.written), output, report.seconds)
    return report
