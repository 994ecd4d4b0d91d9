"""The paper's four-way training mix (A.2, A.3, Table 7): which data type a step trains on, and its batch.

Every step (on every rank) first draws one data type with the type's probability, then
builds that type's batch: image types 4 images of 1 frame, video types 1 clip of 4 frames
(Table 7). Within a type, the datasets given for it are concatenated (an item is drawn
uniformly from all of them, so larger datasets are drawn more often). Stage 2 (eq. 2)
draws image matting only.

The batch of (step, rank) is a pure function of (seed, step, rank): a resumed run sees
the same data stream, and ranks draw different batches. `MixedData.batch` is what the
training loop (or a DataLoader worker, see `StepBatches`) calls.

`synthetic` serves a type from `mam2_server.synth` clips (no downloads), for tests and
smoke runs: ``--data synthetic`` for all four types, or ``--data video_seg=synthetic``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

from mam2_server.data import DATA_KINDS, Backgrounds, DatasetLayoutError, open_dataset
from mam2_server.train.augment import AugmentConfig, make_sample
from mam2_server.train.data import KIND_CODES, SyntheticMattingData, TrainSample

__all__ = ["KindSettings", "PAPER_MIX", "DataSpec", "MixedData", "StepBatches", "parse_kind_values"]

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class KindSettings:
    prob: float
    batch: int  # samples per step
    frames: int  # frames per sample


# Table 7: sample probability, batch size, frames
PAPER_MIX = {
    "image_seg": KindSettings(0.25, 4, 1),
    "image_matting": KindSettings(0.25, 4, 1),
    "video_seg": KindSettings(0.25, 1, 4),
    "video_matting": KindSettings(0.25, 1, 4),
}


def parse_kind_values(values: Sequence[str], what: str, cast=str, *, multi: bool = False) -> dict:
    """["kind=v", ...] -> {kind: v}; with multi, "kind=a,b" -> [a, b] and repeats extend the list."""
    out: dict = {}
    for text in values:
        kind, sep, value = text.partition("=")
        kind = kind.strip()
        if not sep or kind not in DATA_KINDS or not value.strip():
            raise ValueError(f"{what} {text!r}: expected KIND=VALUE with KIND one of {', '.join(DATA_KINDS)}")
        try:
            parsed = [cast(v.strip()) for v in value.split(",") if v.strip()] if multi else cast(value.strip())
        except ValueError:
            raise ValueError(f"{what} {text!r}: bad value {value!r}") from None
        if multi:
            out.setdefault(kind, []).extend(parsed)
        else:
            out[kind] = parsed
    return out


@dataclass
class DataSpec:
    """What `mam2 train --data ...` asks for."""

    sources: dict[str, list[str]]  # kind -> folders (or "synthetic")
    settings: dict[str, KindSettings] = field(default_factory=lambda: dict(PAPER_MIX))
    backgrounds: str | None = None

    @classmethod
    def from_args(cls, data: Sequence[str], *, probs: Sequence[str] = (), batches: Sequence[str] = (),
                  frames: Sequence[str] = (), backgrounds: str | None = None) -> "DataSpec":
        plain = [d for d in data if "=" not in d]
        for d in plain:
            if d != SYNTHETIC:
                raise ValueError(f"--data {d!r}: expected KIND=DIR[,DIR] (KIND one of {', '.join(DATA_KINDS)}) "
                                 f"or {SYNTHETIC!r}")
        sources = parse_kind_values([d for d in data if "=" in d], "--data", multi=True)
        if plain or not data:
            for kind in DATA_KINDS:
                sources.setdefault(kind, [SYNTHETIC])
        settings = dict(PAPER_MIX)
        for kind, p in parse_kind_values(probs, "--prob", float).items():
            settings[kind] = replace(settings[kind], prob=p)
        for kind, b in parse_kind_values(batches, "--batch", int).items():
            settings[kind] = replace(settings[kind], batch=b)
        for kind, f in parse_kind_values(frames, "--frames", int).items():
            settings[kind] = replace(settings[kind], frames=f)
        for kind, s in settings.items():
            if s.prob < 0 or s.batch < 1 or s.frames < 1:
                raise ValueError(f"{kind}: probability must be >= 0, batch and frames >= 1 (got {s})")
        return cls(sources, settings, backgrounds)


class _Source:
    """All the datasets of one kind, read as one."""

    def __init__(self, kind: str, readers: list) -> None:
        self.kind, self.readers = kind, readers
        self.offsets = np.cumsum([0] + [len(r) for r in readers])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def draw(self, rng: np.random.Generator, frames: int):
        index = int(rng.integers(len(self)))
        i = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.readers[i].read(index - int(self.offsets[i]), frames, rng)


class MixedData:
    """The training stream of `spec` for `stage` at the model's input size."""

    def __init__(self, spec: DataSpec, *, image_size: int, stage: int, seed: int = 0,
                 augment: AugmentConfig = AugmentConfig(), max_draws: int = 20) -> None:
        self.image_size, self.seed, self.augment, self.max_draws = image_size, seed, augment, max_draws
        kinds = ["image_matting"] if stage == 2 else [k for k in DATA_KINDS if spec.settings[k].prob > 0]
        missing = [k for k in kinds if k not in spec.sources]
        if stage == 2 and missing:
            raise ValueError("stage 2 trains the matter on image matting data only (eq. 2): give "
                             "--data image_matting=DIR (or --data synthetic)")
        if missing:
            log.warning("no --data for %s: the mix draws from %s only", ", ".join(missing),
                        ", ".join(k for k in kinds if k not in missing))
        self.kinds = [k for k in kinds if k in spec.sources]
        if not self.kinds:
            raise ValueError("no data to train on: give --data KIND=DIR (or --data synthetic)")
        self.settings = {k: spec.settings[k] for k in self.kinds}
        total = sum(self.settings[k].prob for k in self.kinds)
        if total <= 0:
            raise ValueError("the sample probabilities of the given data kinds sum to 0")
        self.probs = np.array([self.settings[k].prob / total for k in self.kinds])
        self.backgrounds = Backgrounds(spec.backgrounds) if spec.backgrounds else None
        self.sources: dict[str, _Source | None] = {}
        self.synthetic = SyntheticMattingData(image_size=image_size, seed=seed,
                                              render_height=max(64, min(image_size, 512)))
        for kind in self.kinds:
            dirs = spec.sources[kind]
            readers = [open_dataset(kind, d) for d in dirs if d != SYNTHETIC]
            if SYNTHETIC in dirs and readers:
                raise ValueError(f"--data {kind}: use either folders or {SYNTHETIC!r}, not both")
            for r in readers:
                if getattr(r, "needs_backgrounds", False) and self.backgrounds is None:
                    raise DatasetLayoutError(f"{kind} data in {r.root} ({r.layout}) are foregrounds composited over "
                                             "backgrounds: give --backgrounds DIR (e.g. BG-20k/train)")
                log.info("%s: %s, %d items, %s", kind, r.root, len(r), r.layout)
            self.sources[kind] = _Source(kind, readers) if readers else None

    def describe(self) -> list[str]:
        lines = []
        for kind, p in zip(self.kinds, self.probs):
            s, src = self.settings[kind], self.sources[kind]
            what = SYNTHETIC if src is None else ", ".join(f"{r.root} ({r.layout}, {len(r)})" for r in src.readers)
            lines.append(f"{kind}: p={p:.3f} batch={s.batch} frames={s.frames} <- {what}")
        return lines

    def _rng(self, step: int, rank: int) -> tuple[str, np.random.Generator]:
        rng = np.random.default_rng([self.seed, step, rank])
        return self.kinds[int(rng.choice(len(self.kinds), p=self.probs))], rng

    def kind_of(self, step: int, rank: int = 0) -> str:
        """The data type step `step` trains on at `rank` (without building the batch)."""
        return self._rng(step, rank)[0]

    def batch(self, step: int, rank: int = 0) -> tuple[str, list[TrainSample]]:
        """(data kind, samples) of step `step` on rank `rank`."""
        kind, rng = self._rng(step, rank)
        s = self.settings[kind]
        return kind, [self._sample(kind, s.frames, rng) for _ in range(s.batch)]

    def _sample(self, kind: str, frames: int, rng: np.random.Generator) -> TrainSample:
        source = self.sources[kind]
        if source is None:
            return self.synthetic.render(KIND_CODES[kind], rng, frames)
        for _ in range(self.max_draws):  # items without a visible object are drawn again
            raw = source.draw(rng, frames)
            if raw is not None:
                sample = make_sample(raw, rng, self.image_size, backgrounds=self.backgrounds, cfg=self.augment)
                if sample is not None:
                    return sample
        raise RuntimeError(f"{kind}: {self.max_draws} draws in a row gave no visible object; are the masks / "
                           f"alphas in {', '.join(str(r.root) for r in source.readers)} empty?")


class StepBatches(torch.utils.data.Dataset):
    """Map-style view for a DataLoader: item `i` is the batch of micro-step `i` on `rank` (workers build
    batches ahead of the loop; the order and content do not depend on the number of workers)."""

    def __init__(self, data: MixedData, rank: int) -> None:
        self.data, self.rank = data, rank

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, index: int) -> tuple[str, list[TrainSample]]:
        return self.data.batch(int(index), self.rank)
