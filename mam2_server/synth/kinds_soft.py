"""Soft and semi-transparent foregrounds: smoke, fire, glass, water, cloud."""
from __future__ import annotations

import math

import numpy as np

from mam2_server.synth.layer import Canvas, Foreground, bounds, draw_coverage
from mam2_server.synth.noise import (
    Wobble, edge_coverage, fractal_noise, pixel_grid, smooth_falloff, supersample_factor,
)


def _translate(dx: float, dy: float, x0: int, y0: int, sx: float = 1.0, sy: float = 1.0) -> np.ndarray:
    """Region pixel (i, j) -> noise coordinates ((x0 + i - dx) * sx, (y0 + j - dy) * sy)."""
    return np.array([[sx, 0, (x0 - dx) * sx], [0, sy, (y0 - dy) * sy]], np.float64)


class Smoke(Foreground):
    """A large soft plume of fractal-noise density, rising and evolving; alpha mostly 0.05-0.8."""

    def __init__(self, rng, width, height, seed):
        super().__init__(rng, width, height, seed)
        u = self.unit
        self.rx = rng.uniform(0.28, 0.38) * u
        self.ry = self.rx * rng.uniform(1.1, 1.5)
        self.cx = Wobble.random(rng, width * rng.uniform(0.4, 0.6), 0.08 * width)
        self.cy = Wobble.random(rng, height * rng.uniform(0.45, 0.55), 0.05 * height)
        self.rise = rng.uniform(0.004, 0.008) * u  # noise drift, px per frame
        self.wind = rng.uniform(-0.003, 0.003) * u
        self.density = rng.uniform(1.3, 2.0)
        grey = rng.uniform(0.3, 0.65)
        self.colour = np.array([grey, grey, grey], np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)

    def render(self, t):
        canvas = Canvas(self.width, self.height)
        cx, cy = self.cx(t), self.cy(t)
        box = canvas.region((cx - 1.6 * self.rx, cy - 1.6 * self.ry, cx + 1.6 * self.rx, cy + 1.6 * self.ry))
        if box is None:
            return canvas.result()
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        X, Y = pixel_grid(*box)
        drift = _translate(self.wind * t, -self.rise * t, x0, y0)
        shape = fractal_noise(self.seed + 1, w, h, cell=0.5 * self.rx, octaves=2, time=t, period=40, affine=drift)
        r2 = ((X - cx) / self.rx) ** 2 + ((Y - cy) / self.ry) ** 2
        env = smooth_falloff(r2 * np.clip(1.0 + 0.45 * shape, 0.6, 2.0) / 1.4)  # support r < 1.53
        n = fractal_noise(self.seed, w, h, cell=0.45 * self.rx, octaves=5, gain=0.55, time=t, period=24, affine=drift)
        dens = env * np.clip(0.6 + 0.45 * n, 0, None) ** 1.5
        alpha = 0.92 * (1.0 - np.exp(-self.density * dens))
        light = 0.7 + 0.45 * np.clip((cy + self.ry - Y) / (2 * self.ry), 0, 1) + 0.12 * n
        canvas.over(box, self.colour * light[..., None], alpha)
        return canvas.result()


_FIRE_T = np.array([0.0, 0.35, 0.65, 0.85, 1.0])
_FIRE_C = np.array([[0.5, 0.04, 0.0], [1.0, 0.22, 0.01], [1.0, 0.5, 0.08], [1.0, 0.75, 0.3], [1.0, 0.92, 0.7]])


class Fire(Foreground):
    """A flickering emissive flame: soft alpha, linear values up to ~8 in the core."""

    def __init__(self, rng, width, height, seed):
        super().__init__(rng, width, height, seed)
        u = self.unit
        self.tall = rng.uniform(0.6, 0.72) * u
        self.half = self.tall * rng.uniform(0.32, 0.42)
        self.bx = Wobble.random(rng, width * rng.uniform(0.4, 0.6), 0.06 * width)
        self.by = Wobble.random(rng, height * rng.uniform(0.78, 0.86), 0.02 * height)
        self.speed = rng.uniform(0.02, 0.035) * self.tall  # upward turbulence speed, px per frame
        self.gain = rng.uniform(5.0, 8.0)
        self.flicker = Wobble.random(rng, 1.0, 0.15, (6, 14), 3)

    def render(self, t):
        canvas = Canvas(self.width, self.height)
        bx, by = self.bx(t), self.by(t)
        box = canvas.region((bx - 1.7 * self.half, by - 1.15 * self.tall, bx + 1.7 * self.half, by + 0.1 * self.tall))
        if box is None:
            return canvas.result()
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        X, Y = pixel_grid(*box)
        up = _translate(0.0, -self.speed * t, x0, y0)
        sway = fractal_noise(self.seed + 1, w, h, cell=0.6 * self.tall, octaves=2, time=t, period=10, affine=up)
        turb = fractal_noise(self.seed, w, h, cell=0.3 * self.tall, octaves=4, time=t, period=4,
                             affine=_translate(0.0, -self.speed * t, x0, y0, 1.0, 0.6))
        v = (by - Y) / self.tall  # 0 at the base, 1 at the tip
        vc = np.clip(v, 0, 1)
        u = (X - bx) / self.half + 0.45 * vc ** 1.3 * sway
        width = (1 - vc) ** 0.7 * (0.55 + 0.45 * np.clip(vc / 0.25, 0, 1))
        body = np.clip(1 - (u / np.maximum(width, 1e-3)) ** 2, 0, 1) * np.clip((v + 0.08) / 0.16, 0, 1)
        temp = np.clip(body * (0.9 + 0.5 * turb) - 0.45 * vc, 0, 1) * np.sqrt(1 - vc)
        alpha = 0.93 * np.clip(1.3 * temp, 0, 1) ** 1.2
        ramp = np.stack([np.interp(temp, _FIRE_T, _FIRE_C[:, c]) for c in range(3)], -1)
        glow = (0.4 + self.gain * temp ** 2 * self.flicker(t))[..., None]
        canvas.over(box, ramp * glow, alpha)
        return canvas.result()


class Glass(Foreground):
    """Soap bubbles / glass spheres: low-alpha interiors, Fresnel rims, iridescence and bright speculars."""

    def __init__(self, rng, width, height, seed):
        super().__init__(rng, width, height, seed)
        u = self.unit
        n = int(rng.integers(1, 4))
        self.bubbles = []
        for i in range(n):
            r = (rng.uniform(0.2, 0.27) if i == 0 else rng.uniform(0.06, 0.12)) * u
            self.bubbles.append(dict(
                r=r,
                cx=Wobble.random(rng, width * rng.uniform(0.3, 0.7), 0.1 * width),
                cy=Wobble.random(rng, height * rng.uniform(0.4, 0.6), 0.08 * height),
                squash=Wobble.random(rng, 0.0, 0.06, (15, 30), 1),
                a_in=rng.uniform(0.05, 0.12), a_rim=rng.uniform(0.55, 0.85), power=rng.uniform(5, 10),
                tint=np.array([0.75, 0.85, 0.95], np.float32) * rng.uniform(0.35, 0.6),
                spin=rng.uniform(0.02, 0.05), spec=rng.uniform(3.0, 6.0),
            ))
        self.bubbles.sort(key=lambda b: b["r"])  # big one on top

    def render(self, t):
        canvas = Canvas(self.width, self.height)
        for b in self.bubbles:
            cx, cy, r = b["cx"](t), b["cy"](t), b["r"]
            sq = 1.0 + b["squash"](t)
            box = canvas.region((cx - 1.15 * r, cy - 1.15 * r, cx + 1.15 * r, cy + 1.15 * r))
            if box is None:
                continue
            X, Y = pixel_grid(*box)
            dx, dy = (X - cx) / (r * sq), (Y - cy) * sq / r
            rho = np.sqrt(dx * dx + dy * dy)
            cov = edge_coverage((rho - 1.0) * r)
            fres = np.clip(rho, 0, 1) ** b["power"]
            a_body = cov * (b["a_in"] + (b["a_rim"] - b["a_in"]) * fres)
            theta = np.arctan2(dy, dx)
            phase = theta / math.pi + b["spin"] * t
            irid = 0.5 + 0.5 * np.cos(2 * math.pi * (phase[..., None] + np.array([0.0, 0.33, 0.67], np.float32)))
            colour = b["tint"] * (0.5 + 0.8 * fres[..., None]) + 0.6 * fres[..., None] * irid
            canvas.over(box, colour, a_body)
            # key highlight (top left) and a small kicker (bottom right)
            c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
            hx, hy = dx + 0.38, dy + 0.42
            k1 = smooth_falloff(((c * hx + s * hy) / 0.13) ** 2 + ((-s * hx + c * hy) / 0.24) ** 2)
            k2 = smooth_falloff(((dx - 0.5) ** 2 + (dy - 0.52) ** 2) / 0.09 ** 2)
            spec = np.maximum(0.9 * k1, 0.5 * k2) * cov
            canvas.over(box, np.array([b["spec"]] * 3, np.float32), spec)
        return canvas.result()


class Water(Foreground):
    """A splash: a translucent streaky crown sheet with a pool ring, plus motion-blurred droplets."""

    _OPACITY = (0.35, 0.55, 0.75)

    def __init__(self, rng, width, height, seed):
        super().__init__(rng, width, height, seed)
        u = self.unit
        self.rc = rng.uniform(0.22, 0.3) * u
        self.cx = Wobble.random(rng, width * rng.uniform(0.4, 0.6), 0.06 * width)
        self.cy = Wobble.random(rng, height * rng.uniform(0.68, 0.76), 0.02 * height)
        self.grow = Wobble.random(rng, 1.0, 0.15, (20, 40), 2)
        n = int(np.clip(u * 0.6, 60, 700))
        ang = rng.uniform(-math.pi + 0.35, -0.35, n)
        spd = rng.uniform(0.012, 0.03, n) * u
        self.vel = np.stack([np.cos(ang) * spd, np.sin(ang) * spd], 1)
        self.gravity = 0.0016 * u
        self.period = rng.uniform(14, 26, n)
        self.offset = rng.uniform(0, 1, n)
        self.start = np.stack([rng.normal(0, 0.25, n) * self.rc, -rng.uniform(0.3, 0.8, n) * self.rc], 1)
        scale = max(1.0, u / 300)
        self.size = rng.choice(3, n, p=[0.45, 0.35, 0.2])
        self.sizes = tuple(w * scale for w in (1.2, 2.2, 3.5))  # droplet diameters in px
        self.group = rng.choice(len(self._OPACITY), n)
        self.colour = np.array([0.55, 0.68, 0.78], np.float32) * rng.uniform(0.8, 1.2)
        k = 7  # radial streaks of the fan: sum of drifting sines over the angle
        self.s_amp = rng.uniform(0.3, 1.0, k) / np.sqrt(k)
        self.s_freq = rng.uniform(6, 40, k).round()
        self.s_phase = rng.uniform(0, 2 * math.pi, k)
        self.s_speed = rng.normal(0, 0.08, k)
        self.ss = supersample_factor(height)

    def render(self, t):
        canvas = Canvas(self.width, self.height)
        cx, cy, g = self.cx(t), self.cy(t), self.grow(t)
        rc, hc = self.rc * g, self.rc * 0.9 * g
        box = canvas.region((cx - 1.5 * rc, cy - 1.3 * hc, cx + 1.5 * rc, cy + 0.25 * hc))
        if box is not None:
            x0, y0, x1, y1 = box
            w, h = x1 - x0, y1 - y0
            X, Y = pixel_grid(*box)
            dx, dy = (X - cx) / rc, (cy - Y) / hc
            theta = np.arctan2(np.maximum(dy, 0), dx)  # 0..pi over the fan
            streak = sum(a * np.sin(f * theta + p + w_ * t)
                         for a, f, p, w_ in zip(self.s_amp, self.s_freq, self.s_phase, self.s_speed))
            detail = fractal_noise(self.seed + 1, w, h, cell=0.12 * rc, octaves=3, time=t, period=6,
                                   affine=_translate(cx, cy + 0.02 * self.unit * t, x0, y0))
            edge = 1.0 + 0.12 * streak + 0.03 * detail
            r2 = (dx * dx + dy * dy) / (edge * edge)
            fan = smooth_falloff(r2 ** 2) * (dy > -0.05) * (0.35 + 0.65 * np.clip(r2, 0, 1))
            pool = smooth_falloff((dx / 1.45) ** 2 + ((dy + 0.03) / 0.12) ** 2)
            sheet = np.maximum(fan, 0.8 * pool)
            alpha = sheet * np.clip(0.45 + 0.2 * streak + 0.12 * detail, 0.08, 0.9)
            light = 0.8 + 0.35 * np.clip(streak, 0, None) + 0.25 * detail
            canvas.over(box, self.colour * light[..., None], alpha)
        # droplets: ballistic, re-launched every `period` frames from inside the crown
        age = ((t / self.period + self.offset) % 1.0) * self.period
        pos = np.array([cx, cy])[None] + self.start + self.vel * age[:, None]
        pos[:, 1] += 0.5 * self.gravity * age ** 2
        vel = self.vel + np.stack([np.zeros_like(age), self.gravity * age], 1)
        tail = pos - 0.5 * vel  # half-frame shutter
        segs = np.stack([tail, pos], 1)
        for gi, opacity in enumerate(self._OPACITY):
            mine = self.group == gi
            box = canvas.region(bounds([segs[mine]], 5)) if mine.any() else None
            if box is None:
                continue
            lines = [(list(segs[mine & (self.size == k)]), d) for k, d in enumerate(self.sizes)]
            cov = draw_coverage(box, self.ss, polylines=lines)
            canvas.over(box, self.colour * 1.6, cov * opacity)
        return canvas.result()


class Cloud(Foreground):
    """A large, thin, bright layer of mist drifting slowly: alpha mostly 0.05-0.5 over most of the frame."""

    def __init__(self, rng, width, height, seed):
        super().__init__(rng, width, height, seed)
        self.rx = rng.uniform(0.32, 0.42) * width
        self.ry = rng.uniform(0.3, 0.4) * height
        self.cx = Wobble.random(rng, width * rng.uniform(0.45, 0.55), 0.03 * width)
        self.cy = Wobble.random(rng, height * rng.uniform(0.45, 0.55), 0.03 * height)
        self.drift = rng.uniform(-0.004, 0.004) * width  # px per frame
        self.thickness = rng.uniform(0.35, 0.6)
        self.colour = np.array([0.95, 0.97, 1.0], np.float32) * rng.uniform(0.6, 1.1)

    def render(self, t):
        canvas = Canvas(self.width, self.height)
        cx, cy = self.cx(t), self.cy(t)
        box = canvas.region((cx - 1.3 * self.rx, cy - 1.3 * self.ry, cx + 1.3 * self.rx, cy + 1.3 * self.ry))
        if box is None:
            return canvas.result()
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        X, Y = pixel_grid(*box)
        cell = 0.6 * min(self.rx, self.ry)
        n = fractal_noise(self.seed, w, h, cell=cell, octaves=4, gain=0.6, time=t, period=60,
                          affine=_translate(self.drift * t, 0.0, x0, y0))
        r2 = ((X - cx) / self.rx) ** 2 + ((Y - cy) / self.ry) ** 2
        env = smooth_falloff(r2 * np.clip(1.0 + 0.35 * n, 0.5, 2.0) / 1.3)
        alpha = np.clip(self.thickness * env * (0.7 + 0.5 * n), 0, 0.85)
        light = 0.9 + 0.15 * n
        canvas.over(box, self.colour * light[..., None], alpha)
        return canvas.result()
