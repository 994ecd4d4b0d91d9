"""The training log: one CSV row per step (written by rank 0), plus checkpoint events as JSON lines.

``train_log.csv`` columns: step, stage, lr, loss (mean over every rank's batch), loss per data
type (empty when no rank drew it that step), the loss terms, grad_norm, samples and frames
in the step (all ranks), samples_per_s, frames_per_s, s_per_step, data_s (time spent
waiting for data), peak_mem_mib (CUDA: max allocated on rank 0; CPU: peak RSS of rank 0).
``train_events.jsonl``: one line per checkpoint with every rank's weights digest.
A resumed run first drops the rows and events after its checkpoint's step (a new run: all of them),
so each step appears once; both files are rewritten to a temporary name and renamed into place,
so a crash meanwhile leaves the old log whole.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Mapping

from mam2_server.data.base import DATA_KINDS
from mam2_server.io.atomic import atomic_path

__all__ = ["CSV_COLUMNS", "TrainLog"]

PARTS = ("mask/mask", "mask/dice", "mask/iou", "mask/cls", "trimap", "alpha/l1_unknown", "alpha/l1_known",
         "alpha/l2", "alpha/laplacian", "alpha/gradient", "keep_ratio")
CSV_COLUMNS = ("step", "stage", "lr", "loss", *(f"loss_{k}" for k in DATA_KINDS), *PARTS, "grad_norm", "samples",
               "frames", "samples_per_s", "frames_per_s", "s_per_step", "data_s", "peak_mem_mib")


class TrainLog:
    def __init__(self, out_dir: Path, *, resume_from_step: int | None) -> None:
        self.csv_path = out_dir / "train_log.csv"
        self.events_path = out_dir / "train_events.jsonl"
        last = resume_from_step or 0
        rows: list[dict] = []
        if self.csv_path.is_file():
            with open(self.csv_path, newline="", encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if (r.get("step") or "").isdigit() and int(r["step"]) <= last]
        with atomic_path(self.csv_path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
        if self.events_path.is_file():
            kept = [line for line in self.events_path.read_text(encoding="utf-8").splitlines() if _step(line) <= last]
            with atomic_path(self.events_path) as tmp:
                tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self._file = open(self.csv_path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=CSV_COLUMNS, extrasaction="ignore")

    def row(self, values: Mapping[str, object]) -> None:
        self._writer.writerow({k: _fmt(v) for k, v in values.items()})
        self._file.flush()

    def event(self, values: Mapping[str, object]) -> None:
        with open(self.events_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(values) + "\n")

    def close(self) -> None:
        self._file.close()


def _step(line: str) -> float:
    """An event line's step; inf (dropped) for a line that is not a whole event (one a crash cut short)."""
    try:
        step = json.loads(line).get("step")
    except (ValueError, AttributeError):
        return float("inf")
    return step if isinstance(step, int) else float("inf")


def _fmt(v: object) -> object:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v
