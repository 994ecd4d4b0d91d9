"""Work units: where a shot may be split for a farm or cluster, and what a partial run must compute.

A frame's alpha depends on more than its own plate (`engines.plan`): a tracked frame depends
on the frames before it in its pass, and with an engine whose forward passes continue one
another (``Engine.passes_continue``: the memory bank carries over from one forward pass to the
next) on every forward pass before its own. So a shot splits without changing a single bit of its
alphas only between *independent groups* of frames:

* passes that run on their own (``continued=False``): each pass is a group;
* continued passes: the backward pass before the first keyframe (it starts from the first
  keyframe alone) is one group, every forward pass together is the other.

`frames_to_compute` is the other half: writing only some frames of a shot (resume, a chunk)
still has to compute what they depend on, so those frames come out as in a whole run.
"""
from __future__ import annotations

from typing import Collection, Sequence

from mam2_server.engines import engine_class
from mam2_server.engines.base import EngineConfig
from mam2_server.engines.plan import BACKWARD, plan_passes
from mam2_server.prompts import Prompt


def engine_continues_passes(config: EngineConfig) -> bool:
    """The engine class's `passes_continue` flag, read without building the engine (no weights loaded)."""
    return bool(engine_class(config.name).passes_continue)


def engine_wants_gpu(config: EngineConfig) -> bool:
    """Whether a task of this engine gets a GPU by default: the engine runs a network
    (`Engine.needs_gpu`) and the configuration does not pin it to the CPU."""
    return bool(engine_class(config.name).needs_gpu) and config.device != "cpu"


def independent_groups(frames: Sequence[int], prompts: Sequence[Prompt], *, continued: bool) -> list[list[int]]:
    """The shot's frames as groups that can run apart, each in processing order, in pass order."""
    passes = plan_passes(frames, [p.frame for p in prompts])
    if not continued:
        return [list(p.frames) for p in passes]
    backward = [list(p.frames) for p in passes if p.direction == BACKWARD]
    forward = [f for p in passes if p.direction != BACKWARD for f in p.frames]
    return backward + [forward]


def split_frames(frames: Sequence[int], prompts: Sequence[Prompt], todo: Collection[int], *, continued: bool,
                 max_frames: int = 0) -> list[list[int]]:
    """`todo` (frames to write) as chunks, each a list in the order the engine writes them.

    A chunk never splits an independent group: neighbouring groups are packed into chunks of up
    to `max_frames` frames to write (a larger group stays whole); 0 keeps the shot in one chunk.
    """
    todo = set(todo)
    chunks: list[list[int]] = []
    for group in independent_groups(frames, prompts, continued=continued):
        part = [f for f in group if f in todo]
        if not part:
            continue
        if chunks and (max_frames <= 0 or len(chunks[-1]) + len(part) <= max_frames):
            chunks[-1].extend(part)
        else:
            chunks.append(part)
    return chunks


def frames_to_compute(frames: Sequence[int], prompts: Sequence[Prompt], only: Collection[int] | None, *,
                      continued: bool) -> set[int] | None:
    """What `Engine.run(only=...)` must be given so the frames in `only` equal a whole run's.

    Engines already run every pass that holds a wanted frame from its keyframe. An engine whose
    passes continue one another also needs every forward pass before it (the previous one's bank).
    """
    if only is None or not continued:
        return None if only is None else set(only)
    passes = plan_passes(frames, [p.frame for p in prompts])
    forward = [p for p in passes if p.direction != BACKWARD]
    wanted = set(only)
    last = max((i for i, p in enumerate(forward) if wanted.intersection(p.frames)), default=-1)
    return wanted.union(f for p in forward[:last + 1] for f in p.frames)
