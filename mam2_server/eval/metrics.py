"""Video-matting metrics: MAD, MSE, Grad, Conn, dtSSD.

The definitions follow RobustVideoMatting's `evaluation/evaluate_lr.py` (the
low-resolution script, also used by MatAnyone and the MAM2 paper):

* every metric is computed over the **whole frame** (not the unknown region);
* inputs are alpha mattes, float arrays (H, W) in [0, 1] (values outside are
  clipped; NaN/inf raise);
* scales: MAD and MSE x 1e3, Grad and Conn / 1e3, dtSSD x 1e2;
* Grad min-max normalises pred and gt first (``cv2.normalize NORM_MINMAX``, as
  the LR script does; a constant image becomes all zeros), then filters with a
  9x9 L2-normalised Gaussian-derivative kernel, sigma 1.4, replicate borders;
* Conn thresholds at 0.1 .. 1.0 (step 0.1, generated with ``np.arange`` exactly
  like the script), keeps the largest 4-connected component of
  (gt >= t) & (pred >= t), builds the round-down map and compares
  phi = 1 - d * [d >= 0.15];
* dtSSD of frame 0 is 0 and **is included** in the per-clip mean, like RVM.

Arithmetic is float32 for the images (as the script) with sums accumulated in
float64, so values agree with the reference to ~1e-6 relative.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import cv2
import numpy as np

__all__ = [
    "METRICS",
    "mad",
    "mse",
    "grad",
    "conn",
    "dtssd",
    "gauss_gradient_filters",
    "SequenceMetrics",
    "format_table",
]

METRICS: tuple[str, ...] = ("MAD", "MSE", "Grad", "Conn", "dtSSD")


def _as_alpha(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim != 2:
        raise ValueError(f"{name}: an alpha matte is a 2-D (H, W) array, got shape {a.shape}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: alpha contains NaN or inf")
    return np.clip(a, 0.0, 1.0)


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, g = _as_alpha(pred, "pred"), _as_alpha(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred is {p.shape[1]}x{p.shape[0]} but gt is {g.shape[1]}x{g.shape[0]}")
    return p, g


def mad(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute difference x 1e3."""
    p, g = _pair(pred, gt)
    return float(np.abs(p - g).mean(dtype=np.float64) * 1e3)


def mse(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean squared difference x 1e3."""
    p, g = _pair(pred, gt)
    d = p - g
    return float(np.square(d).mean(dtype=np.float64) * 1e3)


def gauss_gradient_filters(sigma: float = 1.4, epsilon: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """(filter_x, filter_y): Gaussian(row) x derivative-of-Gaussian(col), L2-normalised.

    Half size ceil(sigma * sqrt(-2 ln(sqrt(2 pi) sigma epsilon))) = 4 for sigma 1.4 -> 9x9.
    """
    half = int(np.ceil(sigma * np.sqrt(-2.0 * np.log(np.sqrt(2.0 * np.pi) * sigma * epsilon))))
    r = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-r ** 2 / (2.0 * sigma ** 2)) / (sigma * np.sqrt(2.0 * np.pi))
    dgauss = -r * gauss / sigma ** 2
    fx = np.outer(gauss, dgauss)  # [i, j] = g(i - half) * dg(j - half)
    fx /= np.sqrt((fx ** 2).sum())
    return fx, fx.T.copy()


_FILTERS = gauss_gradient_filters(1.4)


def _gradient_magnitude(img: np.ndarray) -> np.ndarray:
    fx, fy = _FILTERS
    gx = cv2.filter2D(img, -1, fx, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(img, -1, fy, borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx ** 2 + gy ** 2).astype(np.float32)


def _minmax(img: np.ndarray) -> np.ndarray:
    out = np.zeros_like(img)
    cv2.normalize(img, out, 1.0, 0.0, cv2.NORM_MINMAX)
    return out


def grad(pred: np.ndarray, gt: np.ndarray) -> float:
    """Sum of squared differences of Gaussian gradient magnitudes / 1e3 (LR: min-max normalised)."""
    p, g = _pair(pred, gt)
    gp = _gradient_magnitude(_minmax(p))
    gg = _gradient_magnitude(_minmax(g))
    return float(np.square(gg - gp).sum(dtype=np.float64) / 1e3)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest 4-connected component (first in scan order on ties)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    if n <= 1:
        return np.zeros(mask.shape, dtype=bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


def conn(pred: np.ndarray, gt: np.ndarray, step: float = 0.1) -> float:
    """Connectivity error / 1e3."""
    p, g = _pair(pred, gt)
    thresholds = np.arange(0, 1 + step, step)  # 0, 0.1, ..., 1.0 with the script's float error
    round_down = -np.ones_like(g)
    for i in range(1, len(thresholds)):
        omega = _largest_component((g >= thresholds[i]) & (p >= thresholds[i]))
        newly_out = (round_down == -1) & ~omega
        round_down[newly_out] = thresholds[i - 1]
    round_down[round_down == -1] = 1
    dg = g - round_down
    dp = p - round_down
    phi_g = 1 - dg * (dg >= 0.15)
    phi_p = 1 - dp * (dp >= 0.15)
    return float(np.abs(phi_g - phi_p).sum(dtype=np.float64) / 1e3)


def dtssd(pred_t: np.ndarray, pred_tm1: np.ndarray, gt_t: np.ndarray, gt_tm1: np.ndarray) -> float:
    """Temporal coherence error between frames t-1 and t, x 1e2."""
    p1, g1 = _pair(pred_t, gt_t)
    p0, g0 = _pair(pred_tm1, gt_tm1)
    if p0.shape != p1.shape:
        raise ValueError(f"frame size changed from {p0.shape[1]}x{p0.shape[0]} to {p1.shape[1]}x{p1.shape[0]}")
    d = (p1 - p0) - (g1 - g0)
    return float(np.sqrt(np.square(d).sum(dtype=np.float64) / g1.size) * 1e2)


_FUNCS = {"MAD": mad, "MSE": mse, "Grad": grad, "Conn": conn}


@dataclass
class SequenceMetrics:
    """Accumulates per-frame metrics over one clip; call `update` once per frame, in order.

    Only the previous frame's pred/gt are kept (for dtSSD), so memory is flat.
    `metrics` picks a subset of METRICS (Conn is the slowest, ~10 labelings a frame).
    """

    metrics: Sequence[str] = METRICS
    _values: dict[str, list[float]] = field(init=False, repr=False)
    _prev: tuple[np.ndarray, np.ndarray] | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
        self.metrics = tuple(self.metrics)
        self._values = {m: [] for m in self.metrics}

    def __len__(self) -> int:
        return len(next(iter(self._values.values()))) if self._values else 0

    def update(self, pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
        """Add the next frame; returns that frame's metrics."""
        p, g = _pair(pred, gt)
        row: dict[str, float] = {}
        for name in self.metrics:
            if name == "dtSSD":
                row[name] = 0.0 if self._prev is None else dtssd(p, self._prev[0], g, self._prev[1])
            else:
                row[name] = _FUNCS[name](p, g)
            self._values[name].append(row[name])
        self._prev = (p, g) if "dtSSD" in self.metrics else None
        return row

    def per_frame(self) -> dict[str, list[float]]:
        return {m: list(v) for m, v in self._values.items()}

    def summary(self) -> dict[str, float]:
        """Mean over frames (dtSSD's frame-0 zero included, as RVM); NaN before any frame."""
        return {m: (float(np.mean(v)) if v else float("nan")) for m, v in self._values.items()}


def format_table(rows: Mapping[str, Mapping[str, float]], columns: Iterable[str] | None = None,
                 *, precision: int = 3, name_header: str = "") -> str:
    """Aligned text table: one row per name, one column per metric (missing -> '-')."""
    if columns is None:
        seen: list[str] = []
        for metrics in rows.values():
            seen.extend(k for k in metrics if k not in seen)
        columns = [c for c in METRICS if c in seen] + [c for c in seen if c not in METRICS]
    columns = list(columns)
    header = [name_header] + columns
    body = []
    for name, metrics in rows.items():
        cells = [str(name)]
        for c in columns:
            v = metrics.get(c)
            cells.append("-" if v is None else f"{v:.{precision}f}")
        body.append(cells)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in body)
    return "\n".join(out)
