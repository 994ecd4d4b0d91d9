"""Training samples (`TrainSample`) and the synthetic ones rendered from `mam2_server.synth` clips.

A sample is one of four kinds (paper sec. 3.2 and A.3), the codes the losses use:

* "IM": one frame with its exact alpha (image matting);
* "VM": a short clip with alpha per frame (video matting);
* "VOS": a short clip with only a binary mask per frame (video segmentation);
* "IS": one frame with only a binary mask (image segmentation).

Real datasets become TrainSamples in `mam2_server.train.augment`; the synthetic clips here
(exact alpha, no downloads) remain a data kind for tests and smoke runs.

Frames are rendered in scene-linear light, sRGB-encoded (`SynthClip.display`, what the
engines hand the tracker), cropped to a random window between square and the full frame
width, and resized to the model's square input with the tracker's own resize (bilinear,
antialiased), so training sees what inference sees. Sample i of a dataset is a pure
function of (seed, i): a resumed run sees the same data stream.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mam2_server.synth import KINDS, make_clip
from mam2_server.train.losses import SAMPLE_KINDS, trimap_from_alpha

__all__ = ["DEFAULT_RATIOS", "KIND_CODES", "SyntheticMattingData", "TrainSample", "box_from_mask"]

DEFAULT_RATIOS = {"IM": 0.3, "VM": 0.3, "VOS": 0.4}
# the paper's data types (A.3) -> the sample kinds the losses know
KIND_CODES = {"image_seg": "IS", "image_matting": "IM", "video_seg": "VOS", "video_matting": "VM"}


@dataclass
class TrainSample:
    """One training sample at the model's input size S (T frames; T = 1 for IM)."""

    kind: str  # "IM" / "VM" / "VOS" / "IS"
    images: torch.Tensor  # [T, 3, S, S] display-referred RGB in [0, 1]
    mask: torch.Tensor  # [T, 1, S, S] binary object mask (alpha > 0.5)
    alpha: torch.Tensor | None  # [T, 1, S, S] in [0, 1]; None for VOS / IS (no matte annotation)
    trimap: torch.Tensor | None  # [T, S, S] classes 0 bg / 1 unknown / 2 fg; None for VOS / IS
    box: torch.Tensor  # [4] x0, y0, x1, y1 of the first frame's object in model pixels (0..S)

    def _map(self, fn) -> TrainSample:
        move = (lambda t: None if t is None else fn(t))
        return TrainSample(self.kind, move(self.images), move(self.mask), move(self.alpha), move(self.trimap),
                           move(self.box))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TrainSample:
        """On `device`; non_blocking: asynchronous copies from pinned memory (`pin_memory`), else as `Tensor.to`."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> TrainSample:
        """In page-locked memory (CUDA only); a DataLoader with pin_memory=True calls it in its pinning thread."""
        return self._map(lambda t: t.pin_memory())


def box_from_mask(mask: torch.Tensor, rng: np.random.Generator, size: int, jitter: float = 0.02) -> torch.Tensor:
    """The box prompt [4] (x0, y0, x1, y1 pixel edges) around mask [S, S] > 0.5, jittered by
    `jitter` x S per edge (a user's box is never exact) and clamped to the frame."""
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    if len(xs) == 0:
        box = torch.tensor([0.0, 0.0, float(size), float(size)])
    else:
        box = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    box += torch.from_numpy(rng.normal(0, jitter * size, 4).astype(np.float32))
    return box.clamp(0, size)


class SyntheticMattingData:
    """Indexable stream of TrainSamples mixed by `ratios` ({"IM": p, "VM": p, "VOS": p})."""

    def __init__(self, *, image_size: int, frames: int = 3, ratios: Mapping[str, float] = DEFAULT_RATIOS,
                 seed: int = 0, kinds: tuple[str, ...] = KINDS, trimap_kernel: tuple[int, int] | None = None,
                 render_height: int | None = None) -> None:
        unknown = sorted(set(ratios) - set(SAMPLE_KINDS))
        if unknown:
            raise ValueError(f"unknown sample kind(s) {unknown}; known: {', '.join(SAMPLE_KINDS)}")
        if frames < 1:
            raise ValueError(f"frames must be at least 1, got {frames}")
        total = float(sum(ratios.values()))
        if total <= 0 or any(v < 0 for v in ratios.values()):
            raise ValueError(f"sample ratios must be >= 0 with a positive sum, got {dict(ratios)}")
        self.image_size = image_size
        self.frames = frames
        self.kinds = tuple(ratios)
        self.probs = np.array([ratios[k] / total for k in self.kinds])
        self.seed = seed
        self.fg_kinds = kinds
        # unknown band ~ 1-6 % of the frame side (MEMatte: 1-29 px at 640)
        self.trimap_kernel = trimap_kernel or (max(3, image_size // 64), max(5, image_size // 16))
        self.render_height = render_height or max(64, image_size)

    def __getitem__(self, index: int) -> TrainSample:
        rng = np.random.default_rng([self.seed, index])
        kind = self.kinds[int(rng.choice(len(self.kinds), p=self.probs))]
        return self.render(kind, rng, 1 if kind in ("IM", "IS") else self.frames)

    def render(self, kind: str, rng: np.random.Generator, frames: int) -> TrainSample:
        """A `kind` sample of `frames` frames drawn with `rng` (what the training mix calls)."""
        for attempt in range(8):  # a few objects leave the crop; draw again
            sample = self._render(rng, kind, frames, clip_seed=int(rng.integers(1 << 30)))
            if sample is not None:
                return sample
        raise RuntimeError(f"synthetic {kind} sample: no visible object after 8 draws")

    def batch(self, step: int, size: int) -> list[TrainSample]:
        """The `size` samples of training step `step` (deterministic)."""
        return [self[step * size + i] for i in range(size)]

    def _render(self, rng: np.random.Generator, kind: str, n: int, clip_seed: int) -> TrainSample | None:
        h = self.render_height
        w = int(h * rng.uniform(1.0, 16 / 9))
        clip = make_clip(str(rng.choice(self.fg_kinds)), num_frames=n, width=w, height=h, seed=clip_seed,
                         camera=str(rng.choice(["moving", "locked"])))
        display = np.stack([clip.display(f) for f in clip.frames])  # (T, h, w, 3) sRGB in [0, 1]
        alpha = np.stack([clip.alpha(f) for f in clip.frames])  # (T, h, w)
        # crop a window between square and full width, centred near the first frame's object
        cw = int(rng.uniform(h, w + 1))
        cols = np.nonzero(alpha[0].max(axis=0) > 0.5)[0]
        centre = cols.mean() if len(cols) else w / 2
        x0 = int(np.clip(centre - cw / 2 + rng.uniform(-0.25, 0.25) * cw, 0, w - cw))
        images = self._resize(torch.from_numpy(display[:, :, x0:x0 + cw]).permute(0, 3, 1, 2))
        alpha_t = self._resize(torch.from_numpy(alpha[:, None, :, x0:x0 + cw])).clamp(0, 1)
        mask = (alpha_t > 0.5).float()
        if int(mask[0, 0].sum()) < 4:
            return None
        box = box_from_mask(mask[0, 0], rng, self.image_size)
        if kind in ("VOS", "IS"):
            return TrainSample(kind, images, mask, None, None, box)
        gen = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
        trimap = trimap_from_alpha(alpha_t, self.trimap_kernel, generator=gen)
        return TrainSample(kind, images, mask, alpha_t, trimap, box)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """[T, C, h, w] float -> [T, C, S, S], as `StreamingTracker._features` resizes frames."""
        s = self.image_size
        return F.interpolate(x.float(), size=(s, s), mode="bilinear", align_corners=False, antialias=True)
