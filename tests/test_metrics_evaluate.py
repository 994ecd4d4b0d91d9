"""evaluate_sequences: frame matching, size checks, channel choice, report formatting and JSON."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mam2_server.eval.evaluate import EvaluationError, evaluate_sequences, format_report, write_json
from mam2_server.eval.metrics import mad
from mam2_server.io.image import write_image


def _write(dirpath: Path, name: str, frames, arrays):
    """Float EXRs (exact values); 2-D arrays as a single 'A' channel, (H, W, 4) as RGBA."""
    dirpath.mkdir(parents=True, exist_ok=True)
    for f, a in zip(frames, arrays):
        channels = ("A",) if a.ndim == 2 else ("R", "G", "B", "A")
        write_image(dirpath / f"{name}.{f:04d}.exr", a if a.ndim == 3 else a[..., None], channels=channels,
                    pixel_type="float")
    return str(dirpath / f"{name}.####.exr")


def _alphas(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.random((12, 16)).astype(np.float32) for _ in range(n)]


def test_evaluate_matches_metrics(tmp_path):
    frames = [1001, 1002, 1003]
    gt = _alphas(3, 0)
    pred = _alphas(3, 1)
    gt_pat = _write(tmp_path / "gt", "alpha", frames, gt)
    # prediction stored as RGBA: the 'A' channel is used
    rgba = [np.concatenate([np.zeros((12, 16, 3), np.float32), p[..., None]], 2) for p in pred]
    pred_pat = _write(tmp_path / "pred", "matte", frames, rgba)
    report = evaluate_sequences(pred_pat, gt_pat)
    assert report["frames"] == frames
    assert report["per_frame"]["MAD"] == pytest.approx([mad(p, g) for p, g in zip(pred, gt)])
    assert report["per_frame"]["dtSSD"][0] == 0.0
    assert report["summary"]["MAD"] == pytest.approx(np.mean(report["per_frame"]["MAD"]))
    sub = evaluate_sequences(pred_pat, gt_pat, frames=[1002], metrics=("MAD", "MSE"))
    assert sub["frames"] == [1002] and set(sub["summary"]) == {"MAD", "MSE"}

    text = format_report(report, per_frame=True)
    assert "1002" in text and "mean" in text and "dtSSD" in text
    both = format_report({"a": report, "b": sub})
    assert both.splitlines()[2].startswith("a ") and both.splitlines()[3].rstrip().endswith("-")

    out = tmp_path / "reports" / "m.json"
    write_json(report, out)
    assert json.loads(out.read_text())["summary"]["MAD"] == pytest.approx(report["summary"]["MAD"])


def test_missing_frames_named(tmp_path):
    gt_pat = _write(tmp_path / "gt", "alpha", [1, 2, 3], _alphas(3, 0))
    pred_pat = _write(tmp_path / "pred", "alpha", [1, 3], _alphas(2, 1))
    with pytest.raises(EvaluationError, match=r"prediction .* missing frame\(s\) 2 .*alpha\.0002\.exr"):
        evaluate_sequences(pred_pat, gt_pat)
    with pytest.raises(EvaluationError, match=r"ground truth .* missing frame\(s\) 7"):
        evaluate_sequences(pred_pat, gt_pat, frames=[1, 7])
    with pytest.raises(EvaluationError, match="no ground-truth frames"):
        evaluate_sequences(pred_pat, str(tmp_path / "none" / "a.####.exr"))


def test_size_mismatch_named(tmp_path):
    gt_pat = _write(tmp_path / "gt", "alpha", [5], _alphas(1, 0))
    pred_pat = _write(tmp_path / "pred", "alpha", [5], [np.zeros((10, 16), np.float32)])
    with pytest.raises(EvaluationError, match=r"frame 5: .*pred/alpha\.0005\.exr is 16x10 but .*16x12"):
        evaluate_sequences(pred_pat, gt_pat)


def test_zero_matte_baseline_on_synthetic_clip(tmp_path):
    from mam2_server.io.image import write_alpha
    from mam2_server.synth import make_clip, write_clip

    clip = make_clip("smoke", num_frames=3, width=64, height=48, seed=0)
    paths = write_clip(clip, tmp_path / "shot")
    (tmp_path / "zero").mkdir()
    for n in clip.frames:
        write_alpha(str(tmp_path / "zero" / f"zero.{n:04d}.exr"), np.zeros((48, 64), np.float32))
    report = evaluate_sequences(str(tmp_path / "zero" / "zero.####.exr"), paths.alphas)
    assert report["frames"] == clip.frames
    expected = np.mean([clip.alpha(n).mean() * 1e3 for n in clip.frames])
    assert report["summary"]["MAD"] == pytest.approx(expected, rel=2e-3)
    perfect = evaluate_sequences(paths.alphas, paths.alphas)
    assert perfect["summary"]["MAD"] == 0.0 and perfect["summary"]["Conn"] == 0.0
