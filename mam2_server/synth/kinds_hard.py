"""Opaque foregrounds with hard or very fine edges: solid, hair, foliage."""
from __future__ import annotations

import math

import numpy as np

from mam2_server.synth.layer import Canvas, Foreground, bounds, draw_coverage, polar_blob_sdf, polygon_sdf
from mam2_server.synth.noise import (
    Wobble, apply_affine, edge_coverage, fractal_noise, pixel_grid, similarity, supersample_factor,
)

_PALETTE = np.array([  # scene-linear albedos
    [0.60, 0.08, 0.05], [0.08, 0.25, 0.60], [0.70, 0.45, 0.05], [0.10, 0.45, 0.15],
    [0.45, 0.10, 0.50], [0.75, 0.72, 0.65], [0.05, 0.05, 0.06], [0.05, 0.40, 0.45],
], np.float32)


def _region_affine(A: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Compose an image->object map with region pixel (i, j) -> image pixel centre (x0 + i + .5, y0 + j + .5)."""
    B = A.copy()
    B[:, 2] += A[:, 0] * (x0 + 0.5) + A[:, 1] * (y0 + 0.5)
    return B


class Solid(Foreground):
    """An opaque textured blob or irregular polygon, rotating, drifting and breathing; 1 px AA edge."""

    def __init__(self, rng, width, height, seed):
        super().__init__(rng, width, height, seed)
        self.radius = rng.uniform(0.2, 0.28) * self.unit
        self.is_polygon = bool(rng.random() < 0.5)
        if self.is_polygon:
            n = int(rng.integers(5, 9))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n) * 0.3 + np.arange(n) * 2 * np.pi / n)
            rad = self.radius * rng.uniform(0.7, 1.1, n)
            self.verts = np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)
            self.extent = float(rad.max())
        else:
            self.amps = [rng.uniform(0.03, 0.12) / (k + 1) for k in range(4)]
            self.phases = list(rng.uniform(0, 2 * np.pi, 4))
            self.extent = self.radius * (1 + sum(self.amps))
        self.cx = Wobble.random(rng, width * rng.uniform(0.42, 0.58), 0.12 * width)
        self.cy = Wobble.random(rng, height * rng.uniform(0.44, 0.56), 0.08 * height)
        self.spin = rng.uniform(0.01, 0.04) * rng.choice([-1, 1])
        self.angle = Wobble.random(rng, rng.uniform(0, 2 * np.pi), 0.2)
        self.scale = Wobble.random(rng, 1.0, 0.08)
        i, j = rng.choice(len(_PALETTE), 2, replace=False)
        self.col_a, self.col_b = _PALETTE[i], _PALETTE[j]
        self.stripes = rng.uniform(2.5, 6.0) / self.radius  # radians per object px

    def render(self, t):
        canvas = Canvas(self.width, self.height)
        cx, cy, sc = self.cx(t), self.cy(t), self.scale(t)
        ang = self.angle(t) + self.spin * t
        reach = self.extent * sc + 2
        box = canvas.region((cx - reach, cy - reach, cx + reach, cy + reach))
        if box is None:
            return canvas.result()
        x0, y0, x1, y1 = box
        A = similarity(cx, cy, ang, sc)
        X, Y = pixel_grid(*box)
        u, v = apply_affine(A, X, Y)
        if self.is_polygon:
            sdf = polygon_sdf(u, v, self.verts)
        else:
            sdf = polar_blob_sdf(u, v, self.radius, self.amps, self.phases)
        alpha = edge_coverage(sdf * sc)
        tex = fractal_noise(self.seed, x1 - x0, y1 - y0, cell=self.radius * 0.6, octaves=4,
                            affine=_region_affine(A, x0, y0))
        mix = np.clip(0.5 + 0.35 * tex + 0.35 * np.sin(u * self.stripes), 0, 1)[..., None]
        albedo = self.col_a * (1 - mix) + self.col_b * mix
        # dome shading lit from the top left (in image space)
        nx, ny = (X - cx) / (self.extent * sc), (Y - cy) / (self.extent * sc)
        nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, 1))
        shade = 0.25 + 0.9 * np.clip(-0.45 * nx - 0.55 * ny + 0.7 * nz, 0, 1)
        canvas.over(box, albedo * shade[..., None], alpha)
        return canvas.result()


class Hair(Foreground):
    """An opaque head (or fur ball) with hundreds of thin, curved, semi-transparent swaying strands."""

    _SEGMENTS = 8
    _WIDTHS = (1.9, 1.3, 0.8)  # strand base widths in px (width classes)
    _OPACITY = (0.3, 0.5, 0.7, 0.9)  # opacity groups

    def __init__(self, rng, width, height, seed):
        super().__init__(rng, width, height, seed)
        self.radius = rng.uniform(0.15, 0.2) * self.unit
        self.amps = [0.08, 0.02, 0.01]
        self.phases = [np.pi / 2, rng.uniform(0, 6.3), rng.uniform(0, 6.3)]  # slightly taller than wide
        self.fur = bool(rng.random() < 0.35)
        self.cx = Wobble.random(rng, width * rng.uniform(0.42, 0.58), 0.1 * width)
        self.cy = Wobble.random(rng, height * rng.uniform(0.5, 0.6), 0.06 * height)
        self.tilt = Wobble.random(rng, 0.0, 0.15)
        n = int(np.clip(2 * np.pi * self.radius * 1.6, 120, 2500))
        if self.fur:
            phi = rng.uniform(-np.pi, np.pi, n)
            length = self.radius * rng.uniform(0.25, 0.5, n)
        else:
            phi = rng.uniform(-np.pi - 0.5, 0.5, n)  # top half and the sides (y is down)
            length = self.radius * rng.uniform(0.35, 1.0, n)
        self.phi, self.length = phi, length
        self.dev = rng.normal(0, 0.35, n)  # root direction away from the normal
        self.curl = rng.normal(0, 1.6, n)  # total bend over the strand, radians
        self.sway_amp = rng.uniform(0.15, 0.5, n)
        self.sway_phase = rng.uniform(0, 0.9, n) + phi * 0.5
        self.sway_freq = 2 * np.pi / rng.uniform(25, 45)
        self.width_class = rng.choice(3, n, p=[0.25, 0.4, 0.35])
        self.group = rng.choice(4, n, p=[0.25, 0.25, 0.25, 0.25])
        base = np.array(rng.choice([[0.35, 0.2, 0.08], [0.08, 0.05, 0.03], [0.7, 0.5, 0.25], [0.45, 0.12, 0.04]]),
                        np.float32)
        self.hair_colour = base
        self.group_colour = [base * rng.uniform(0.8, 1.25) for _ in self._OPACITY]
        self.ss = supersample_factor(height)

    def _strands(self, t, cx, cy, tilt):
        s = np.linspace(0.0, 1.0, self._SEGMENTS + 1)[None, :]
        sway = self.sway_amp[:, None] * np.sin(self.sway_freq * t + self.sway_phase[:, None]) * s ** 1.5
        ang = (self.phi + tilt + self.dev)[:, None] + self.curl[:, None] * s + sway
        step = (self.length / self._SEGMENTS)[:, None]
        dx = np.cumsum(np.cos(ang[:, :-1]) * step, axis=1)
        dy = np.cumsum(np.sin(ang[:, :-1]) * step, axis=1)
        root_r = self.radius * 0.92 * (1 + self.amps[0] * np.cos(2 * (self.phi) + self.phases[0]))
        rx = cx + root_r * np.cos(self.phi + tilt)
        ry = cy + root_r * np.sin(self.phi + tilt)
        pts = np.empty((len(self.phi), self._SEGMENTS + 1, 2))
        pts[:, 0, 0], pts[:, 0, 1] = rx, ry
        pts[:, 1:, 0] = rx[:, None] + dx
        pts[:, 1:, 1] = ry[:, None] + dy
        return pts

    def render(self, t):
        canvas = Canvas(self.width, self.height)
        cx, cy, tilt = self.cx(t), self.cy(t), self.tilt(t)
        reach = self.radius * 1.3 + 2
        box = canvas.region((cx - reach, cy - reach, cx + reach, cy + reach))
        if box is not None:
            x0, y0, x1, y1 = box
            A = similarity(cx, cy, tilt, 1.0)
            X, Y = pixel_grid(*box)
            u, v = apply_affine(A, X, Y)
            alpha = edge_coverage(polar_blob_sdf(u, v, self.radius, self.amps, self.phases))
            tex = fractal_noise(self.seed, x1 - x0, y1 - y0, cell=self.radius * 0.15, octaves=3,
                                affine=_region_affine(A, x0, y0) * np.array([[4.0], [0.5]]))
            shade = np.clip(0.75 - 0.5 * (v / self.radius) + 0.25 * tex, 0.2, 1.5)
            canvas.over(box, self.hair_colour * shade[..., None], alpha)
        pts = self._strands(t, cx, cy, tilt)
        third = self._SEGMENTS // 3
        sections = ((0, third + 1, 1.0), (third, 2 * third + 1, 0.7), (2 * third, self._SEGMENTS + 1, 0.45))
        for g, opacity in enumerate(self._OPACITY):
            mine = self.group == g
            if not mine.any():
                continue
            box = canvas.region(bounds([pts[mine]], 3))
            if box is None:
                continue
            lines = []
            for wc, w in enumerate(self._WIDTHS):
                sel = pts[mine & (self.width_class == wc)]
                for a, b, taper in sections:
                    lines.append((list(sel[:, a:b]), w * taper))
            cov = draw_coverage(box, self.ss, polylines=lines)
            canvas.over(box, self.group_colour[g], cov * opacity)
        return canvas.result()


class Foliage(Foreground):
    """A branching plant swaying in the wind: 1-6 px branches, twigs and many small leaves with gaps."""

    _LEAF = np.array([[0, 0], [0.25, -0.4], [0.6, -0.45], [1.0, 0], [0.6, 0.45], [0.25, 0.4]], np.float64)
    _GREENS = np.array([[0.05, 0.18, 0.03], [0.09, 0.3, 0.04], [0.04, 0.12, 0.02], [0.2, 0.35, 0.05],
                        [0.35, 0.3, 0.04]], np.float32)

    def __init__(self, rng, width, height, seed):
        super().__init__(rng, width, height, seed)
        u = self.unit
        base_x = width * rng.uniform(0.35, 0.65)
        self.root = (Wobble.random(rng, base_x, 0.04 * width), height + 0.02 * u)
        # segments: parent index, rest angle (relative), length, width, depth
        parent, rest, length, wid, depth = [-1], [-np.pi / 2 + rng.normal(0, 0.15)], [0.3 * u], [max(2.5, 0.022 * u)], [0]
        frontier = [0]
        for d in range(1, 5):
            nxt = []
            for p in frontier:
                kids = int(rng.integers(2, 4)) if d < 4 else int(rng.integers(1, 3))
                for k in range(kids):
                    parent.append(p)
                    spread = 0.7 if k else 0.3
                    rest.append(rng.normal(0, 0.15) + spread * rng.choice([-1, 1]) * rng.uniform(0.4, 1.2))
                    length.append(length[p] * rng.uniform(0.6, 0.85))
                    wid.append(max(0.8, wid[p] * 0.62))
                    depth.append(d)
                    nxt.append(len(parent) - 1)
            frontier = nxt
        self.parent = np.array(parent)
        self.rest, self.len = np.array(rest), np.array(length)
        self.wid, self.depth = np.array(wid), np.array(depth)
        self.sway_phase = rng.uniform(0, 2 * np.pi, len(parent))
        self.sway_amp = 0.04 + 0.03 * self.depth
        self.wind = 2 * np.pi / rng.uniform(30, 60)
        # leaves on depth >= 2 segments
        segs = np.nonzero(self.depth >= 2)[0]
        per = np.clip((self.len[segs] / (0.04 * u) * 2.0).astype(int), 1, 8)
        self.leaf_seg = np.repeat(segs, per)
        nl = len(self.leaf_seg)
        self.leaf_pos = rng.uniform(0.2, 1.0, nl)
        self.leaf_ang = rng.uniform(0.5, 1.2, nl) * rng.choice([-1, 1], nl)
        self.leaf_len = u * rng.uniform(0.03, 0.06, nl)
        self.leaf_wid = rng.uniform(0.5, 0.9, nl)
        self.leaf_flutter = rng.uniform(0, 2 * np.pi, nl)
        self.leaf_group = rng.choice(len(self._GREENS), nl)
        self.bark = np.array([0.09, 0.06, 0.035], np.float32)
        self.ss = supersample_factor(height)

    def _skeleton(self, t):
        n = len(self.parent)
        start = np.zeros((n, 2))
        end = np.zeros((n, 2))
        absang = np.zeros(n)
        sway = self.sway_amp * np.sin(self.wind * t + self.sway_phase + 0.4 * self.depth)
        for i in range(n):  # parents come before children
            p = self.parent[i]
            if p < 0:
                start[i] = (self.root[0](t), self.root[1])
                absang[i] = self.rest[i] + 0.5 * sway[i]
            else:
                start[i] = end[p]
                absang[i] = absang[p] + self.rest[i] + sway[i]
            end[i] = start[i] + self.len[i] * np.array([math.cos(absang[i]), math.sin(absang[i])])
        return start, end, absang

    def render(self, t):
        canvas = Canvas(self.width, self.height)
        start, end, absang = self._skeleton(t)
        box = canvas.region(bounds([start, end], 0.07 * self.unit))
        if box is None:
            return canvas.result()
        lines = [([np.stack([start[i], end[i]])], self.wid[i]) for i in range(len(start))]
        cov = draw_coverage(box, self.ss, polylines=lines)
        canvas.over(box, self.bark, cov)
        s = self.leaf_seg
        base = start[s] + (end[s] - start[s]) * self.leaf_pos[:, None]
        ang = absang[s] + self.leaf_ang + 0.25 * np.sin(self.wind * 1.7 * t + self.leaf_flutter)
        shape = self._LEAF[None] * np.stack([self.leaf_len, self.leaf_len * self.leaf_wid * 0.5], 1)[:, None, :]
        c, sn = np.cos(ang)[:, None], np.sin(ang)[:, None]
        leaves = np.stack([c * shape[..., 0] - sn * shape[..., 1], sn * shape[..., 0] + c * shape[..., 1]], -1)
        leaves += base[:, None, :]
        for g, colour in enumerate(self._GREENS):
            polys = leaves[self.leaf_group == g]
            if len(polys):
                cov = draw_coverage(box, self.ss, polygons=list(polys))
                canvas.over(box, colour, cov)
        return canvas.result()
