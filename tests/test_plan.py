import numpy as np
import pytest

from mam2_server.engines.plan import BACKWARD, FORWARD, affected_frames, frame_owners, plan_passes
from mam2_server.prompts import Prompt, PromptError

FRAMES = list(range(1001, 1011))


def box(frame, x=10.0):
    return Prompt(frame=frame, box=(x, 10, 50, 40))


def test_single_keyframe_in_the_middle_tracks_both_ways():
    passes = plan_passes(FRAMES, [1004])
    assert [(p.keyframe, p.direction) for p in passes] == [(1004, BACKWARD), (1004, FORWARD)]
    assert passes[0].frames == (1003, 1002, 1001)
    assert passes[1].frames == tuple(range(1004, 1011))


def test_every_frame_is_computed_exactly_once():
    passes = plan_passes(FRAMES, [1007, 1002, 1009])
    computed = [f for p in passes for f in p.frames]
    assert sorted(computed) == FRAMES
    assert frame_owners(FRAMES, [1002, 1007, 1009])[1006] == 1002
    assert frame_owners(FRAMES, [1002, 1007, 1009])[1001] == 1002


def test_single_frame_shot():
    assert plan_passes([5], [5]) == [plan_passes([5], [5])[0]]
    assert plan_passes([5], [5])[0].frames == (5,)


@pytest.mark.parametrize("keys, message", [([], "no prompt"), ([2000], "outside")])
def test_bad_keyframes(keys, message):
    with pytest.raises(PromptError, match=message):
        plan_passes(FRAMES, keys)


def test_independent_passes_edit_invalidates_only_its_pass():
    old = {1002: box(1002), 1006: box(1006)}
    new = {1002: box(1002), 1006: box(1006, x=12)}
    assert affected_frames(FRAMES, old, new, chained=False) == list(range(1006, 1011))


def test_first_keyframe_edit_includes_backward_frames():
    old = {1003: box(1003), 1006: box(1006)}
    new = {1003: box(1003, x=5), 1006: box(1006)}
    assert affected_frames(FRAMES, old, new, chained=False) == [1001, 1002, 1003, 1004, 1005]
    # With keyframes in the memory bank, everything from the edit on changes.
    assert affected_frames(FRAMES, old, new, chained=True) == FRAMES


def test_adding_a_keyframe_splits_a_pass():
    old = {1002: box(1002)}
    new = {1002: box(1002), 1008: box(1008)}
    assert affected_frames(FRAMES, old, new, chained=False) == [1008, 1009, 1010]
    assert affected_frames(FRAMES, old, new, chained=True) == [1008, 1009, 1010]


def test_unchanged_prompts_affect_nothing_and_masks_compare_by_value():
    mask = np.zeros((48, 64), np.float32)
    mask[10:20, 10:20] = 1
    old = {1001: Prompt(frame=1001, mask=mask)}
    new = {1001: Prompt(frame=1001, mask=mask.copy())}
    assert affected_frames(FRAMES, old, new, chained=True) == []
