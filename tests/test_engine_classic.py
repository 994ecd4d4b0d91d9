import numpy as np
import pytest

from mam2_server.engines import create_engine
from mam2_server.engines.classic import trimap_and_matte_stages
from mam2_server.engines.plan import affected_frames
from mam2_server.io import ArraySource
from mam2_server.prompts import Point, Prompt, PromptError, keyframes
from mam2_server.stages.base import Matter, Trimapper
from mam2_server.synth import make_clip

W, H = 96, 64


def mad(results, alphas):
    return float(np.mean([np.abs(r.alpha - a).mean() for r, a in zip(results, alphas)]))


def moving_disc(n=6, dx=5, cx0=30, r=12):
    yy, xx = np.mgrid[0:H, 0:W]
    bg = 0.04 + 0.06 * ((xx // 6 + yy // 6) % 2)[..., None] * np.array([0.3, 0.6, 1.0])
    frames, alphas = [], []
    for i in range(n):
        d = np.sqrt((xx + 0.5 - (cx0 + dx * i)) ** 2 + (yy + 0.5 - 32) ** 2)
        a = np.clip(r + 0.5 - d, 0, 1)
        frames.append((a[..., None] * np.array([0.7, 0.25, 0.08]) + (1 - a[..., None]) * bg).astype(np.float32))
        alphas.append(a.astype(np.float32))
    return frames, alphas


def test_registry_and_hybrid_hook():
    eng = create_engine("classic")
    assert eng.name == "classic" and eng.chained is True
    trimapper, matter = trimap_and_matte_stages()
    assert isinstance(trimapper, Trimapper) and isinstance(matter, Matter)


@pytest.mark.slow
def test_classic_beats_baseline_and_the_empty_matte_on_a_small_clip():
    clip = make_clip("foliage", num_frames=6, width=160, height=90, seed=1, camera="locked")
    alphas = [clip.alpha(f) for f in clip.frames]
    prompt = Prompt(frame=clip.frames[0], box=clip.prompt.box)
    classic = list(create_engine("classic").run(clip, [prompt]))
    baseline = list(create_engine("baseline").run(clip, [prompt]))
    zero = float(np.mean([a.mean() for a in alphas]))
    assert [r.frame for r in classic] == clip.frames
    assert all(r.alpha.shape == (90, 160) and r.alpha.dtype == np.float32 for r in classic)
    assert mad(classic, alphas) < 0.5 * mad(baseline, alphas)
    assert mad(classic, alphas) < 0.75 * zero


def test_retracking_recomputes_only_the_affected_frames():
    frames, _ = moving_disc(n=6)
    src = ArraySource(frames, first_frame=1)
    eng = create_engine("classic")
    old = [Prompt(frame=1, box=(14, 16, 46, 48)), Prompt(frame=4, box=(29, 16, 61, 48))]
    first = {r.frame: r.alpha for r in eng.run(src, old)}
    new = [old[0], Prompt(frame=4, box=(31, 14, 63, 50), points=(Point(45, 32, 1),))]
    redo = affected_frames(src.frames, keyframes(old), keyframes(new), chained=eng.chained)
    assert redo == [4, 5, 6]
    again = {r.frame: r.alpha for r in eng.run(src, new, only=redo)}
    assert sorted(again) == redo
    # the untouched pass, recomputed from scratch with the new prompts, is bit-identical
    full = {r.frame: r.alpha for r in create_engine("classic").run(src, new)}
    for f in (1, 2, 3):
        assert np.array_equal(full[f], first[f])
    for f in redo:
        assert np.array_equal(full[f], again[f])


def test_object_leaving_the_frame_gives_alpha_zero():
    frames, alphas = moving_disc(n=6, dx=14, cx0=40)
    assert alphas[-1].max() == 0
    out = list(create_engine("classic").run(ArraySource(frames, first_frame=1), [Prompt(frame=1, box=(24, 16, 56, 48))]))
    assert out[-1].alpha.max() == 0.0
    assert np.abs(out[0].alpha - alphas[0]).mean() < 0.02


def test_single_frame_shot_and_partially_off_frame_box():
    frames, alphas = moving_disc(n=1, cx0=8)  # the disc is cut by the left edge
    src = ArraySource(frames, first_frame=7)
    for name in ("classic", "baseline"):
        out = list(create_engine(name).run(src, [Prompt(frame=7, box=(-30, 10, 30, 54))]))
        assert [r.frame for r in out] == [7]
        assert np.abs(out[0].alpha - alphas[0]).mean() < 0.03


def test_backward_pass_from_a_later_keyframe():
    frames, alphas = moving_disc(n=5)
    out = list(create_engine("classic").run(ArraySource(frames, first_frame=1), [Prompt(frame=3, box=(24, 16, 56, 48))]))
    assert sorted(r.frame for r in out) == [1, 2, 3, 4, 5]
    for r in out:
        assert np.abs(r.alpha - alphas[r.frame - 1]).mean() < 0.02


@pytest.mark.parametrize("prompt, message", [
    (Prompt(frame=1, box=(200, 10, 300, 40)), "outside"),
    (Prompt(frame=1, box=(40, 10, 40, 40)), "empty box"),
    (Prompt(frame=1, points=(Point(500, 5, 1),)), "outside"),
    (Prompt(frame=99, box=(10, 10, 40, 40)), "outside the shot"),
])
def test_bad_prompts_raise_prompt_error(prompt, message):
    frames, _ = moving_disc(n=2)
    with pytest.raises(PromptError, match=message):
        list(create_engine("classic").run(ArraySource(frames, first_frame=1), [prompt]))


def test_points_only_prompt():
    frames, alphas = moving_disc(n=3)
    out = list(create_engine("classic").run(ArraySource(frames, first_frame=1), [Prompt(frame=1, points=(Point(30, 32, 1),))]))
    assert np.abs(out[0].alpha - alphas[0]).mean() < 0.05


def test_classic_trimap_and_matte_accept_masks_without_tracker_extras():
    """The hybrid engine feeds its own masks (no flow, no colour model) into classic's stages."""
    from mam2_server.engines.plan import FORWARD, Pass
    from mam2_server.stages.base import FrameImages, Segmentation

    frames, alphas = moving_disc(n=4)
    src = ArraySource(frames, first_frame=1)
    trimapper, matter = trimap_and_matte_stages()
    plan = Pass(1, FORWARD, (1, 2, 3, 4))
    prompt = Prompt(frame=1, box=(14, 16, 46, 48))
    trimapper.begin_pass(src, plan, {1: prompt})
    matter.begin_pass(src, plan, {1: prompt})
    for f in plan.frames:
        images = FrameImages(f, src.linear(f), src.display(f))
        seg = Segmentation((alphas[f - 1] > 0.5).astype(np.float32))
        alpha = matter.process(images, seg, trimapper.process(images, seg))
        assert alpha.shape == (H, W) and np.abs(alpha - alphas[f - 1]).mean() < 0.02


def _gt_mask(alpha):
    """A good segmentation's mask: alpha > 0.5 eroded 2 px (what `hybrid` gets from SAM2)."""
    import cv2
    return (cv2.erode((alpha > 0.5).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0).astype(np.float32)


def _toy_in_its_backgrounds_colours(n, step=2.0):
    """A textured background and an opaque disc (with a thin arm) patterned in two of the
    background's own colours, drifting `step` px a frame: the plush toy in front of curtains."""
    import cv2
    rng = np.random.default_rng(11)
    bg = cv2.GaussianBlur(rng.random((90, 160, 3)).astype(np.float32), (0, 0), 1.2)
    bg = (0.05 + 0.4 * (bg - bg.min()) / (bg.max() - bg.min())).astype(np.float32)
    lo, hi = np.percentile(bg.reshape(-1, 3), [10, 90], axis=0)
    t = cv2.GaussianBlur(rng.random((90, 160)).astype(np.float32), (0, 0), 4.0)
    t = ((t - t.min()) / (t.max() - t.min()))[..., None]
    fg = t * hi + (1 - t) * lo
    yy, xx = np.mgrid[0:90, 0:160]
    frames, alphas = [], []
    for i in range(n):
        cx = 60 + step * i
        a = np.clip(20.5 - np.hypot(xx + 0.5 - cx, yy + 0.5 - 45), 0, 1)
        a = np.maximum(a, ((np.abs(yy + 0.5 - 45) < 3) & (xx > cx) & (xx < cx + 45)).astype(np.float32))  # the arm
        f = cv2.warpAffine(fg, np.float32([[1, 0, step * i], [0, 1, 0]]), (160, 90), borderMode=cv2.BORDER_REFLECT)
        frames.append((a[..., None] * f + (1 - a[..., None]) * bg).astype(np.float32))
        alphas.append(a.astype(np.float32))
    return ArraySource(frames, first_frame=1001), alphas


@pytest.mark.parametrize("frames", [1, 5])
def test_a_mask_prompt_on_an_object_in_its_backgrounds_colours_keeps_it_opaque(frames):
    """The plush toy in front of curtains of its own colours, prompted with a correct mask: never worse
    than the mask alone on its keyframe and opaque inside (its thin arm too). Tracked frames keep it
    mostly opaque (tracking by colour loses some of an object in its background's colours)."""
    src, alphas = _toy_in_its_backgrounds_colours(frames)
    mask = _gt_mask(alphas[0])
    out = list(create_engine("classic").run(src, [Prompt(frame=1001, mask=mask)]))
    assert np.abs(out[0].alpha - alphas[0]).mean() <= np.abs(mask - alphas[0]).mean()
    assert out[0].alpha[alphas[0] > 0.99].mean() > 0.95
    for r, a in zip(out[1:], alphas[1:]):
        assert r.alpha[a > 0.99].mean() > 0.85


def test_on_a_still_classic_is_at_least_as_good_as_baseline():
    for kind, seed in (("solid", 0), ("hair", 0), ("foliage", 1)):
        clip = make_clip(kind, width=160, height=90, seed=seed, condition="still")
        a = clip.alpha(clip.frames[0])
        prompt = [Prompt(frame=clip.frames[0], box=clip.prompt.box)]
        err = {n: np.abs(next(iter(create_engine(n).run(clip, prompt))).alpha - a).mean() for n in ("classic", "baseline")}
        assert err["classic"] <= 1.05 * err["baseline"] + 1e-3, (kind, err)


def test_a_layer_moving_off_its_background_is_matted_not_filled():
    """A half-transparent veil crossing a textured background: the frames where it has moved on
    reveal what is behind it, and that is the evidence that makes it see-through."""
    import cv2
    rng = np.random.default_rng(4)
    bg = cv2.GaussianBlur(rng.random((90, 240, 3)).astype(np.float32), (0, 0), 1.5)
    bg = 0.05 + 0.4 * (bg - bg.min()) / (bg.max() - bg.min())
    yy, xx = np.mgrid[0:90, 0:160]
    frames, alphas = [], []
    for i in range(8):
        a = 0.45 * np.clip(18.5 - np.hypot(xx + 0.5 - (30 + 12 * i), yy + 0.5 - 45), 0, 1)
        frames.append((a[..., None] * np.float32([0.8, 0.8, 0.85]) + (1 - a[..., None]) * bg[:, 4 * i:4 * i + 160]).astype(np.float32))
        alphas.append(a.astype(np.float32))
    src = ArraySource(frames, first_frame=1)
    out = list(create_engine("classic").run(src, [Prompt(frame=1, box=(8, 23, 53, 68))]))
    zero = float(np.mean([a.mean() for a in alphas]))
    later = [np.abs(r.alpha - a).mean() for r, a in zip(out, alphas)][2:]  # once something was revealed
    assert np.mean(later) < 0.5 * zero


def test_a_second_correct_keyframe_does_not_make_the_shot_worse():
    for kind, seed, camera in (("hair", 0, "moving"), ("solid", 1, "locked")):
        clip = make_clip(kind, num_frames=6, width=160, height=90, seed=seed, camera=camera)
        alphas = [clip.alpha(f) for f in clip.frames]
        from mam2_server.synth import prompt_from_alpha
        first = Prompt(frame=clip.frames[0], box=clip.prompt.box)
        second = Prompt(frame=clip.frames[3], box=prompt_from_alpha(alphas[3], clip.frames[3]).box)
        one = mad(list(create_engine("classic").run(clip, [first])), alphas)
        two = mad(list(create_engine("classic").run(clip, [first, second])), alphas)
        assert two <= one + 2e-3, (kind, one, two)
