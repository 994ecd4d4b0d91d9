import numpy as np

from mam2_server.engines.plan import FORWARD, Pass
from mam2_server.prompts import Prompt
from mam2_server.stages.base import FrameImages, Segmentation
from mam2_server.stages.trimap.adaptive import AdaptiveTrimapper, signed_distance
from mam2_server.stages.trimap.band import FixedBandTrimapper, band_trimap

W, H = 96, 64


def square_mask(x0=30, x1=66, y0=14, y1=50):
    m = np.zeros((H, W), np.float32)
    m[y0:y1, x0:x1] = 1
    return m


def images(display=None, frame=1):
    d = np.full((H, W, 3), 0.5, np.float32) if display is None else display
    return FrameImages(frame, d, d)


def unknown_width_at_row(tri, row=32):
    return int((tri[row] == 0.5).sum())


def test_band_trimap_values_and_width():
    tri = band_trimap(square_mask(), 3)
    assert set(np.unique(tri)) <= {0.0, 0.5, 1.0}
    assert tri[32, 48] == 1.0 and tri[2, 2] == 0.0
    assert unknown_width_at_row(tri) == 2 * (3 + 3)  # both edges, 3 px each side
    assert (band_trimap(np.zeros((H, W)), 3) == 0).all()


def test_fixed_band_trimapper_scales_with_resolution():
    t = FixedBandTrimapper(fraction=0.05)
    tri = t.process(images(), Segmentation(square_mask()))
    assert unknown_width_at_row(tri) > 10


def test_signed_distance_sign():
    sd = signed_distance(square_mask())
    assert sd[32, 48] > 0 > sd[2, 2]


def test_adaptive_band_is_wider_where_uncertain():
    t = AdaptiveTrimapper()
    t.begin_pass(None, Pass(1, FORWARD, (1,)), {1: Prompt(frame=1, box=(1, 1, 5, 5))})
    sharp = np.zeros((H, W, 3), np.float32)
    sharp[14:50, 30:66] = 1.0  # the image has a hard edge exactly on the mask edge
    narrow = t.process(images(sharp), Segmentation(square_mask()))
    t.begin_pass(None, Pass(1, FORWARD, (1,)), {1: Prompt(frame=1, box=(1, 1, 5, 5))})
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = 6.0  # fast motion: motion blur expected
    wide = t.process(images(), Segmentation(square_mask(), {"flow": flow, "consistent": np.ones((H, W), bool),
                                                           "colour_prob": np.full((H, W), 0.5, np.float32)}))
    assert unknown_width_at_row(wide) > unknown_width_at_row(narrow) >= 4


def test_adaptive_band_is_temporally_smoothed_and_reset_per_pass():
    t = AdaptiveTrimapper(temporal=0.8)
    plan = Pass(1, FORWARD, (1, 2))
    t.begin_pass(None, plan, {1: Prompt(frame=1, box=(1, 1, 5, 5))})
    calm = Segmentation(square_mask(), {"colour_prob": np.ones((H, W), np.float32)})
    busy = Segmentation(square_mask(), {"colour_prob": np.full((H, W), 0.5, np.float32)})
    first = unknown_width_at_row(t.process(images(), calm))
    second = unknown_width_at_row(t.process(images(frame=2), busy))
    t.begin_pass(None, plan, {1: Prompt(frame=1, box=(1, 1, 5, 5))})
    fresh = unknown_width_at_row(t.process(images(frame=2), busy))
    assert first <= second < fresh  # the jump is damped, and a new pass starts clean


def test_the_inside_of_the_mask_is_sure_foreground_whatever_its_colour():
    # colours the background also has are no evidence that the background shows through: the
    # matte stage decides that from evidence at the pixel, never the trimap from colour
    t = AdaptiveTrimapper()
    t.begin_pass(None, Pass(1, FORWARD, (1,)), {1: Prompt(frame=1, box=(1, 1, 5, 5))})
    murky = np.where(square_mask() > 0, 0.5, 0.0).astype(np.float32)
    tri = t.process(images(), Segmentation(square_mask(), {"colour_prob": murky}))
    assert tri[32, 48] == 1.0 and tri[2, 2] == 0.0
    # a thin part (a 5 px bar) keeps a core of sure foreground however wide the band would be
    bar = np.zeros((H, W), np.float32)
    bar[30:35, 10:86] = 1.0
    t.begin_pass(None, Pass(1, FORWARD, (1,)), {1: Prompt(frame=1, box=(1, 1, 5, 5))})
    tri = t.process(images(), Segmentation(bar, {"colour_prob": np.where(bar > 0, 0.5, 0.0).astype(np.float32)}))
    assert (tri[32, 15:80] == 1.0).all()


def test_a_thin_part_keeps_its_core_on_frames_larger_than_the_proxy():
    # the thickness is measured at proxy size and scaled up: a 12 px bar on a 1200 px frame
    # (2.4x the 480 px proxy) still has sure foreground along its middle
    w, h = 1200, 600
    bar = np.zeros((h, w), np.float32)
    bar[294:306, 100:1100] = 1.0
    disc = np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[:h, :w]
    disc[np.hypot(xx - 600, yy - 150) < 100] = 1.0
    mask = np.maximum(bar, disc)
    d = np.full((h, w, 3), 0.5, np.float32)
    t = AdaptiveTrimapper()
    t.begin_pass(None, Pass(1, FORWARD, (1,)), {1: Prompt(frame=1, box=(1, 1, 5, 5))})
    tri = t.process(FrameImages(1, d, d), Segmentation(mask, {"colour_prob": np.where(mask > 0, 0.5, 0.0).astype(np.float32)}))
    assert (tri[299:301, 200:1000] == 1.0).all()  # the bar's core
    # its edges are unknown, inside too: the cap is 3/4 of the half-thickness (about 4 full-size
    # pixels here), not 3/4 of it counted in proxy pixels (1.5)
    assert (tri[292, 200:1000] == 0.5).all() and (tri[296, 200:1000] == 0.5).all()
    assert tri[150, 600] == 1.0 and (tri[150, 450:750] == 0.5).any()  # the disc: a core and a band


def test_the_ring_the_cut_grew_around_a_drawn_mask_is_unknown():
    # a drawn mask is where the user put the edge; the cut may grow it into a ring of what looks like
    # it (a soft edge's fainter part as readily as a tight mask's missing rim): that ring is for the
    # matte stage to decide, the drawn inside stays sure foreground
    t = AdaptiveTrimapper()
    t.begin_pass(None, Pass(1, FORWARD, (1,)), {1: Prompt(frame=1, mask=square_mask())})
    drawn = square_mask() > 0
    grown = square_mask(24, 72, 8, 56)
    tri = t.process(images(), Segmentation(grown, {"drawn_mask": drawn}))
    assert (tri[32, 24:30] == 0.5).all() and (tri[32, 66:72] == 0.5).all()
    assert tri[32, 48] == 1.0 and tri[2, 2] == 0.0
    t.begin_pass(None, Pass(1, FORWARD, (1,)), {1: Prompt(frame=1, mask=square_mask())})
    tri = t.process(images(), Segmentation(grown, {"drawn_mask": grown > 0}))  # drawn as grown: no ring, sure
    assert tri[32, 27] == 1.0


def test_the_tracker_hands_the_drawn_mask_to_the_trimap_on_its_keyframe_only():
    from mam2_server.io import ArraySource
    from mam2_server.stages.segment.tracker import FlowTracker
    yy, xx = np.mgrid[0:H, 0:W]
    frames = [np.where((np.hypot(xx - 40 - 3 * i, yy - 32) < 14)[..., None], 0.7, 0.1 + 0.05 * ((xx // 4) % 2)[..., None])
              .astype(np.float32) * np.ones(3, np.float32) for i in range(3)]
    src = ArraySource(frames, first_frame=1)
    drawn = (np.hypot(xx - 40, yy - 32) < 11).astype(np.float32)
    tr = FlowTracker()
    tr.begin_pass(src, Pass(1, FORWARD, (1, 2, 3)), {1: Prompt(frame=1, mask=drawn)})
    segs = [tr.process(FrameImages(f, src.linear(f), src.display(f))) for f in (1, 2, 3)]
    assert (segs[0].extras["drawn_mask"] == (drawn > 0.5)).all()
    assert (segs[0].mask > 0.5).sum() > drawn.sum()  # the cut grew the tight mask towards the disc's edge
    assert all("drawn_mask" not in s.extras for s in segs[1:])
