"""The MAM2 network on CUDA (every test skipped without a CUDA device).

Random weights, fixed seeds, the StreamingTracker end to end (keyframe + tracked frames,
matter on): CUDA float32 against CPU float32, bf16 autocast against CUDA float32,
torch.compile against eager, a flat device memory bank, and peak memory per frame.

Bounds. float32 runs (CPU vs CUDA, compiled vs eager) differ only in summation order:
TF32 is switched off here, so logits agree to ~1e-5 relative; the bounds (2e-3
relative, 99.5 % trimap agreement) leave room for that noise being amplified over
three tracked frames and for argmax ties, while a wrong op, dtype or device transfer
moves logits by O(1) of their range. bf16 autocast was measured with CPU autocast
(tiny and hiera_t at 512): logits within 1-2 % of their range, trimap argmax agreement
>= 0.989, alpha MAD <= 0.009; the bounds (10 %, 0.95, 0.03) are 3-5x that, while a bf16
bug (overflow, a memory stored in the wrong dtype, a missing cast) gives NaN/inf or
errors of the order of the values themselves.
"""
import shutil

import numpy as np
import pytest
import torch

from mam2_server.model.build import build_mam2
from mam2_server.model.config import preset
from mam2_server.model.tracker import StreamingTracker
from mam2_server.prompts import Prompt
from test_model_tracker import _frames

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# config -> model input size for the comparisons (hiera_t at 512 keeps the CPU reference cheap)
SIZES = {"tiny": 128, "hiera_t": 512}
F32 = dict(logit_rel=2e-3, tri_agree=0.995, alpha_mad=2e-3, unknown_mad=5e-3)
BF16 = dict(logit_rel=0.1, tri_agree=0.95, alpha_mad=0.03, unknown_mad=0.05)


@pytest.fixture(autouse=True)
def _no_tf32():
    """Full float32 matmuls/convs on CUDA, so float32 comparisons are tight (restored afterwards)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


_cpu_cache: dict = {}


def _cpu_model(name):
    if name not in _cpu_cache:
        _cpu_cache[name] = build_mam2(preset(name, image_size=SIZES[name]), device="cpu", seed=0)
    return _cpu_cache[name]


def _on_cuda(name, **changes):
    """The CPU model's weights in a CUDA model whose config has `changes` (autocast, compile)."""
    cpu = _cpu_model(name)
    model = build_mam2(cpu.config.replace(**changes), device="cuda", seed=0)
    model.load_state_dict(cpu.state_dict())
    return model


def _track(model, frames):
    tracker = StreamingTracker(model)
    h, w = frames[0].shape[:2]
    shot = tracker.new_shot(w, h)
    outs = [tracker.add_keyframe(shot, 0, frames[0], Prompt(frame=0, box=(0.15 * w, 0.3 * h, 0.45 * w, 0.6 * h)))]
    return outs + [tracker.track(shot, i, frames[i]) for i in range(1, len(frames))]


def _compare(ref, out, *, logit_rel, tri_agree, alpha_mad, unknown_mad):
    """Per-frame differences of `out` from `ref` (lists of FrameOutput), checked against the bounds."""
    stats = []
    for r, o in zip(ref, out):
        s = {}
        for name in ("mask_logits", "trimap_logits"):
            a, b = getattr(r, name).float().cpu(), getattr(o, name).float().cpu()
            assert a.shape == b.shape and torch.isfinite(b).all(), name
            s[name] = ((a - b).abs().max() / a.abs().max().clamp_min(1e-6)).item()
        s["tri_agree"] = (r.trimap_logits.argmax(1).cpu() == o.trimap_logits.argmax(1).cpu()).float().mean().item()
        s["mask_agree"] = float(((r.mask > 0.5) == (o.mask > 0.5)).mean())
        assert np.isfinite(o.alpha).all() and o.alpha.min() >= 0 and o.alpha.max() <= 1
        s["alpha_mad"] = float(np.abs(r.alpha - o.alpha).mean())
        both = (r.trimap == 0.5) & (o.trimap == 0.5)  # the matter's own numerics, where both trimaps agree
        s["unknown_mad"] = float(np.abs(r.alpha - o.alpha)[both].mean()) if both.any() else 0.0
        s["object_score"] = abs(r.object_score - o.object_score)
        stats.append(s)
    print("\n".join(" ".join(f"{k} {v:.3g}" for k, v in s.items()) for s in stats))
    for i, s in enumerate(stats):
        assert s["mask_logits"] < logit_rel and s["trimap_logits"] < logit_rel, (i, s)
        assert s["tri_agree"] > tri_agree and s["mask_agree"] > tri_agree, (i, s)
        assert s["alpha_mad"] < alpha_mad and s["unknown_mad"] < unknown_mad, (i, s)
    return stats


@pytest.mark.parametrize("name", list(SIZES))
def test_tracker_runs_on_cuda(name):
    model = _on_cuda(name)
    frames = _frames(3, 96, 160)  # not square, not the model size
    outs = _track(model, frames)
    assert model.device.type == "cuda"
    for o in outs:
        assert o.mask_logits.device.type == "cuda" and o.trimap_logits.device.type == "cuda"
        assert o.mask.shape == o.trimap.shape == o.alpha.shape == (96, 160)
        assert o.alpha.dtype == o.mask.dtype == np.float32
        assert set(np.unique(o.trimap)) <= {0.0, 0.5, 1.0}
        assert np.isfinite(o.alpha).all() and 0 <= o.alpha.min() <= o.alpha.max() <= 1


@pytest.mark.parametrize("name", list(SIZES))
def test_cuda_float32_matches_cpu(name):
    s = SIZES[name]
    frames = _frames(3, s, s)
    ref = _track(_cpu_model(name), frames)
    _compare(ref, _track(_on_cuda(name), frames), **F32)


@pytest.mark.parametrize("name", list(SIZES))
def test_bf16_autocast_close_to_float32(name):
    s = SIZES[name]
    frames = _frames(3, s, s)
    ref = _track(_on_cuda(name), frames)
    bf16 = _on_cuda(name, autocast="bfloat16")
    out = _track(bf16, frames)
    stats = _compare(ref, out, **BF16)
    assert max(s["mask_logits"] for s in stats) > 1e-5  # autocast took effect (not silently float32)


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="torch.compile (triton) needs a C compiler")
def test_compile_matches_eager():
    frames = _frames(3)
    ref = _track(_on_cuda("tiny"), frames)
    compiled = _on_cuda("tiny", compile=True)
    assert compiled.config.compile
    _compare(ref, _track(compiled, frames), **F32)
    _compare(ref, _track(compiled, frames), **F32)  # second run: the compiled graphs, no recompilation


def test_memory_bank_is_flat_on_cuda():
    """Device memory stops growing once the bank is full (nothing kept per frame beyond the window)."""
    model = _on_cuda("tiny")
    tracker = StreamingTracker(model)
    frames = _frames(2)
    shot = tracker.new_shot(128, 128)
    tracker.add_keyframe(shot, 0, frames[0], Prompt(frame=0, box=(20, 40, 60, 80)))
    allocated = []
    for i in range(1, 30):
        tracker.track(shot, i, frames[i % 2])
        torch.cuda.synchronize()
        allocated.append(torch.cuda.memory_allocated())
    assert shot.bank_size() == (1, tracker.max_recent)
    assert allocated[-1] == allocated[-8], allocated


@pytest.mark.parametrize("autocast", [None, "bfloat16"])
def test_peak_memory_hiera_t_1024(autocast, record_property):
    """hiera_t at 1024 on an HD frame (matter at full resolution): finite, and the peak is reported."""
    model = build_mam2(preset("hiera_t", autocast=autocast), device="cuda", seed=0)
    frames = _frames(3, 1080, 1920)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    outs = _track(model, frames)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20
    record_property("peak_mib", peak)
    print(f"hiera_t 1024, 1920x1080, autocast {autocast}: weights {base / 2**20:.0f} MiB, peak {peak:.0f} MiB")
    assert all(np.isfinite(o.alpha).all() and np.isfinite(o.mask).all() for o in outs)
    assert peak < 24 * 1024  # GiB-scale growth would mean a leak or a full-resolution blow-up
