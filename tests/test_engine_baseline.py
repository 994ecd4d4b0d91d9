import numpy as np

from mam2_server.engines import create_engine
from mam2_server.prompts import Prompt


class TinySource:
    """Minimal FrameSource over in-memory linear frames (display = plain sRGB encode)."""

    def __init__(self, linear, first=1001):
        self._lin = [np.asarray(f, np.float32) for f in linear]
        self.frames = list(range(first, first + len(self._lin)))
        self.height, self.width = self._lin[0].shape[:2]
        self.reads = 0

    def linear(self, frame):
        self.reads += 1
        return self._lin[frame - self.frames[0]]

    def display(self, frame):
        x = np.clip(self.linear(frame), 0, 1)
        return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def disc_clip(n=4, w=96, h=64, r=14, dx=4, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    bg = 0.05 + 0.1 * ((xx // 8 + yy // 8) % 2)[..., None] * np.array([0.3, 0.6, 1.0])
    bg = bg + 0.01 * rng.standard_normal((h, w, 3))
    frames, alphas = [], []
    for i in range(n):
        cx, cy = 30 + dx * i, 32
        d = np.sqrt((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2)
        a = np.clip(r + 0.5 - d, 0, 1)
        fg = np.array([0.8, 0.3, 0.1])
        frames.append((a[..., None] * fg + (1 - a[..., None]) * bg).astype(np.float32))
        alphas.append(a.astype(np.float32))
    return frames, alphas


def test_baseline_mattes_a_disc():
    frames, alphas = disc_clip()
    src = TinySource(frames)
    eng = create_engine("baseline")
    out = list(eng.run(src, [Prompt(frame=1001, box=(12, 14, 48, 50))]))
    assert [r.frame for r in out] == src.frames
    for r, gt in zip(out, alphas):
        assert r.alpha.shape == (64, 96) and r.alpha.dtype == np.float32
        assert np.abs(r.alpha - gt).mean() < 0.05
