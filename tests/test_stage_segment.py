import numpy as np
import pytest

from mam2_server.engines.plan import BACKWARD, FORWARD, Pass
from mam2_server.io import ArraySource
from mam2_server.prompts import Point, Prompt
from mam2_server.stages.base import FrameImages
from mam2_server.stages.segment.common import cut_from_prompt, prompt_seeds, proxy_shape, to_u8
from mam2_server.stages.segment.grabcut import GrabCutSegmenter
from mam2_server.stages.segment.tracker import FlowTracker

W, H = 96, 64


def scene(n=5, dx=5, cx0=30, r=12, seed=0):
    """A textured reddish disc moving right over a bluish textured background (linear RGB)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    bg = 0.04 + 0.05 * ((xx // 6 + yy // 6) % 2)[..., None] * np.array([0.3, 0.6, 1.0])
    bg = bg + 0.01 * rng.random((H, W, 3))
    frames, alphas = [], []
    for i in range(n):
        cx = cx0 + dx * i
        d = np.sqrt((xx + 0.5 - cx) ** 2 + (yy + 0.5 - 32) ** 2)
        a = np.clip(r + 0.5 - d, 0, 1)[..., None]
        fg = np.array([0.7, 0.25, 0.08]) * (0.8 + 0.2 * ((xx - cx) // 4 % 2))[..., None]
        frames.append((a * fg + (1 - a) * bg).astype(np.float32))
        alphas.append(a[..., 0].astype(np.float32))
    return frames, alphas


def run_segmenter(seg, src, prompt, plan):
    seg.begin_pass(src, plan, {prompt.frame: prompt})
    return [seg.process(FrameImages(f, src.linear(f), src.display(f))) for f in plan.frames]


def iou(a, b):
    a, b = a > 0.5, b > 0.5
    return (a & b).sum() / max(1, (a | b).sum())


def test_proxy_shape_never_upscales():
    assert proxy_shape(64, 96, 480) == (64, 96)
    assert proxy_shape(1080, 1920, 480) == (270, 480)


def test_prompt_seeds_box_points_and_off_frame_box():
    p = Prompt(frame=1, box=(-20, -20, 40, 30), points=(Point(10, 10, 1), Point(60, 50, 0)))
    seeds = prompt_seeds(p, (H, W), (H, W))
    assert seeds[5, 5] in (2, 3)  # inside the clipped box: probable fg (or sure fg near the point)
    assert seeds[10, 10] == 1 and seeds[50, 60] == 0
    only_points = prompt_seeds(Prompt(frame=1, points=(Point(30, 30, 1),)), (H, W), (H, W))
    assert only_points[30, 30] == 1 and (only_points == 3).any()


def test_grabcut_segmenter_follows_a_slowly_moving_disc():
    frames, alphas = scene(dx=2)
    src = ArraySource(frames, first_frame=1)
    plan = Pass(1, FORWARD, tuple(src.frames))
    out = run_segmenter(GrabCutSegmenter(), src, Prompt(frame=1, box=(14, 16, 46, 48)), plan)
    assert all(iou(s.mask, a) > 0.85 for s, a in zip(out, alphas))


def test_flow_tracker_tracks_forward_and_backward():
    frames, alphas = scene()
    src = ArraySource(frames, first_frame=1)
    fwd = run_segmenter(FlowTracker(), src, Prompt(frame=1, box=(14, 16, 46, 48)), Pass(1, FORWARD, (1, 2, 3, 4, 5)))
    assert all(iou(s.mask, a) > 0.85 for s, a in zip(fwd, alphas))
    assert "flow" in fwd[1].extras and fwd[1].extras["flow_to"] == 1
    # backward pass: the keyframe (5) is not in the pass but starts the chain
    bwd = run_segmenter(FlowTracker(), src, Prompt(frame=5, box=(34, 16, 66, 48)), Pass(5, BACKWARD, (4, 3, 2, 1)))
    assert all(iou(s.mask, alphas[f - 1]) > 0.85 for s, f in zip(bwd, (4, 3, 2, 1)))


def test_object_leaving_the_frame_gives_an_empty_mask():
    frames, alphas = scene(n=6, dx=14, cx0=40)  # leaves on the right by frame 5
    assert alphas[-1].max() == 0
    src = ArraySource(frames, first_frame=1)
    out = run_segmenter(FlowTracker(), src, Prompt(frame=1, box=(24, 16, 56, 48)), Pass(1, FORWARD, tuple(src.frames)))
    assert out[-1].mask.max() == 0.0


def test_collapsed_grabcut_gives_nothing_for_a_box_but_keeps_a_drawn_mask():
    # nothing tells the object from its background: a guessed shape could be worse than no matte
    flat = np.full((H, W, 3), 0.3, np.float32)
    assert not cut_from_prompt(to_u8(flat), Prompt(frame=1, box=(20, 10, 60, 50)), (H, W)).any()
    drawn = np.zeros((H, W), np.float32)
    drawn[15:45, 25:55] = 1
    mask = cut_from_prompt(to_u8(flat), Prompt(frame=1, mask=drawn, box=(20, 10, 60, 50)), (H, W))
    assert mask[20:40, 30:50].all()


def test_flow_tracker_keeps_to_a_drawn_mask_on_its_keyframe():
    frames, alphas = scene(n=3)
    src = ArraySource(frames, first_frame=1)
    drawn = (alphas[0] > 0.5).astype(np.float32)
    drawn[:, :30] = 0  # the user masked only the right half: that is the object
    out = run_segmenter(FlowTracker(), src, Prompt(frame=1, mask=drawn), Pass(1, FORWARD, (1, 2, 3)))
    assert np.array_equal(out[0].mask > 0.5, drawn > 0.5)


def test_a_later_keyframe_keeps_the_earlier_keyframes_colour_models():
    # a green square sits beside the disc: outside the first keyframe's box (so its colour is learnt
    # as background there), inside the second's. From its box alone GrabCut takes the square and the
    # pass's colour model calls it object; the first keyframe's models (its anchor) make it less sure.
    frames, alphas = scene(n=4, dx=3)
    for f in frames:
        f[24:40, 64:80] = (0.05, 0.5, 0.1)
    src = ArraySource(frames, first_frame=1)
    first, second = Prompt(frame=1, box=(14, 16, 46, 48)), Prompt(frame=3, box=(18, 12, 84, 52))
    plan = Pass(3, FORWARD, (3, 4))
    alone = run_segmenter(FlowTracker(), src, second, plan)
    seg = FlowTracker()
    seg.begin_pass(src, plan, {1: first, 3: second})
    informed = [seg.process(FrameImages(f, src.linear(f), src.display(f))) for f in plan.frames]
    assert alone[0].mask[32, 72] > 0.5  # the square, taken for the object
    square, disc = (32, 72), (32, 45)
    assert informed[1].extras["colour_prob"][square] < alone[1].extras["colour_prob"][square] - 0.02
    assert informed[1].extras["colour_prob"][disc] > 0.5  # the object is still the object
@pytest.mark.parametrize("seg_cls", [GrabCutSegmenter, FlowTracker])
def test_segmenters_are_deterministic(seg_cls):
    frames, _ = scene(n=3)
    src = ArraySource(frames, first_frame=1)
    plan = Pass(1, FORWARD, (1, 2, 3))
    p = Prompt(frame=1, box=(14, 16, 46, 48))
    a = run_segmenter(seg_cls(), src, p, plan)
    b = run_segmenter(seg_cls(), src, p, plan)
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a, b))
