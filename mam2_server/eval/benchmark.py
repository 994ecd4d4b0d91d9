"""Evaluation on the paper's video-matting benchmarks (Tables 2 and 3) with first-frame GT prompts.

Layouts (docs/training.md cites the sources):

* VideoMatte240K test composites as RobustVideoMatting distributes them
  (``videomatte_512x288/videomatte_motion/0000/{com,pha,fgr,bgr}/0000.png``: its
  evaluation/generate_videomatte_with_background_*.py write ``<out>/<clip>/com|pha/<t>.png``);
* YouTubeMatte (MatAnyone): ``youtubematte_512x288/youtubematte_{motion,static}/<clip>/`` with
  the harmonised input frames in ``har/`` and the alpha in ``pha/``.

A clip is any folder with ``pha/`` and an input folder (``har/`` preferred, else ``com/``,
``rgb/``, ``image/``, ``images/``); the folder given may be one clip or hold clips up to
three levels down. The engine runs on every clip, prompted on the first frame from its
ground truth (``mask``: alpha > 0.5; ``box``: that mask's bounding box; ``point``: the
mask's innermost pixel; ``box+point``), and its alpha is scored against ``pha/`` with the
RVM LR metrics of `eval.metrics` (MAD, MSE x1e3, Grad, Conn /1e3, dtSSD x1e2). Frames are
8-bit sRGB files: the engine gets them as display-referred, and linearised (sRGB curve)
as the plate.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from mam2_server.data.files import list_images, read_alpha, read_rgb, walk_dirs
from mam2_server.eval.metrics import METRICS, SequenceMetrics, format_table
from mam2_server.io.srgb import srgb_to_linear
from mam2_server.prompts import Point, Prompt

__all__ = ["PROMPT_KINDS", "BenchmarkClip", "ClipSource", "find_clips", "first_frame_prompt", "evaluate_benchmark",
           "format_benchmark"]

INPUT_DIRS = ("har", "com", "rgb", "image", "images")
PROMPT_KINDS = ("mask", "box", "point", "box+point")


class BenchmarkError(ValueError):
    """A benchmark folder without clips, or a clip whose frames and alphas do not match."""


@dataclass
class BenchmarkClip:
    name: str  # path relative to the benchmark root, e.g. youtubematte_motion/0000
    frames: list[Path]  # input frames, in order
    alphas: list[Path]  # ground-truth alphas, same names


def find_clips(root: str | Path) -> list[BenchmarkClip]:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise BenchmarkError(f"{root}: not a folder")
    clips = []
    for d in walk_dirs(root, 3):
        pha = d / "pha"
        inputs = next((d / n for n in INPUT_DIRS if (d / n).is_dir()), None)
        if not pha.is_dir() or inputs is None:
            continue
        frames, alphas = list_images(inputs), {p.stem: p for p in list_images(pha)}
        missing = [f.name for f in frames if f.stem not in alphas]
        if not frames or missing:
            raise BenchmarkError(f"{inputs}: {'no frames' if not frames else f'{len(missing)} frame(s) without an alpha'}"
                                 f" in {pha}{f' (e.g. {missing[0]})' if missing else ''}")
        name = str(d.relative_to(root)) if d != root else d.name
        clips.append(BenchmarkClip(name, frames, [alphas[f.stem] for f in frames]))
    if not clips:
        raise BenchmarkError(f"{root}: no clip folders (pha/ + one of {', '.join(d + '/' for d in INPUT_DIRS)}) at or "
                             "up to 3 levels below it")
    return clips


class ClipSource:
    """A benchmark clip as a FrameSource: 8-bit sRGB files, frames numbered 0..N-1."""

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = list(files)
        self.frames = list(range(len(self.files)))
        first = read_rgb(self.files[0])
        self.height, self.width = first.shape[:2]
        self._cached: tuple[int, np.ndarray] | None = None

    def _rgb(self, frame: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != frame:
            rgb = read_rgb(self.files[frame])
            if rgb.shape[:2] != (self.height, self.width):
                raise BenchmarkError(f"{self.files[frame]}: {rgb.shape[1]}x{rgb.shape[0]}, the clip is "
                                     f"{self.width}x{self.height}")
            self._cached = (frame, rgb)
        return self._cached[1]

    def linear(self, frame: int) -> np.ndarray:
        return srgb_to_linear(self._rgb(frame))

    def display(self, frame: int) -> np.ndarray:
        return self._rgb(frame).astype(np.float32) / 255.0


def first_frame_prompt(alpha: np.ndarray, kind: str, frame: int = 0) -> Prompt:
    """The prompt `kind` (see PROMPT_KINDS) derived from a ground-truth alpha (H, W)."""
    if kind not in PROMPT_KINDS:
        raise ValueError(f"prompt must be one of {', '.join(PROMPT_KINDS)}, got {kind!r}")
    mask = alpha > 0.5
    if not mask.any():
        mask = alpha > 0.05  # a wholly transparent object: its faint extent
    if not mask.any():
        raise BenchmarkError("the first frame's ground truth is empty: no object to prompt")
    if kind == "mask":
        return Prompt(frame=frame, mask=mask.astype(np.float32))
    ys, xs = np.nonzero(mask)
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    inner = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    point = (Point(x + 0.5, y + 0.5, 1),)
    if kind == "box":
        return Prompt(frame=frame, box=box)
    if kind == "point":
        return Prompt(frame=frame, points=point)
    return Prompt(frame=frame, box=box, points=point)


def evaluate_benchmark(root: str | Path, engine, *, prompt: str = "mask", metrics: Sequence[str] = METRICS,
                       save_dir: str | Path | None = None, clips: Sequence[BenchmarkClip] | None = None,
                       progress=None) -> dict:
    """Run `engine` on every clip of the benchmark at `root` and score it.

    Returns {"benchmark", "engine", "prompt", "metrics", "clips": {name: {"frames", "summary", "per_frame",
    "seconds"}}, "mean": {metric: mean over clips}, "conventions"}. With `save_dir`, the predicted alphas are
    also written as 8-bit PNGs in the ground truth's layout (<clip>/pha/<frame>.png)."""
    clips = list(clips) if clips is not None else find_clips(root)
    report = {"benchmark": str(root), "engine": getattr(engine, "name", type(engine).__name__), "prompt": prompt,
              "metrics": list(metrics), "clips": {}}
    for clip in clips:
        source = ClipSource(clip.frames)
        gt0 = read_alpha(clip.alphas[0])
        if gt0.shape != (source.height, source.width):
            raise BenchmarkError(f"{clip.alphas[0]}: {gt0.shape[1]}x{gt0.shape[0]}, the frames are "
                                 f"{source.width}x{source.height}")
        acc = SequenceMetrics(metrics=metrics)
        t0 = time.perf_counter()
        out_dir = Path(save_dir) / clip.name / "pha" if save_dir else None
        if out_dir:
            out_dir.mkdir(parents=True, exist_ok=True)
        seen = 0
        for result in engine.run(source, [first_frame_prompt(gt0, prompt)]):
            if result.frame != seen:
                raise BenchmarkError(f"{clip.name}: the engine returned frame {result.frame}, expected {seen}")
            gt = read_alpha(clip.alphas[result.frame])
            acc.update(result.alpha, gt)
            if out_dir:
                cv2.imwrite(str(out_dir / f"{clip.frames[result.frame].stem}.png"),
                            np.round(np.clip(result.alpha, 0, 1) * 255).astype(np.uint8))
            seen += 1
            if progress:
                progress(clip.name, seen, len(clip.frames))
        if seen != len(clip.frames):
            raise BenchmarkError(f"{clip.name}: the engine returned {seen} of {len(clip.frames)} frames")
        report["clips"][clip.name] = {"frames": seen, "summary": acc.summary(), "per_frame": acc.per_frame(),
                                      "seconds": round(time.perf_counter() - t0, 3)}
    report["mean"] = {m: float(np.mean([c["summary"][m] for c in report["clips"].values()])) for m in metrics}
    report["conventions"] = ("RVM evaluate_lr over the whole frame; per clip the mean over frames, then the mean "
                             "over clips; MAD, MSE x1e3; Grad, Conn /1e3; dtSSD x1e2 (frame 0 = 0)")
    return report


# the paper's column names (Tables 2-3)
_PAPER_NAMES = {"MAD": "MAD", "MSE": "MSE", "Grad": "GRAD", "dtSSD": "dtSSD", "Conn": "Conn"}


def format_benchmark(report: dict, *, per_clip: bool = True, precision: int = 2) -> str:
    """A table like the paper's: one row per clip (optional) and the mean, MAD / MSE / GRAD / dtSSD (/ Conn)."""
    order = [m for m in ("MAD", "MSE", "Grad", "dtSSD", "Conn") if m in report["metrics"]]
    rows = {}
    if per_clip:
        rows.update({name: {_PAPER_NAMES[m]: c["summary"][m] for m in order} for name, c in report["clips"].items()})
    label = f"{report['engine']} ({report['prompt']}), mean of {len(report['clips'])} clips"
    rows[label] = {_PAPER_NAMES[m]: report["mean"][m] for m in order}
    title = f"{report['benchmark']}: prompt on frame 0 from the ground truth ({report['prompt']})"
    return title + "\n" + format_table(rows, [_PAPER_NAMES[m] for m in order], precision=precision,
                                       name_header="clip")
