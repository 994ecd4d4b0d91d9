"""Matting metrics against hand-computed values and a slow reference implementation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mam2_server.eval.metrics import (
    METRICS, SequenceMetrics, conn, dtssd, format_table, gauss_gradient_filters, grad, mad, mse,
)


def test_mad_mse_exact_2x2():
    p = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    g = np.array([[0.0, 1.0], [0.5, 0.25]], np.float32)
    assert mad(p, g) == pytest.approx(250.0)   # mean(0, .5, .5, 0) = .25, x 1e3
    assert mse(p, g) == pytest.approx(125.0)   # mean(0, .25, .25, 0) = .125, x 1e3
    assert mad(g, g) == 0.0 and mse(g, g) == 0.0


def test_inputs_validated():
    with pytest.raises(ValueError, match="gt is"):
        mad(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        mse(np.full((2, 2), np.nan), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        mad(np.zeros((2, 2, 3)), np.zeros((2, 2, 3)))
    # (H, W, 1) is accepted, and out-of-range values are clipped to [0, 1]
    assert mad(np.full((2, 2, 1), 2.0), np.ones((2, 2))) == 0.0


# ---- Grad: a slow, literal implementation of RVM's evaluate_lr.py MetricGRAD ----

def _slow_filters(sigma=1.4, eps=1e-2):
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * eps)))
    size = 2 * half + 1
    gaussian = lambda x: math.exp(-x ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    dgaussian = lambda x: -x * gaussian(x) / sigma ** 2
    fx = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            fx[i, j] = gaussian(i - half) * dgaussian(j - half)
    fx /= math.sqrt((fx ** 2).sum())
    return fx, fx.T


def _slow_correlate_replicate(img, k):
    h, w = img.shape
    r = k.shape[0] // 2
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            s = 0.0
            for i in range(-r, r + 1):
                for j in range(-r, r + 1):
                    yy = min(max(y + i, 0), h - 1)
                    xx = min(max(x + j, 0), w - 1)
                    s += k[i + r, j + r] * img[yy, xx]
            out[y, x] = s
    return out


def _slow_grad(pred, gt):
    fx, fy = _slow_filters()

    def norm(a):
        a = a.astype(np.float64)
        lo, hi = a.min(), a.max()
        return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)

    def mag(a):
        return np.sqrt(_slow_correlate_replicate(a, fx) ** 2 + _slow_correlate_replicate(a, fy) ** 2)

    return ((mag(norm(gt)) - mag(norm(pred))) ** 2).sum() / 1000


def test_gradient_filter_shape_and_norm():
    fx, fy = gauss_gradient_filters(1.4)
    assert fx.shape == (9, 9)
    assert np.sum(fx ** 2) == pytest.approx(1.0)
    np.testing.assert_allclose(fx, _slow_filters()[0], rtol=1e-12)
    np.testing.assert_array_equal(fy, fx.T)
    assert fx[4, 0] > 0 > fx[4, 8]  # x-derivative along columns (correlation form)


def test_grad_zero_for_identical():
    rng = np.random.default_rng(0)
    a = rng.random((12, 10)).astype(np.float32)
    assert grad(a, a) == 0.0


def test_grad_step_matches_slow_reference():
    gt = np.zeros((10, 12), np.float32)
    gt[:, 6:] = 1.0
    pred = np.zeros((10, 12), np.float32)
    pred[:, 4:] = 0.5  # min-max normalised to a 0/1 step two pixels left
    pred[2:5, 1] = 0.25
    value = grad(pred, gt)
    assert value == pytest.approx(_slow_grad(pred, gt), rel=1e-5)
    assert value > 0
    # all-zero prediction: normalisation maps a constant to zeros; Grad = sum |grad gt|^2 / 1e3
    assert grad(np.zeros_like(gt), gt) == pytest.approx(_slow_grad(np.zeros_like(gt), gt), rel=1e-5)


def test_grad_random_matches_slow_reference():
    rng = np.random.default_rng(1)
    pred = rng.random((9, 11)).astype(np.float32)
    gt = rng.random((9, 11)).astype(np.float32)
    assert grad(pred, gt) == pytest.approx(_slow_grad(pred, gt), rel=1e-5)


# ---- Conn ----

def test_conn_zero_for_identical():
    rng = np.random.default_rng(2)
    a = rng.random((16, 16)).astype(np.float32)
    assert conn(a, a) == 0.0


def test_conn_hand_computed_single_pixel():
    # t = 0.1: gt>=t = [T, T], pred>=t = [T, F] -> component {0}; pixel 1 leaves at once -> round-down 0.
    # pixel 0 stays up to t = 1.0 -> 1.  phi_gt = [1, 1 - 0.5], phi_pred = [1, 1]  -> 0.5 / 1e3
    gt = np.array([[1.0, 0.5]], np.float32)
    pred = np.array([[1.0, 0.0]], np.float32)
    assert conn(pred, gt) == pytest.approx(0.5e-3)


def test_conn_penalises_disconnected_island():
    # pixel 3 is not 4-connected to the main component {0, 1} -> round-down 0 from t = 0.1:
    # phi_gt[3] = 1 - 1 = 0, phi_pred[3] = 1 - 0.6 = 0.4 -> 0.4 / 1e3 (MAD sees only 0.1 there)
    gt = np.array([[1.0, 1.0, 0.0, 1.0]], np.float32)
    pred = np.array([[1.0, 1.0, 0.0, 0.6]], np.float32)
    assert conn(pred, gt) == pytest.approx(0.4e-3, rel=1e-6)
    # diagonal neighbours are not 4-connected
    # (8-connected, pixel (1,1) would stay to t = 0.9 -> d = 0.1 < 0.15 -> 0); 4-connected it is an
    # island of its own (ties go to the first in scan order): phi_gt = 0, phi_pred = 0.1
    gt2 = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    pred2 = np.array([[1.0, 0.0], [0.0, 0.9]], np.float32)
    assert conn(pred2, gt2) == pytest.approx(0.1e-3, rel=1e-5)


def test_conn_small_differences_ignored():
    # d = alpha - round_down below 0.15 does not count
    gt = np.array([[1.0, 0.1]], np.float32)
    pred = np.array([[1.0, 0.0]], np.float32)
    assert conn(pred, gt) == 0.0


# ---- dtSSD ----

def test_dtssd_exact_three_frames():
    g = [np.zeros((2, 2), np.float32), np.array([[.5, 0], [0, 0]], np.float32), np.array([[.5, .5], [0, 0]], np.float32)]
    p = [np.zeros((2, 2), np.float32), np.array([[1, 0], [0, 0]], np.float32), np.array([[1, 0], [0, .5]], np.float32)]
    assert dtssd(p[1], p[0], g[1], g[0]) == pytest.approx(25.0)            # sqrt(.25 / 4) x 1e2
    assert dtssd(p[2], p[1], g[2], g[1]) == pytest.approx(math.sqrt(0.125) * 100)
    seq = SequenceMetrics()
    for pi, gi in zip(p, g):
        seq.update(pi, gi)
    per = seq.per_frame()
    assert per["dtSSD"] == pytest.approx([0.0, 25.0, math.sqrt(0.125) * 100])
    assert seq.summary()["dtSSD"] == pytest.approx((25.0 + math.sqrt(0.125) * 100) / 3)  # frame 0 included
    assert len(seq) == 3
    assert set(per) == set(METRICS)
    assert seq.summary()["MAD"] == pytest.approx(np.mean([mad(a, b) for a, b in zip(p, g)]))


def test_sequence_subset_and_errors():
    seq = SequenceMetrics(metrics=("MAD",))
    seq.update(np.ones((3, 3)), np.zeros((3, 3)))
    assert seq.summary() == {"MAD": pytest.approx(1000.0)}
    with pytest.raises(ValueError, match="unknown metrics"):
        SequenceMetrics(metrics=("SAD",))
    assert math.isnan(SequenceMetrics().summary()["MAD"])


def test_scales_on_all_zero_baseline():
    gt = np.zeros((48, 64), np.float32)
    gt[10:30, 20:40] = 1.0
    pred = np.zeros_like(gt)
    frac = 400 / gt.size
    assert mad(pred, gt) == pytest.approx(frac * 1e3)
    assert mse(pred, gt) == pytest.approx(frac * 1e3)
    # Conn: object pixels never leave (pred is 0 -> intersection empty -> all round down to 0)
    # phi_gt = 1 - 1 = 0 on the object, phi_pred = 1 -> 400 / 1e3
    assert conn(pred, gt) == pytest.approx(0.4)


def test_format_table_aligned():
    text = format_table({"zero": {"MAD": 12.3456, "Conn": 1.0}, "classical-long-name": {"MAD": 1.5}})
    lines = text.splitlines()
    assert lines[0].split() == ["MAD", "Conn"]
    assert lines[2].startswith("zero ") and "12.346" in lines[2]
    assert lines[3].rstrip().endswith("-")
    assert len({len(l) for l in lines[2:]}) == 1  # padded to the same width
