"""`mam2 bench stills` on a tiny folder in the alphamatting.com layout."""
import argparse
import json

import cv2
import numpy as np

from mam2_server.bench import stills


def _still(folder, alpha, trimap=False):
    folder.mkdir()
    rng = np.random.default_rng(0)
    h, w = alpha.shape
    bg = rng.uniform(0, 255, (h // 4, w // 4, 3)).astype(np.uint8)
    bg = cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)
    fg = np.array([40, 200, 230], np.float32)
    img = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    cv2.imwrite(str(folder / "image.png"), np.clip(img + 0.5, 0, 255).astype(np.uint8))
    cv2.imwrite(str(folder / "alpha.png"), (alpha * 255 + 0.5).astype(np.uint8))
    if trimap:
        tri = np.where(alpha > 0.99, 255, 0).astype(np.uint8)
        edge = cv2.dilate(((alpha > 0.01) & (alpha < 0.99)).astype(np.uint8), np.ones((5, 5), np.uint8))
        tri[edge > 0] = 128
        cv2.imwrite(str(folder / "trimap.png"), tri)


def test_stills_bench_scores_each_image_and_keeps_every_reference_in_the_mean(tmp_path):
    yy, xx = np.mgrid[:64, :96]
    disc = np.clip(16.5 - np.hypot(xx - 48, yy - 32), 0, 1).astype(np.float32)
    _still(tmp_path / "a_no_trimap", disc)
    _still(tmp_path / "b_trimap", disc, trimap=True)
    _still(tmp_path / "c_empty", np.zeros_like(disc))
    out = tmp_path / "stills.json"
    args = argparse.Namespace(folder=tmp_path, engines="baseline", prompt="box", only=None, max_side=0,
                              json_out=str(out))
    assert stills.run(args) == 0
    report = json.loads(out.read_text())
    assert [r["image"] for r in report["images"]] == ["a_no_trimap", "b_trimap"]  # the empty one is skipped
    # the trimap reference exists for the second image only, and still reaches the mean
    assert "trimap-cf" not in report["images"][0] and "trimap-cf" in report["images"][1]
    assert set(report["mean"]) == {"zero", "trimap-cf", "baseline"}
    assert report["mean"]["baseline"]["MAD"] < 0.2 * report["mean"]["zero"]["MAD"]
