"""Matte a shot from files to files: the library behind `mam2 matte`, `mam2 demo` and batch runs."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Collection, Mapping, Sequence

from tqdm import tqdm

from mam2_server.engines import Engine
from mam2_server.io.colour import ColourConverter
from mam2_server.io.image import COLOUR_TAGS, with_colour_tag
from mam2_server.io.info import ImageInfo
from mam2_server.io.sequence import SequencePattern
from mam2_server.io.source import SequenceSource, write_alpha_frame, write_rgba_frame
from mam2_server.prompts import Prompt
from mam2_server.stages.matte.foreground import premultiplied_rgba

log = logging.getLogger(__name__)


@dataclass
class MatteReport:
    written: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def seconds_per_frame(self) -> float:
        return self.seconds / max(1, len(self.written))


def matte_shot(source: SequenceSource, prompts: Sequence[Prompt], engine: Engine, output: str, *,
               only: Collection[int] | None = None, progress: bool = True, rgba: str | None = None,
               report: MatteReport | None = None, stamp: Mapping[str, str] | None = None) -> MatteReport:
    """Run `engine` over `source` and write one alpha per frame to the `output` pattern.

    Each alpha is written atomically as soon as it is finished, with the plate's
    data window, display window and metadata, so an interrupted run keeps every
    frame it completed and never leaves a partial file. With `rgba` (a pattern), each
    frame is also written as premultiplied RGBA: the foreground's own colour, unmixed from
    the background (pymatting's estimator, in the plate's scene-linear space) times alpha.
    `report` (when given) is filled as frames are written, so a caller still has the count when a
    later frame fails. `stamp`: extra header attributes for every file written (a batch's recipe).
    """
    pattern = SequencePattern(output)
    rgba_pattern = SequencePattern(rgba) if rgba else None
    total = len(source.frames) if only is None else len(set(only) & set(source.frames))
    report = MatteReport() if report is None else report
    folders = tuple(p for p in (rgba_pattern, pattern) if p is not None)  # still to be made
    start = time.perf_counter()
    with tqdm(total=total, desc=f"{engine.name}", unit="frame", disable=not progress, leave=False) as bar:
        for result in engine.run(source, prompts, only=only):
            like = source.info(result.frame)
            if stamp:
                like = like.copy()
                like.metadata.update(stamp)
            if folders:  # made with the first frame: a run refused earlier leaves nothing
                for p in folders:
                    p.directory.mkdir(parents=True, exist_ok=True)
                folders = ()
            if rgba_pattern is not None:  # first: a frame whose alpha exists is complete (batch resume)
                plate = source.linear(result.frame)
                write_rgba_frame(rgba_pattern, result.frame, premultiplied_rgba(plate, result.alpha),
                                 rgba_info(like, source.colour))
            write_alpha_frame(pattern, result.frame, result.alpha, like=like)
            report.written.append(result.frame)
            bar.update(1)
    report.seconds = time.perf_counter() - start
    log.info("wrote %d alpha frames to %s in %.1f s", len(report.written), output, report.seconds)
    return report


def rgba_info(like: ImageInfo, colour: ColourConverter) -> ImageInfo:
    """The plate's header for its premultiplied RGBA, tagged with the space the values are in: the
    working space when the plate was decoded; the space the user named for a linear plate (a PNG read
    as linear with --colorspace still says sRGB); else the plate's own tag (the values are its own),
    or the default linear space when it has none."""
    if not colour.is_linear:
        return with_colour_tag(like.copy(), colour.linear_space)
    if colour.explicit or not any(key in like.metadata for key in COLOUR_TAGS):
        return with_colour_tag(like.copy(), colour.colorspace)
    return like
