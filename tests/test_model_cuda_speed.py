"""The tracker's CUDA speed paths on a GPU (every test skipped without one; scripts/gpu_check.sh runs them).

Each option (`CudaOptions`: async_io, overlap, graphs, static_routing) against everything off, through
`prefetch` as the engine runs it; that graphs are really captured and replayed; that a tracked frame
makes no host sync but the one wait for its outputs; the offloaded memory bank copied down without a
wait; and the loop's ms per frame, recorded (speed figures go to docs/benchmarks.md from
scripts/gpu_fps.py, not into asserts).

Bounds as tests/test_model_cuda.py: async_io, overlap and graphs run the same kernels on the same
inputs (graphs replay them; overlap moves the encoder to another stream), so they get the float32
bounds; static routing attends among the same tokens in another order, and everything on adds that
to bf16's rounding, so bf16 runs get the bf16 bounds.
"""
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mam2_server.model.build import build_mam2
from mam2_server.model.config import TrackerConfig, preset
from mam2_server.model.runtime import CudaOptions
from mam2_server.model.tracker import StreamingTracker
from mam2_server.prompts import Prompt
from test_model_cuda import BF16, F32, _compare, _on_cuda, _no_tf32  # noqa: F401 (_no_tf32: autouse fixture)
from test_model_tracker import _frames

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ALL_OFF = CudaOptions.parse("all=off")


def _track(model, frames, options, *, tracker=None, shot=None):
    """Keyframe 0, then every other frame through `prefetch` (the engine's lookahead)."""
    tracker = tracker or StreamingTracker(model, cuda=options)
    h, w = frames[0].shape[:2]
    shot = shot or tracker.new_shot(w, h, num_frames=len(frames))
    outs = [tracker.add_keyframe(shot, 0, frames[0], Prompt(frame=0, box=(0.15 * w, 0.3 * h, 0.45 * w, 0.6 * h)))]
    for i, image in tracker.prefetch(range(1, len(frames)), lambda i: frames[i]):
        outs.append(tracker.track(shot, i, image))
    return outs


@pytest.mark.parametrize("option", ["async_io", "overlap", "graphs", "static_routing", "all"])
@pytest.mark.parametrize("name", ["tiny", "hiera_t"])
def test_each_option_matches_everything_off(name, option):
    model = _on_cuda(name, autocast="bfloat16")
    s = 128 if name == "tiny" else 512
    frames = _frames(7, s, s)
    ref = _track(model, frames, ALL_OFF)
    options = CudaOptions() if option == "all" else CudaOptions.parse(f"all=off,{option}=on")
    tracker = StreamingTracker(model, cuda=options)
    out = _track(model, frames, options, tracker=tracker)
    _compare(ref, out, **(F32 if option in ("async_io", "overlap", "graphs") else BF16))
    if options.graphs:  # captured after 2 eager frames, replayed on the 4 others; not silently eager
        assert tracker.graphs.status() == {"decode": "graphs (1)", "memory_encoder": "graphs (1)"}
        assert tracker.graphs.replays["decode"] == tracker.graphs.replays["memory_encoder"] == 4
    assert tracker.lookahead == options.overlap


def test_graphs_by_default_with_bf16_only():
    assert StreamingTracker(_on_cuda("tiny", autocast="bfloat16")).graphs is not None
    assert StreamingTracker(_on_cuda("tiny")).graphs is None
    assert StreamingTracker(_on_cuda("tiny"), cuda=CudaOptions(graphs=True)).graphs is not None


def test_a_tracked_frame_waits_for_the_device_once():
    """Sync debug mode flags every synchronising call (.item(), .cpu(), blocking copies, nonzero, ...);
    after the warm-up (graph captures synchronise once), the only one left is the output copy's wait."""
    model = _on_cuda("hiera_t", autocast="bfloat16")
    frames = _frames(10, 270, 480)
    tracker = StreamingTracker(model)
    shot = tracker.new_shot(480, 270, num_frames=len(frames))
    tracker.add_keyframe(shot, 0, frames[0], Prompt(frame=0, box=(70, 80, 220, 160)))
    loop = tracker.prefetch(range(1, len(frames)), lambda i: frames[i])
    for _ in range(4):  # warm-up and captures
        i, image = next(loop)
        tracker.track(shot, i, image)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outs = [tracker.track(shot, i, image) for i, image in loop]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    where = sorted({(Path(w.filename).name, w.lineno) for w in syncs})
    print("synchronising calls:", where or "none")
    assert len(outs) == 5 and all(np.isfinite(o.alpha).all() for o in outs)
    assert all(name == "runtime.py" for name, _ in where), where  # HostCopy.result, if it is flagged at all


def test_offloaded_bank_goes_down_without_a_wait():
    """offload_memory_to_cpu with async_io: memories go down non_blocking (into pinned memory) and come
    back up on the same stream; the results equal the blocking copies'."""
    model = _on_cuda("tiny", autocast="bfloat16", tracker=TrackerConfig(offload_memory_to_cpu=True))
    frames = _frames(8)
    ref = _track(model, frames, ALL_OFF)
    tracker = StreamingTracker(model, cuda=CudaOptions.parse("all=off,async_io=on"))
    shot = tracker.new_shot(128, 128, num_frames=len(frames))
    out = _track(model, frames, tracker.options, tracker=tracker, shot=shot)
    _compare(ref, out, **F32)
    memories = [*shot.cond.values(), *shot.recent.values()]
    assert len(memories) == 8 and all(m.maskmem_features.device.type == "cpu" for m in memories)
    assert all(m.maskmem_features.is_pinned() for m in shot.recent.values())


@pytest.mark.parametrize("options", ["all=off", ""], ids=["all_off", "all_on"])
def test_loop_time_hiera_t_1024_hd(options, record_property):
    """ms per frame of the engine's loop at 1024 on HD plates (hiera_t: cheap enough for a test run)."""
    model = build_mam2(preset("hiera_t", autocast="bfloat16"), device="cuda", seed=0)
    frames = _frames(4, 1080, 1920)
    tracker = StreamingTracker(model, cuda=CudaOptions.parse(options))
    shot = tracker.new_shot(1920, 1080, num_frames=40)
    tracker.add_keyframe(shot, 0, frames[0], Prompt(frame=0, box=(300, 300, 900, 700)))
    read = lambda i: frames[i % 4]  # noqa: E731
    for i, image in tracker.prefetch(range(1, 20), read):
        tracker.track(shot, i, image)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i, image in tracker.prefetch(range(20, 40), read):
        out = tracker.track(shot, i, image)
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) * 1e3 / 20
    record_property("ms_per_frame", ms)
    print(f"hiera_t 1024 bf16, 1920x1080, {options or 'all on'}: {ms:.1f} ms/frame")
    assert np.isfinite(out.alpha).all() and out.alpha.shape == (1080, 1920)
