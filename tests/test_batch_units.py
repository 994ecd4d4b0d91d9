"""Where a shot may be split (`batch.units`) and what a partial run computes: chunks and resume
give bit for bit the alphas of a whole run, also for the chained `mam2` engine."""
import threading

import numpy as np
import pytest

from frames import moving_disc
from mam2_server.batch import frames_to_compute, independent_groups, split_frames
from mam2_server.batch.runner import _BatchEngine
from mam2_server.batch.units import engine_continues_passes, engine_wants_gpu
from mam2_server.engines import EngineConfig, EngineError, create_engine, engine_class
from mam2_server.prompts import Point, Prompt

FRAMES = list(range(1001, 1011))
KEYS = [Prompt(frame=1004, box=(1, 1, 5, 5)), Prompt(frame=1008, box=(1, 1, 5, 5))]


def test_independent_groups_follow_the_engines_dependency_model():
    # passes: 1003..1001 backward from 1004, 1004..1007 forward, 1008..1010 forward
    assert independent_groups(FRAMES, KEYS, continued=False) == [[1003, 1002, 1001], [1004, 1005, 1006, 1007],
                                                              [1008, 1009, 1010]]
    # a chained bank carries from one forward pass into the next: they stay together
    assert independent_groups(FRAMES, KEYS, continued=True) == [[1003, 1002, 1001],
                                                             [1004, 1005, 1006, 1007, 1008, 1009, 1010]]
    assert independent_groups(FRAMES, [Prompt(frame=1001, box=(1, 1, 5, 5))], continued=True) == [FRAMES]


def test_split_frames_packs_groups_and_never_splits_one():
    everything = set(FRAMES)
    assert split_frames(FRAMES, KEYS, everything, continued=False) == [[1003, 1002, 1001, 1004, 1005, 1006, 1007,
                                                                      1008, 1009, 1010]]
    assert split_frames(FRAMES, KEYS, everything, continued=False, max_frames=1) == [
        [1003, 1002, 1001], [1004, 1005, 1006, 1007], [1008, 1009, 1010]]
    assert split_frames(FRAMES, KEYS, everything, continued=False, max_frames=7) == [
        [1003, 1002, 1001, 1004, 1005, 1006, 1007], [1008, 1009, 1010]]
    assert split_frames(FRAMES, KEYS, everything, continued=True, max_frames=4) == [
        [1003, 1002, 1001], [1004, 1005, 1006, 1007, 1008, 1009, 1010]]
    # resume: only what is still to write; a group with nothing to write gives no chunk
    assert split_frames(FRAMES, KEYS, {1002, 1009}, continued=False, max_frames=1) == [[1002], [1009]]
    assert split_frames(FRAMES, KEYS, {1005, 1006, 1007}, continued=False, max_frames=1) == [[1005, 1006, 1007]]
    chunks = split_frames(FRAMES, KEYS, everything, continued=False, max_frames=2)
    assert sorted(f for c in chunks for f in c) == FRAMES  # every frame exactly once


def test_frames_to_compute_adds_the_chained_forward_passes_before():
    assert frames_to_compute(FRAMES, KEYS, None, continued=True) is None
    assert frames_to_compute(FRAMES, KEYS, {1009}, continued=False) == {1009}
    assert frames_to_compute(FRAMES, KEYS, {1009}, continued=True) == {1004, 1005, 1006, 1007, 1008, 1009, 1010}
    assert frames_to_compute(FRAMES, KEYS, {1002}, continued=True) == {1002}  # backward: first keyframe only
    assert frames_to_compute(FRAMES, KEYS, {1005}, continued=True) == {1005, 1004, 1006, 1007}


def test_engine_continues_passes_reads_the_class_without_building_it():
    assert engine_continues_passes(EngineConfig("mam2", checkpoint="/no/such/weights.safetensors")) is True
    assert engine_continues_passes(EngineConfig("classic")) is False
    with pytest.raises(EngineError, match="unknown engine"):
        engine_continues_passes(EngineConfig("nope"))


def test_engine_needs_gpu_is_one_flag_on_the_class():
    assert {name: engine_class(name).needs_gpu for name in ("baseline", "classic", "mam2", "hybrid")} == {
        "baseline": False, "classic": False, "mam2": True, "hybrid": True}
    no_weights = "/no/such/weights.safetensors"  # read from the class: nothing is built or loaded
    assert engine_wants_gpu(EngineConfig("mam2", checkpoint=no_weights))
    assert engine_wants_gpu(EngineConfig("hybrid", checkpoint=no_weights, device="cuda:1"))
    assert not engine_wants_gpu(EngineConfig("mam2", checkpoint=no_weights, device="cpu"))
    assert not engine_wants_gpu(EngineConfig("classic", device="cuda"))
    with pytest.raises(EngineError, match="unknown engine 'nope'"):
        engine_wants_gpu(EngineConfig("nope"))


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from mam2_server.model.checkpoint import save_tiny_checkpoint

    return str(save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"))


def test_chunks_of_a_chained_engine_equal_the_whole_run_bit_for_bit(tiny_ckpt):
    """Each chunk and each resumed frame runs in a fresh engine, as on another machine or after a crash."""
    config = EngineConfig("mam2", checkpoint=tiny_ckpt, device="cpu")
    src = moving_disc(n=7)
    f = src.frames
    prompts = [Prompt(frame=f[2], box=(15, 12, 36, 33)), Prompt(frame=f[4], points=(Point(33, 22),))]
    whole = {r.frame: r.alpha for r in create_engine(config).run(src, prompts)}
    assert sorted(whole) == f
    chunks = split_frames(f, prompts, f, continued=True, max_frames=1)
    assert chunks == [[f[1], f[0]], f[2:]]
    for part in chunks + [[f[5]], [f[0], f[6]]]:  # the chunks, then two resumes of scattered frames
        engine = _BatchEngine(create_engine(config), stop=threading.Event())
        got = {r.frame: r.alpha for r in engine.run(src, prompts, only=set(part))}
        assert sorted(got) == sorted(part)
        for frame in part:
            np.testing.assert_array_equal(got[frame], whole[frame], err_msg=f"frame {frame} of chunk {part}")
