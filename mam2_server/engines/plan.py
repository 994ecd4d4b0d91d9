"""Which frames are tracked from which keyframe, and what a prompt edit invalidates.

A shot's frames are split into passes, one per keyframe, so that every frame is
computed exactly once:

* frames before the first keyframe are tracked backwards from it;
* frames from keyframe k_i up to (not including) k_{i+1} are tracked forwards from k_i.

Two dependency models cover the engines:

* independent passes (``chained=False``, e.g. `baseline`, `hybrid`): a frame depends only
  on the prompt of the keyframe that owns its pass;
* chained (``chained=True``): a forward frame also depends on every earlier keyframe
  (`mam2`: keyframes stay in the memory bank as conditioning frames for the rest of the
  shot; `classic`: their colour models anchor every later pass). Backward frames depend on
  the first keyframe only.

`affected_frames` is what re-tracking recomputes after an edit: from the edited
keyframe on, in the direction of propagation, and nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from mam2_server.prompts import Prompt, PromptError

FORWARD = 1
BACKWARD = -1


@dataclass(frozen=True)
class Pass:
    keyframe: int
    direction: int  # FORWARD or BACKWARD
    frames: tuple[int, ...]  # in processing order; a forward pass starts with its keyframe


def plan_passes(frames: Sequence[int], keyframes: Sequence[int]) -> list[Pass]:
    """Split `frames` (sorted, unique) into passes. Every keyframe must be one of `frames`."""
    frames = list(frames)
    if not frames:
        raise PromptError("the shot has no frames")
    if frames != sorted(set(frames)):
        raise ValueError("frames must be sorted and unique")
    keys = sorted(set(keyframes))
    if not keys:
        raise PromptError("no prompt: give a box, points or a mask on at least one frame")
    known = set(frames)
    outside = [k for k in keys if k not in known]
    if outside:
        raise PromptError(f"prompt frame(s) {outside} outside the shot's frames {frames[0]}-{frames[-1]}")
    passes: list[Pass] = []
    before = [f for f in frames if f < keys[0]]
    if before:
        passes.append(Pass(keys[0], BACKWARD, tuple(reversed(before))))
    for i, key in enumerate(keys):
        end = keys[i + 1] if i + 1 < len(keys) else None
        passes.append(Pass(key, FORWARD, tuple(f for f in frames if f >= key and (end is None or f < end))))
    return passes


def frame_owners(frames: Sequence[int], keyframes: Sequence[int]) -> dict[int, int]:
    """The keyframe whose pass computes each frame."""
    return {f: p.keyframe for p in plan_passes(frames, keyframes) for f in p.frames}


def pass_keyframes(plan: Pass, keyframes: Sequence[int], *, chained: bool) -> tuple[int, ...]:
    """The keyframes a pass may use: its own; with chained memory also every earlier one (a
    backward pass runs before the first keyframe and uses it alone)."""
    if not chained or plan.direction == BACKWARD:
        return (plan.keyframe,)
    return tuple(k for k in sorted(keyframes) if k <= plan.keyframe)


def _dependencies(frames: Sequence[int], prompts: Mapping[int, Prompt], chained: bool) -> dict[int, tuple[int, ...]]:
    keys = sorted(prompts)
    owners = frame_owners(frames, keys)
    if not chained:
        return {f: (k,) for f, k in owners.items()}
    return {f: (k,) if f < keys[0] else tuple(x for x in keys if x <= k) for f, k in owners.items()}


def affected_frames(frames: Sequence[int], old: Mapping[int, Prompt], new: Mapping[int, Prompt],
                    *, chained: bool) -> list[int]:
    """Frames whose result can change when the keyframe prompts go from `old` to `new`."""
    if not old:
        return list(frames)
    before = _dependencies(frames, old, chained)
    after = _dependencies(frames, new, chained)
    changed = []
    for f in frames:
        deps_old, deps_new = before[f], after[f]
        if deps_old != deps_new or any(not old[k].same_as(new[k]) for k in deps_new):
            changed.append(f)
    return changed
