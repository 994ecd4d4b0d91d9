"""Synthetic shots: determinism, exact compositing, alpha character per kind, prompts, streaming."""
from __future__ import annotations

import json
import tracemalloc

import cv2
import numpy as np
import pytest

from mam2_server.prompts import load_prompts
from mam2_server.synth import KINDS, make_benchmark, make_clip, prompt_from_alpha, write_clip

W, H = 128, 72


@pytest.fixture(scope="module")
def clips():
    return {k: make_clip(k, num_frames=6, width=W, height=H, seed=1) for k in KINDS}


def _object(alpha):
    return alpha[alpha > 0.01]


def test_kinds_listed():
    assert len(KINDS) >= 7
    assert {"solid", "hair", "smoke", "fire", "glass", "foliage", "water"} <= set(KINDS)
    with pytest.raises(ValueError, match="unknown kind"):
        make_clip("lava")
    with pytest.raises(ValueError, match="camera"):
        make_clip("solid", camera="dolly")


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_and_order_independent(kind):
    a = make_clip(kind, num_frames=4, width=64, height=48, seed=7)
    b = make_clip(kind, num_frames=4, width=64, height=48, seed=7)
    pa3, aa3 = a.frame(1003)
    b.frame(1001)
    pb3, ab3 = b.frame(1003)
    np.testing.assert_array_equal(pa3, pb3)
    np.testing.assert_array_equal(aa3, ab3)
    assert a.prompt.same_as(b.prompt)
    c = make_clip(kind, num_frames=4, width=64, height=48, seed=8)
    assert not np.array_equal(c.frame(1003)[1], ab3)


@pytest.mark.parametrize("kind", KINDS)
def test_alpha_range_and_linear_composite(clips, kind):
    clip = clips[kind]
    for n in clip.frames[::2]:
        lay = clip.layers(n)
        plate, alpha = clip.frame(n)
        assert plate.shape == (H, W, 3) and alpha.shape == (H, W)
        assert plate.dtype == np.float32 and alpha.dtype == np.float32
        assert np.isfinite(plate).all() and alpha.min() >= 0.0 and alpha.max() <= 1.0
        assert (plate >= 0).all()
        expected = alpha[..., None] * lay.foreground + (1 - alpha[..., None]) * lay.background
        np.testing.assert_allclose(plate, expected, rtol=1e-5, atol=1e-5)
        assert (alpha > 0.01).mean() > 0.01, "the object must be visible"


@pytest.mark.parametrize("kind", KINDS)
def test_object_moves_smoothly(clips, kind):
    clip = clips[kind]
    alphas = [clip.alpha(n) for n in clip.frames]
    steps = [np.abs(b - a).mean() for a, b in zip(alphas, alphas[1:])]
    assert max(steps) > 0, "alpha must evolve"
    # smooth: no frame-to-frame change bigger than a fraction of the object's total alpha
    # (flames flicker and droplets fly a few pixels a frame by design)
    limit = 1.0 if kind in ("fire", "water") else 0.5
    assert max(steps) < limit * np.mean([a.mean() for a in alphas])


def test_soft_kinds_are_mostly_soft(clips):
    for kind in ("smoke", "fire", "glass", "water"):
        obj = _object(clips[kind].alpha(clips[kind].frames[0]))
        soft = ((obj > 0.05) & (obj < 0.95)).mean()
        assert (obj < 0.9).mean() > 0.5, kind
        assert soft > 0.5, (kind, soft)
    glass = _object(clips["glass"].alpha(1001))
    assert np.median(glass) < 0.4  # mostly low-alpha interior


def test_fire_is_emissive(clips):
    plate, alpha = clips["fire"].frame(1003)
    fg = clips["fire"].layers(1003).foreground
    assert fg[alpha > 0.3].max() > 2.0  # scene-linear values well above 1


def test_solid_is_opaque_with_one_pixel_edge(clips):
    alpha = clips["solid"].alpha(1001)
    obj = _object(alpha)
    assert (obj > 0.999).mean() > 0.8
    inside = (alpha > 0.5).astype(np.uint8)
    contours, _ = cv2.findContours(inside, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    partial = ((alpha > 0.01) & (alpha < 0.99)).sum()
    assert partial < 1.6 * perimeter  # anti-aliased over about one pixel


@pytest.mark.parametrize("kind", ["hair", "foliage"])
def test_fine_structures(kind):
    clip = make_clip(kind, num_frames=1, width=256, height=144, seed=2)
    alpha = clip.alpha(1001)
    solid = (alpha > 0.5).astype(np.uint8)
    opened = cv2.morphologyEx(solid, cv2.MORPH_OPEN, np.ones((4, 4), np.uint8))
    thin = solid.sum() - opened.sum()  # pixels of structures narrower than ~4 px
    assert thin > 0.08 * solid.sum(), (kind, thin, solid.sum())
    obj = _object(alpha)
    assert ((obj > 0.05) & (obj < 0.95)).mean() > 0.1


@pytest.mark.parametrize("kind", KINDS)
def test_prompt_box_and_point(clips, kind):
    clip = clips[kind]
    p = clip.prompt
    assert p.frame == clip.frames[0]
    p.validate(W, H)
    x0, y0, x1, y1 = p.box
    assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
    alpha = clip.alpha(clip.frames[0])
    ys, xs = np.nonzero(alpha > 0.05)
    assert x0 <= xs.min() and xs.max() + 1 <= x1 and y0 <= ys.min() and ys.max() + 1 <= y1
    (pt,) = p.points
    assert pt.label == 1
    assert alpha[int(pt.y), int(pt.x)] >= 0.5 * alpha.max()


def test_prompt_from_alpha_empty():
    with pytest.raises(ValueError, match="not visible"):
        prompt_from_alpha(np.zeros((8, 8), np.float32), 1)


def test_cameras():
    moving = make_clip("solid", num_frames=5, width=64, height=48, seed=3, camera="moving")
    locked = make_clip("solid", num_frames=5, width=64, height=48, seed=3, camera="locked")
    assert not np.array_equal(moving.layers(1001).background, moving.layers(1005).background)
    np.testing.assert_array_equal(locked.layers(1001).background, locked.layers(1005).background)
    assert locked.layers(1001).background.max() <= 1.0 + 1e-6


def test_frame_source_protocol():
    clip = make_clip("glass", num_frames=3, width=64, height=48)
    d = clip.display(1002)
    assert d.shape == (48, 64, 3) and d.min() >= 0 and d.max() <= 1
    np.testing.assert_array_equal(clip.linear(1002), clip.frame(1002)[0])
    with pytest.raises(ValueError, match="not in this clip"):
        clip.frame(999)


def test_streaming_keeps_no_frames():
    clip = make_clip("smoke", num_frames=40, width=160, height=90, seed=0)
    frame_bytes = 160 * 90 * 4 * 4
    tracemalloc.start()
    try:
        it = iter(clip)
        for _ in range(3):
            next(it)
        base, _ = tracemalloc.get_traced_memory()
        for _ in it:
            pass
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - base < 2 * frame_bytes


def test_benchmark_set():
    clips = list(make_benchmark(num_frames=2, width=64, height=48))
    assert len(clips) >= 8
    assert {c.kind for c in clips} == set(KINDS)
    keys = {(c.kind, c.seed, c.camera) for c in clips}
    assert len(keys) == len(clips)
    assert {c.camera for c in clips} == {"moving", "locked"}


def test_write_clip(tmp_path):
    from mam2_server.io.image import read_image

    clip = make_clip("fire", num_frames=2, width=64, height=48, seed=4)
    paths = write_clip(clip, tmp_path / "shot")
    for n in clip.frames:
        plate, alpha = clip.frame(n)
        pfile = paths.plates.replace("####", f"{n:04d}")
        afile = paths.alphas.replace("####", f"{n:04d}")
        img = read_image(pfile)
        assert img.pixels.shape == (48, 64, 3)  # RGB only: no ground truth in the plate
        np.testing.assert_allclose(img.pixels, plate, rtol=2e-3, atol=1e-3)  # half float
        a = read_image(afile).pixels
        np.testing.assert_allclose(a.reshape(48, 64), alpha, atol=1e-3)
    (prompt,) = load_prompts(paths.prompts)
    assert prompt.same_as(clip.prompt)
    info = json.loads(paths.info.read_text())
    assert info["kind"] == "fire" and info["frames"] == clip.frames and info["seed"] == 4


@pytest.mark.parametrize("condition", ["static", "srgb", "large", "camouflage", "parallax", "still"])
def test_conditions_keep_the_truth_consistent_with_the_plate(condition):
    from mam2_server.synth import CONDITIONS
    from mam2_server.synth.background import linear_to_srgb, srgb_to_linear
    assert condition in CONDITIONS
    clip = make_clip("solid", num_frames=4, width=W, height=H, seed=3, condition=condition)
    assert len(clip.frames) == (1 if condition == "still" else 4)
    for f in clip.frames:
        lay = clip.layers(f)
        assert lay.alpha.min() >= 0 and lay.alpha.max() <= 1 and np.isfinite(lay.plate).all()
        if condition == "srgb":  # mixed on display-encoded values
            fg = lay.foreground
            expect = srgb_to_linear(lay.alpha[..., None] * linear_to_srgb(fg)
                                    + (1 - lay.alpha[..., None]) * linear_to_srgb(lay.background))
        else:
            expect = lay.premult + (1 - lay.alpha[..., None]) * lay.background
        assert np.abs(lay.plate - expect).max() < 1e-4
    if condition == "static":
        assert clip.camera == "locked"
        assert np.array_equal(clip.frame(clip.frames[0])[0], clip.frame(clip.frames[-1])[0])
    if condition == "parallax":  # the poles hide the object somewhere along the clip
        plain = make_clip("solid", num_frames=4, width=W, height=H, seed=3)
        hidden = sum(float((plain.alpha(f) - clip.alpha(f)).max()) for f in clip.frames)
        assert hidden > 0.5
        for f in clip.frames:  # poles over (object over background), composited independently
            t = float(f - clip.frames[0])
            mid_p, mid_a = clip._mid.render(t)
            obj = plain.layers(f)
            under = obj.premult + (1 - obj.alpha[..., None]) * obj.background
            expect = mid_p + (1 - mid_a[..., None]) * under
            assert np.abs(clip.frame(f)[0] - expect).max() < 1e-4
    if condition == "camouflage":  # the object wears its background's colours
        lay = clip.layers(clip.frames[0])
        inside = lay.alpha > 0.99
        fg, bg = lay.foreground[inside], lay.background.reshape(-1, 3)
        assert (fg.min(axis=0) >= bg.min(axis=0) - 1e-3).all() and (fg.max(axis=0) <= bg.max(axis=0) + 1e-3).all()
    if condition == "large":  # the foreground magnified 1.8x: about 1.8^2 the area
        plain = make_clip("solid", num_frames=4, width=W, height=H, seed=3)
        f = clip.frames[0]
        ratio = float(clip.alpha(f).sum() / plain.alpha(f).sum())
        assert 2.5 < ratio < 3.6, ratio
