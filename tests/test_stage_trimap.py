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
    t = AdaptiveTrimapper(colour_gate=None)
    t.begin_pass(None, Pass(1, FORWARD, (1,)), Prompt(frame=1, box=(1, 1, 5, 5)))
    sharp = np.zeros((H, W, 3), np.float32)
    sharp[14:50, 30:66] = 1.0  # the image has a hard edge exactly on the mask edge
    narrow = t.process(images(sharp), Segmentation(square_mask()))
    t.begin_pass(None, Pass(1, FORWARD, (1,)), Prompt(frame=1, box=(1, 1, 5, 5)))
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = 6.0  # fast motion: motion blur expected
    wide = t.process(images(), Segmentation(square_mask(), {"flow": flow, "consistent": np.ones((H, W), bool),
                                                           "colour_prob": np.full((H, W), 0.5, np.float32)}))
    assert unknown_width_at_row(wide) > unknown_width_at_row(narrow) >= 4


def test_adaptive_band_is_temporally_smoothed_and_reset_per_pass():
    t = AdaptiveTrimapper(colour_gate=None, temporal=0.8)
    plan = Pass(1, FORWARD, (1, 2))
    t.begin_pass(None, plan, Prompt(frame=1, box=(1, 1, 5, 5)))
    calm = Segmentation(square_mask(), {"colour_prob": np.ones((H, W), np.float32)})
    busy = Segmentation(square_mask(), {"colour_prob": np.full((H, W), 0.5, np.float32)})
    first = unknown_width_at_row(t.process(images(), calm))
    second = unknown_width_at_row(t.process(images(frame=2), busy))
    t.begin_pass(None, plan, Prompt(frame=1, box=(1, 1, 5, 5)))
    fresh = unknown_width_at_row(t.process(images(frame=2), busy))
    assert first <= second < fresh  # the jump is damped, and a new pass starts clean


def test_colour_gate_opens_see_through_interior():
    t = AdaptiveTrimapper(colour_gate=0.7)
    t.begin_pass(None, Pass(1, FORWARD, (1,)), Prompt(frame=1, box=(1, 1, 5, 5)))
    prob = np.ones((H, W), np.float32)
    prob[25:40, 40:56] = 0.3  # background colours inside the mask
    tri = t.process(images(), Segmentation(square_mask(), {"colour_prob": prob}))
    assert tri[32, 48] == 0.5 and tri[20, 35] == 1.0


def test_colour_gate_is_lenient_for_a_distinct_object_and_strict_for_an_ambiguous_one():
    """A patch of middling object probability stays sure foreground inside an object whose colours
    are mostly clear (its own shading), and is opened up inside one that is mostly ambiguous."""
    t = AdaptiveTrimapper()
    t.begin_pass(None, Pass(1, FORWARD, (1,)), Prompt(frame=1, box=(1, 1, 5, 5)))
    prob = np.ones((H, W), np.float32)
    prob[28:36, 44:52] = 0.6
    tri = t.process(images(), Segmentation(square_mask(), {"colour_prob": prob}))
    assert tri[32, 48] == 1.0

    t.begin_pass(None, Pass(1, FORWARD, (1,)), Prompt(frame=1, box=(1, 1, 5, 5)))
    murky = np.where(square_mask() > 0, 0.6, 0.0).astype(np.float32)
    murky[28:36, 44:52] = 0.6
    murky[14:20, 30:66] = 1.0  # a clearly object-coloured strip keeps some sure foreground
    tri = t.process(images(), Segmentation(square_mask(), {"colour_prob": murky}))
    assert tri[32, 48] == 0.5 and tri[16, 48] == 1.0


def test_colour_gate_does_not_flicker_for_an_object_near_the_boundary():
    """The share of ambiguous pixels wobbling across the threshold does not switch the gate from
    frame to frame; a clear, lasting change does."""
    t = AdaptiveTrimapper(temporal=0.0)
    t.begin_pass(None, Pass(1, FORWARD, (1,)), Prompt(frame=1, box=(1, 1, 5, 5)))
    mask = square_mask()
    inside = np.argwhere(mask > 0)
    centre = np.array([32, 48])
    inside = inside[np.argsort(np.abs(inside - centre).max(axis=1), kind="stable")]  # centre outwards
    shares = []

    def frame_with_share(share, frame):
        prob = np.where(mask > 0, 1.0, 0.0).astype(np.float32)
        ys, xs = inside[:int(share * len(inside))].T
        prob[ys, xs] = 0.6  # ambiguous: above the lenient gate, below the strict one
        tri = t.process(images(frame=frame), Segmentation(mask, {"colour_prob": prob}))
        shares.append(t._ambiguous)
        return tri[32, 48]

    values = [frame_with_share(s, f) for f, s in enumerate([0.20, 0.30, 0.18, 0.30, 0.18, 0.30], start=1)]
    assert min(shares) < t.distinct_below < max(shares), shares  # the smoothed share does cross it
    assert set(values) == {1.0}, (values, shares)  # lenient throughout: the ambiguous patch stays sure
    values = [frame_with_share(0.7, f) for f in range(7, 14)]
    assert values[-1] == 0.5  # lastingly ambiguous: strict
