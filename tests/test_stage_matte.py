import cv2
import numpy as np

from mam2_server.engines.plan import FORWARD, Pass
from mam2_server.io import ArraySource
from mam2_server.prompts import Prompt
from mam2_server.stages.base import FrameImages, Segmentation
from mam2_server.stages.matte.cleanplate import CleanPlateEstimator
from mam2_server.stages.matte.closed_form import ClosedFormMatter, solve_alpha
from mam2_server.stages.matte.foreground import estimate_foreground, premultiplied_rgba
from mam2_server.stages.matte.guided import guided_filter, guided_upsample
from mam2_server.stages.matte.priors import HARD, solve_with_priors
from mam2_server.stages.matte.evidence import EvidenceMatter
from mam2_server.stages.trimap.band import band_trimap

W, H = 96, 64
YY, XX = np.mgrid[0:H, 0:W]


def background(seed=0, w=W, h=H, blur=1.5):
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), blur)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    return (0.05 + 0.4 * tex).astype(np.float32)


def disc(cx, cy=32, r=13):
    return np.clip(r + 0.5 - np.sqrt((XX + 0.5 - cx) ** 2 + (YY + 0.5 - cy) ** 2), 0, 1).astype(np.float32)


def composite(alpha, fg, bg):
    return (alpha[..., None] * np.asarray(fg, np.float32) + (1 - alpha[..., None]) * bg).astype(np.float32)


def srgb(x):
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def test_closed_form_on_a_disc_and_degenerate_trimaps():
    a = disc(48)
    img = srgb(composite(a, [0.8, 0.2, 0.1], background()))
    alpha = solve_alpha(img, band_trimap(a, 3))
    assert np.abs(alpha - a).mean() < 0.01
    assert (solve_alpha(img, np.zeros((H, W))) == 0).all()
    assert (solve_alpha(img, np.full((H, W), 0.5)) == 0).all()  # nothing known: no object
    assert solve_alpha(img, np.where(a > 0.5, 1.0, 0.5))[32, 48] == 1.0  # no background anchor


def test_closed_form_matter_at_proxy_resolution():
    a = disc(48)
    img = composite(a, [0.8, 0.2, 0.1], background())
    m = ClosedFormMatter(proxy_long_side=48)
    out = m.process(FrameImages(1, img, srgb(img)), Segmentation(a), band_trimap(a, 4))
    assert out.shape == (H, W) and np.abs(out - a).mean() < 0.03


def test_solve_with_priors_keeps_hard_pixels_and_follows_soft_priors():
    img = srgb(background())
    prior = np.zeros((H, W), np.float32)
    conf = np.full((H, W), HARD, np.float32)
    conf[20:40, 30:60] = 5.0
    prior[20:40, 30:60] = 0.3
    out = solve_with_priors(img, prior, conf)
    assert out[0, 0] == 0.0
    assert abs(float(out[30, 45]) - 0.3) < 0.05


def test_guided_upsample_beats_bilinear_on_edges():
    big = np.zeros((128, 192), np.float32)
    big[:, 97:] = 1.0
    guide = np.repeat(big[..., None], 3, axis=2) * 0.8 + 0.1
    small = cv2.resize(big, (48, 32), interpolation=cv2.INTER_AREA)
    up = guided_upsample(small, guide)
    bilinear = cv2.resize(small, (192, 128), interpolation=cv2.INTER_LINEAR)
    assert np.abs(up - big).mean() < 0.7 * np.abs(bilinear - big).mean()
    flat = guided_filter(np.full((16, 16), 0.5, np.float32), np.full((16, 16), 0.25, np.float32), 2)
    assert np.allclose(flat, 0.25, atol=1e-4)


def test_clean_plate_recovers_background_behind_a_moving_object_with_a_panning_camera():
    big = background(seed=3, w=W + 40, h=H, blur=2.5)
    frames, alphas, bgs = [], [], []
    for i in range(6):
        bg = big[:, 4 * i:4 * i + W]  # the camera pans 4 px a frame
        a = disc(20 + 11 * i, r=10)
        frames.append(composite(a, [0.9, 0.9, 0.2], bg))
        alphas.append(a)
        bgs.append(bg)
    src = ArraySource(frames, first_frame=1)
    est = CleanPlateEstimator(src, (H, W), max_neighbours=5)
    t = 3
    obj = cv2.dilate((alphas[t - 1] > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    # 11 px a frame on screen, the background 4 px the other way: 15 px a frame against the background
    plate = est.estimate(t, src.linear(t), obj, velocity=(15.0, 0.0))
    assert plate is not None
    inside = (alphas[t - 1] > 0.99) & (plate.valid >= 1)
    assert inside.sum() > 50
    err = np.abs(plate.background[inside] - bgs[t - 1][inside]).mean()
    assert err < 0.03  # vs ~0.4 between the object and the background
    assert len(est._cache) <= est._cache_size


def _matte(src, masks, frames, prompt=None, background_flow=None, **options):
    """Run EvidenceMatter over `frames` with the given masks (a band trimap around each, the inside
    sure foreground as a hard-mask tracker gives) and, with `background_flow` (dx, dy per frame), the
    tracker's flow of the background; returns the last alpha and the matter."""
    m = EvidenceMatter(temporal=0.0, **options)
    prompt = prompt or Prompt(frame=frames[0], box=(0, 0, W, H))
    m.begin_pass(src, Pass(frames[0], FORWARD, tuple(frames)), {prompt.frame: prompt})
    out = None
    for f in frames:
        mask = masks[f - src.frames[0]].astype(np.float32)
        extras = {}
        if background_flow is not None and f != frames[0]:
            flow = np.zeros((H, W, 2), np.float32)
            flow[...] = background_flow  # this frame's pixels were there in the previous frame
            extras = {"flow": flow, "flow_to": f - 1}
        out = m.process(FrameImages(f, src.linear(f), src.display(f)), Segmentation(mask, extras),
                        band_trimap(mask, 2))
    return out, m


def test_evidence_matter_uses_the_revealed_background_for_a_see_through_object():
    big = background(seed=5, w=W + 60, h=H, blur=2.5)
    frames, alphas = [], []
    for i in range(6):
        a = 0.5 * disc(20 + 12 * i, r=11)  # a half-transparent grey disc moving fast
        frames.append(composite(a, [0.6, 0.6, 0.6], big[:, 3 * i:3 * i + W]))
        alphas.append(a)
    src = ArraySource(frames, first_frame=1)
    masks = [a > 0.02 for a in alphas]
    with_evidence, m = _matte(src, masks, [1, 2, 3, 4], background_flow=(3.0, 0.0))
    assert m._seethrough  # and the pass's log line says so
    without, _ = _matte(src, masks, [1, 2, 3, 4], background_flow=(3.0, 0.0), evidence_weight=0.0)
    assert np.abs(with_evidence - alphas[3]).mean() < 0.5 * np.abs(without - alphas[3]).mean()


def test_foreground_estimation_keeps_linear_range():
    a = disc(48)
    fg = np.array([4.0, 1.0, 0.2], np.float32)  # emissive: above 1 in linear light
    img = composite(a, fg, background())
    F = estimate_foreground(img, a)
    assert np.abs(F[a > 0.99] - fg).max() < 0.05
    rgba = premultiplied_rgba(img, a)
    assert rgba.shape == (H, W, 4) and np.allclose(rgba[..., 3], a)
    # the soft edge is unmixed: premultiplied colour close to a x F, unlike the plate's a x I
    edge = (a > 0.15) & (a < 0.85)
    assert edge.sum() > 20
    unmixed = np.abs(rgba[..., :3] - a[..., None] * fg)[edge].mean()
    naive = np.abs(a[..., None] * img - a[..., None] * fg)[edge].mean()
    assert unmixed < 0.3 * naive


def _textured_clip(step, n=6, r=14, fg_colours=((0.6, 0.08, 0.05), (0.08, 0.4, 0.1)), bg=None):
    """Locked camera; an opaque disc with a smooth two-colour texture, moving `step` px a frame."""
    bg = background(seed=7, blur=1.5) if bg is None else bg
    rng = np.random.default_rng(3)
    t = cv2.GaussianBlur(rng.random((H, W)).astype(np.float32), (0, 0), 4.0)
    t = ((t - t.min()) / (t.max() - t.min()))[..., None]
    fg = t * np.array(fg_colours[0], np.float32) + (1 - t) * np.array(fg_colours[1], np.float32)
    frames, alphas = [], []
    for i in range(n):
        a = disc(30 + step * i, r=r)
        f = cv2.warpAffine(fg, np.float32([[1, 0, step * i], [0, 1, 0]]), (W, H), borderMode=cv2.BORDER_REFLECT)
        frames.append(composite(a, f, bg))
        alphas.append(a)
    return ArraySource(frames, first_frame=1), alphas


def test_an_opaque_object_stays_opaque_still_slow_or_fast():
    # a still (or slow) object covers the same pixels in every neighbour: no revealed background,
    # so no evidence either way and the inside stays the mask's; a fast one reveals the background
    # and the evidence says "opaque"
    for step in (0.0, 0.3, 6.0):
        src, alphas = _textured_clip(step)
        out, m = _matte(src, [a > 0.5 for a in alphas], [1, 2, 3, 4])
        inside = alphas[3] > 0.99
        assert out[inside].mean() > 0.97, step
        if step == 6.0:  # the fast one: the revealed background was there, and said "opaque"
            assert m._revealed and not m._seethrough, (m._revealed, m._seethrough)
        if step == 0.0:
            assert not m._revealed


def test_an_opaque_object_in_its_backgrounds_colours_is_never_erased():
    # the plush toy in front of curtains of the same colours: nothing at any pixel says the
    # background shows through, so nothing may make it see-through (a still, and a moving shot)
    bg = background(seed=11, blur=1.2)
    lo, hi = np.percentile(bg.reshape(-1, 3), [10, 90], axis=0)
    for step, n in ((0.0, 1), (2.0, 6)):
        src, alphas = _textured_clip(step, n=n, fg_colours=(tuple(lo), tuple(hi)), bg=bg)
        frames = list(src.frames)[:4]
        out, m = _matte(src, [a > 0.5 for a in alphas], frames)
        inside = alphas[frames[-1] - 1] > 0.99
        assert out[inside].mean() > 0.95, (step, out[inside].mean())
        assert bool(m._revealed) == (n > 1)  # the moving shot had evidence, and it did not erase


def _shifted_pair(h, w, shift, obj_box=None, obj_shift=0):
    """Current frame and a neighbour of a textured background moved by `shift` px in x; with
    `obj_box`, a bright textured object that moves by a further `obj_shift` px in the neighbour."""
    bg = background(seed=3, w=w + 16, h=h + 16, blur=1.2)
    M = np.float32([[1, 0, shift], [0, 1, 0.0]])
    cur = bg[8:8 + h, 8:8 + w].copy()
    nb = cv2.warpAffine(bg, M, (w + 16, h + 16), flags=cv2.INTER_LINEAR)[8:8 + h, 8:8 + w].copy()
    obj = np.zeros((h, w), bool)
    if obj_box is not None:
        x0, y0, x1, y1 = obj_box
        tex = background(seed=9, w=x1 - x0, h=y1 - y0, blur=0.8) * 2.0
        cur[y0:y1, x0:x1] = tex
        nb[y0:y1, x0 + obj_shift:x1 + obj_shift] = tex
        obj[y0:y1, x0:x1] = True
    return cur, nb, obj


def _refined_shift(h, w, shift, **kw):
    cur, nb, obj = _shifted_pair(h, w, shift, **kw)
    est = CleanPlateEstimator(ArraySource([nb, cur], frames=[1, 2]), (h, w))
    c, n = est._get(2, cur), est._get(1, nb)
    there = np.roll(obj, kw.get("obj_shift", 0), axis=1)
    guess = np.array([[1, 0, -shift + 0.8], [0, 1, 0], [0, 0, 1]], np.float64)  # maps nb -> cur, 0.8 px off
    return est, c, n, est._refine(c, n, guess, obj, there), guess


def test_clean_plate_alignment_refines_a_feature_homography_to_sub_pixel():
    """ECC on the background corrects a homography 0.8 px off: on a small proxy (full size), on a
    640x360 one (fitted at half size), and with a textured object that moves on its own (masked out
    in both frames)."""
    for h, w, kw in ((144, 256, {}), (360, 640, {}), (144, 256, {"obj_box": (90, 40, 150, 100), "obj_shift": 14})):
        _, _, _, refined, _ = _refined_shift(h, w, 1.3, **kw)
        assert abs(refined[0, 2] + 1.3) < 0.1 and abs(refined[1, 2]) < 0.1, (h, w, kw, refined)


def test_clean_plate_alignment_keeps_the_feature_homography_when_ecc_fits_worse(monkeypatch):
    est, c, n, _, guess = _refined_shift(144, 256, 1.3)
    bad = np.array([[1, 0, 6.0], [0, 1, -4.0], [0, 0, 1]], np.float32)
    monkeypatch.setattr(cv2, "findTransformECCWithMask", lambda *args, **kw: (0.9, bad))
    assert np.allclose(est._refine(c, n, guess, None, None), guess)
    monkeypatch.setattr(cv2, "findTransformECCWithMask", lambda *args, **kw: (0.9, np.zeros((3, 3), np.float32)))
    assert np.allclose(est._refine(c, n, guess, None, None), guess)  # singular: refused, no exception


def test_seethrough_regression_is_finite_and_silent_on_flat_and_textured_windows():
    from mam2_server.stages.matte.seethrough import seethrough_alpha
    rng = np.random.default_rng(3)
    # near-flat (bright sky under sensor noise): float32 E[x^2] - E[x]^2 rounds below zero there
    bg = (3.7 + rng.normal(0.0, 1e-5, (40, 60, 3))).astype(np.float32)
    bg[:, 30:] = rng.uniform(0.0, 4.0, (40, 30, 3)).astype(np.float32)  # textured, scene-linear > 1
    seen = 0.6 * bg + 0.4 * np.array([0.9, 0.2, 0.1], np.float32)  # a 40 % layer over it
    with np.errstate(all="raise"):
        alpha, conf = seethrough_alpha(seen, bg, sigma=2e-3)
    assert np.isfinite(alpha).all() and np.isfinite(conf).all()
    assert conf[:, :25].max() < 0.05  # a flat background says nothing
    assert abs(float(np.median(alpha[5:-5, 36:-5])) - 0.4) < 0.1


def test_pymatting_retries_go_to_the_debug_log_not_the_artists_terminal(monkeypatch, capsys, caplog):
    # pymatting prints a "PERFORMANCE WARNING" block each time its incomplete Cholesky needs a
    # diagonal shift; the solve is still right, and stdout is the artist's terminal
    import importlib
    import logging
    import sys
    importlib.import_module("pymatting.preconditioner.ichol")
    pm_ichol = sys.modules["pymatting.preconditioner.ichol"]  # the package re-exports a function of that name
    real = pm_ichol._ichol

    def refuse_unshifted(*args):
        return -1 if args[8] == 0.0 else real(*args)  # args[8]: the diagonal shift
    monkeypatch.setattr(pm_ichol, "_ichol", refuse_unshifted)
    img = np.repeat(background(seed=2)[..., :1], 3, axis=2)
    prior = np.zeros((H, W), np.float32)
    conf = np.full((H, W), HARD, np.float32)
    conf[20:40, 30:60], prior[20:40, 30:60] = 5.0, 0.3
    with caplog.at_level(logging.DEBUG, logger="mam2_server.stages.matte.priors"):
        out = solve_with_priors(img, prior, conf)
        tri = np.where(disc(48) > 0.99, 1.0, 0.0)
        tri[np.abs(disc(48) - 0.5) < 0.5] = 0.5
        cf = solve_alpha(background(seed=3), tri)
    assert abs(float(out[30, 45]) - 0.3) < 0.05 and np.isfinite(cf).all()
    assert "PERFORMANCE WARNING" not in capsys.readouterr().out
    assert any("PERFORMANCE WARNING" in r.getMessage() for r in caplog.records)
