"""Evaluate a predicted alpha sequence against ground truth read from disk.

    report = evaluate_sequences("out/alpha.####.exr", "shot/alpha/alpha.####.exr")
    print(format_report(report))
    write_json(report, "out/metrics.json")

Alphas are read through `mam2_server.io` (EXR: the 'A' channel, else the first channel;
PNG/other: grey or the first channel, or the last of an RGBA/YA image whose channel names
are unknown). Metrics are those of `eval.metrics` (RVM LR conventions, whole frame).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mam2_server.eval.metrics import METRICS, SequenceMetrics, format_table
from mam2_server.io.atomic import atomic_write_bytes
from mam2_server.io.image import read_image, to_display_window
from mam2_server.io.sequence import SequencePattern

__all__ = ["EvaluationError", "read_alpha", "evaluate_sequences", "format_report", "write_json"]


class EvaluationError(ValueError):
    """Missing frames, mismatched sizes or unreadable mattes."""


def read_alpha(path: str | Path) -> np.ndarray:
    """(H, W) float32 alpha of an image file over its display window: the 'A' channel, else the first."""
    try:
        image = read_image(path)
    except FileNotFoundError:
        raise EvaluationError(f"{path}: file not found") from None
    pixels = image.pixels if image.info.data_is_display else to_display_window(image)
    channels = image.info.channels
    return np.ascontiguousarray(pixels[:, :, channels.index("A") if "A" in channels else 0], np.float32)


def _missing(pattern, frames: Sequence[int]) -> list[int]:
    return [f for f in frames if not Path(pattern.path(f)).is_file()]


def _frames_text(frames: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(str(f) for f in frames[:limit])
    return shown + (f", ... ({len(frames)} in all)" if len(frames) > limit else "")


def evaluate_sequences(pred: str, gt: str, frames: Sequence[int] | None = None, *,
                       metrics: Sequence[str] = METRICS) -> dict:
    """Per-frame and mean metrics of the `pred` alpha sequence against `gt` (frame patterns, e.g. a.####.exr).

    frames: the frames to compare (default: every ground-truth frame on disk). Every one of them
    must exist in both sequences and have the same size, else EvaluationError names the file.
    Returns {"pred", "gt", "frames", "metrics", "per_frame": {metric: [...]}, "summary": {metric: mean},
    "conventions"}.
    """
    pred_seq, gt_seq = SequencePattern(pred), SequencePattern(gt)
    if frames is None:
        frames = sorted(int(f) for f in gt_seq.existing_frames())
        if not frames:
            raise EvaluationError(f"no ground-truth frames found for {gt}")
    frames = [int(f) for f in frames]
    if not frames:
        raise EvaluationError("no frames to evaluate")
    for name, seq, pattern in (("ground truth", gt_seq, gt), ("prediction", pred_seq, pred)):
        missing = _missing(seq, frames)
        if missing:
            raise EvaluationError(f"{name} {pattern} is missing frame(s) {_frames_text(missing)} "
                                  f"(e.g. {seq.path(missing[0])})")
    acc = SequenceMetrics(metrics=metrics)
    for f in frames:
        p_path, g_path = pred_seq.path(f), gt_seq.path(f)
        p, g = read_alpha(p_path), read_alpha(g_path)
        if p.shape != g.shape:
            raise EvaluationError(f"frame {f}: {p_path} is {p.shape[1]}x{p.shape[0]} but "
                                  f"{g_path} is {g.shape[1]}x{g.shape[0]}")
        try:
            acc.update(p, g)
        except ValueError as exc:
            raise EvaluationError(f"frame {f} ({p_path}): {exc}") from None
    return {
        "pred": str(pred),
        "gt": str(gt),
        "frames": frames,
        "metrics": list(acc.metrics),
        "per_frame": acc.per_frame(),
        "summary": acc.summary(),
        "conventions": "RVM evaluate_lr: whole frame; MAD, MSE x1e3; Grad, Conn /1e3; dtSSD x1e2 "
                       "(frame 0 = 0, included in the mean)",
    }


def format_report(report: dict | Mapping[str, dict], *, per_frame: bool = False, precision: int = 3) -> str:
    """Text table. A single report gives its mean row (and per-frame rows with per_frame=True);
    a mapping name -> report gives one mean row per name (e.g. one per engine or clip)."""
    if "summary" in report and "per_frame" in report:
        rows: dict[str, Mapping[str, float]] = {}
        if per_frame:
            values = report["per_frame"]
            for i, f in enumerate(report["frames"]):
                rows[str(f)] = {m: v[i] for m, v in values.items()}
        rows["mean"] = report["summary"]
        title = f"{report['pred']}  vs  {report['gt']}  ({len(report['frames'])} frames)"
        return title + "\n" + format_table(rows, report["metrics"], precision=precision, name_header="frame")
    rows = {name: r["summary"] for name, r in report.items()}
    return format_table(rows, precision=precision)


def write_json(report: dict, path: str | Path) -> None:
    """Write the report as JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(report, indent=2, allow_nan=True) + "\n").encode())
