"""Per-shot server state, the FrameSource engines read from, and least-recently-used eviction.

A `Shot` holds only metadata, prompts and a few decoded frames in memory; its
pixels live on disk (`store.ShotDisk`) and are read back through `ShotSource`,
so a 1,000-frame 1080p shot costs the server a handful of frames of RAM.
`ShotStore` keeps the loaded shots in LRU order and, when their memory exceeds
the budget, drops the oldest idle shots (their state is on disk; the next
request that names them loads them again).
"""
from __future__ import annotations

import bisect
import hashlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from host_plugins.mam2_client import wire
from mam2_server.engines.plan import BACKWARD, affected_frames, plan_passes
from mam2_server.prompts import Point, Prompt, PromptError
from mam2_server.protocol import ProtocolError
from mam2_server.server.store import ShotDisk, check_shot_id

log = logging.getLogger(__name__)


class ShotSource:
    """FrameSource over a snapshot of a shot's stored frames (decoded on demand, a few kept in memory).

    The snapshot ({frame: (digest, file)}) is taken when the job starts, so frames replaced
    by a later put_frames never mix into a running propagate or its cache keys.
    """

    def __init__(self, shot: "Shot", frames: Sequence[int], stored: Mapping[int, tuple[str, Path]]) -> None:
        self.shot = shot
        self.frames = list(frames)
        self.stored = dict(stored)
        self.width = shot.width
        self.height = shot.height

    def linear(self, frame: int) -> np.ndarray:
        return self.shot.linear(frame, self.stored[frame])

    def display(self, frame: int) -> np.ndarray:
        return self.shot.display(frame, self.stored[frame])


class Shot:
    def __init__(self, disk: ShotDisk, *, shot: str, first: int, last: int, width: int, height: int,
                 colorspace: str | None, cache_frames: int = 4,
                 read_shared: Callable[..., np.ndarray] | None = None) -> None:
        self.disk = disk
        # (path, lane, accepted=digest): shared-disk plates within the server's file budget, checked unchanged
        self.read_shared = read_shared
        self.id = shot
        self.first, self.last, self.width, self.height = first, last, width, height
        self.colorspace = colorspace
        self.prompts: dict[int, Prompt] = {}
        self.frames: dict[int, tuple[str, Path]] = {}  # frame -> (digest, stored file)
        self.busy = 0  # running jobs
        # set under `lock` when the store lets go of this object (close_shot, eviction): it is stale, so a job
        # that looked it up just before must look the shot up again rather than mark this one busy
        self.closed = False
        self.lock = threading.RLock()
        self._cache: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self._cache_frames = max(1, cache_frames)
        self._colour = None

    # -- identity -----------------------------------------------------------------
    def params(self) -> dict:
        return {"shot": self.id, "first": self.first, "last": self.last, "width": self.width,
                "height": self.height, "colorspace": self.colorspace}

    def frame_range(self) -> list[int]:
        return list(range(self.first, self.last + 1))

    def nbytes(self) -> int:
        with self.lock:  # the compute thread changes the cache while status/eviction read it
            masks = sum(p.mask.nbytes for p in self.prompts.values() if p.mask is not None)
            return masks + sum(a.nbytes for a in self._cache.values())

    def drop_cache(self) -> None:
        with self.lock:
            self._cache.clear()

    # -- persistence --------------------------------------------------------------
    def save(self) -> None:
        prompts = []
        for p in self.prompts.values():
            prompts.append({"frame": p.frame, "box": list(p.box) if p.box else None,
                            "points": [[q.x, q.y, q.label] for q in p.points], "mask": p.mask is not None})
        self.disk.save_manifest({**self.params(), "prompts": prompts})

    @classmethod
    def load(cls, disk: ShotDisk, **kwargs) -> "Shot | None":
        data = disk.load_manifest()
        if data is None:
            return None
        shot = cls(disk, shot=data["shot"], first=data["first"], last=data["last"], width=data["width"],
                   height=data["height"], colorspace=data.get("colorspace"), **kwargs)
        for item in data.get("prompts", []):
            mask = disk.load_mask(item["frame"]) if item.get("mask") else None
            shot.prompts[item["frame"]] = Prompt(frame=item["frame"], box=item.get("box"),
                                                 points=tuple(Point(*p) for p in item.get("points", [])), mask=mask)
        shot.frames = {f: v for f, v in disk.scan_frames().items() if shot.first <= f <= shot.last}
        return shot

    # -- frames -------------------------------------------------------------------
    def check_frame(self, frame: int) -> None:
        if not self.first <= frame <= self.last:
            raise ProtocolError(wire.E_BAD_FRAME, f"frame {frame} is outside shot {self.id!r} "
                                                  f"({self.first}-{self.last})")

    def _cached(self, key: tuple[int, str], make) -> np.ndarray:
        with self.lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = make()
        with self.lock:
            self._cache[key] = value
            while len(self._cache) > 2 * self._cache_frames:
                self._cache.popitem(last=False)
        return value

    @property
    def colour(self):
        if self._colour is None:
            from mam2_server.io import ColourConverter
            try:
                self._colour = ColourConverter(colorspace=self.colorspace)
            except ValueError as exc:
                raise ProtocolError(wire.E_BAD_SHOT, str(exc)) from None
        return self._colour

    def linear(self, frame: int, stored: tuple[str, Path]) -> np.ndarray:
        """Scene-linear RGB (a display-encoded plate decoded), a copy (callers may modify it), as
        `mam2_server.io` sources hand out."""
        digest, _ = stored
        return self._cached((frame, "linear:" + digest),
                            lambda: self.colour.to_linear(self._plate(frame, stored))).copy()

    def _plate(self, frame: int, stored: tuple[str, Path]) -> np.ndarray:
        """The frame's pixels in the shot's colour space, as stored."""
        digest, path = stored
        read_shared = self.read_shared

        def read(shared: str) -> np.ndarray:
            # this shot's own lane: plates hanging on another shot's dead disk never starve its reads;
            # `accepted`: the file must still be the one put_frames checked (its digest is in the cache keys)
            try:
                return read_shared(shared, ("shot", self.id), accepted=digest)
            except ProtocolError as exc:
                raise ProtocolError(exc.code, f"frame {frame} of shot {self.id!r}: {exc.message}") from None
        return self._cached((frame, "plate:" + digest),
                            lambda: ShotDisk.read_frame(path, None if read_shared is None else read))

    def display(self, frame: int, stored: tuple[str, Path]) -> np.ndarray:
        digest, _ = stored
        return self._cached((frame, "display:" + digest),
                            lambda: self.colour.to_display(self._plate(frame, stored))).copy()

    def source(self, frames: Sequence[int] | None = None) -> ShotSource:
        with self.lock:
            stored = dict(self.frames)
        return ShotSource(self, sorted(stored) if frames is None else frames, stored)

    # -- prompts --------------------------------------------------------------------
    def set_prompt(self, frame: int, prompt: Prompt | None, *, chained: bool) -> list[int]:
        """Add, replace (or with None remove) the prompt on `frame`; returns the affected frames."""
        self.check_frame(frame)
        if prompt is not None:
            try:
                prompt.validate(self.width, self.height)
            except PromptError as exc:
                raise ProtocolError(wire.E_BAD_PROMPT, str(exc)) from None
        old = dict(self.prompts)
        new = dict(old)
        if prompt is None:
            if frame not in new:
                raise ProtocolError(wire.E_BAD_PROMPT, f"no prompt on frame {frame} of shot {self.id!r}")
            del new[frame]
        else:
            new[frame] = prompt
        if prompt is not None and prompt.mask is not None:
            self.disk.save_mask(frame, prompt.mask)
        self.prompts = new
        self.save()
        if not new:
            return self.frame_range()
        return affected_frames(self.frame_range(), old, new, chained=chained)

    # -- cache keys --------------------------------------------------------------------
    def alpha_keys(self, engine_id: str, *, chained: bool, frames: Sequence[int] | None = None,
                   prompts: Mapping[int, Prompt] | None = None, reach: int = 0) -> dict[int, str]:
        """frame -> cache key: hash of the engine, the prompts and the pixels the frame depends on.

        A pass runs from its keyframe (see engines.plan), so a frame depends on the
        pixels of its pass up to itself and on the pass's keyframe prompt (all
        earlier keyframes, and their frames' pixels, too for chained engines), and on the
        pixels of the frames within `reach` (an engine's `neighbour_reach`) of it and of the
        pass's frames before it.
        """
        prompts = self.prompts if prompts is None else prompts
        frames = sorted(self.frames) if frames is None else list(frames)
        if not prompts or not frames:
            return {}
        keys_sorted = sorted(prompts)
        digests = {k: p.digest() for k, p in prompts.items()}
        out: dict[int, str] = {}
        for plan in plan_passes(frames, keys_sorted):
            if chained and plan.direction != BACKWARD:
                deps = [k for k in keys_sorted if k <= plan.keyframe]
            else:
                deps = [plan.keyframe]
            h = hashlib.sha256(engine_id.encode() + b"|" + str(plan.direction).encode())
            for k in deps:
                h.update(digests[k])
                if chained and k in self.frames:
                    h.update(self.frames[k][0].encode())
            # the frames read within `reach` of any frame of the pass so far: a frame's result carries
            # its predecessors' (temporal prior, colour models), so their neighbours count too. The
            # window only grows along the pass: hash each frame once, as it enters.
            start, window, lo, hi = plan.frames[0], hashlib.sha256(), None, None
            for f in plan.frames:
                h.update(self.frames[f][0].encode())
                a = bisect.bisect_left(frames, min(start, f) - reach)
                b = bisect.bisect_right(frames, max(start, f) + reach)
                entering = frames[a:b] if lo is None else frames[a:lo] + frames[hi:b]
                lo, hi = a if lo is None else min(a, lo), b if hi is None else max(b, hi)
                for g in entering:
                    window.update(self.frames[g][0].encode())
                out[f] = hashlib.sha256(h.digest() + window.digest()).hexdigest()[:32]
        return out


class ShotStore:
    """The loaded shots in least-recently-used order, under a memory budget (bytes)."""

    def __init__(self, root: Path, memory_budget: int, cache_frames: int = 4, spill_compression: str = "none",
                 read_shared: Callable[..., np.ndarray] | None = None) -> None:
        self.root = Path(root)
        self.spill_compression = spill_compression
        self.memory_budget = memory_budget
        self.cache_frames = cache_frames
        self.read_shared = read_shared
        self._shots: OrderedDict[str, Shot] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, *, shot: str, first: int, last: int, width: int, height: int,
             colorspace: str | None) -> tuple[Shot, bool]:
        """Open (or resume from disk) a shot; returns (shot, resumed)."""
        check_shot_id(shot)
        if not (0 < width <= wire.MAX_SIDE and 0 < height <= wire.MAX_SIDE):
            raise ProtocolError(wire.E_BAD_SHOT, f"size {width}x{height} outside 1..{wire.MAX_SIDE}")
        if last < first or last - first + 1 > wire.MAX_FRAMES_PER_SHOT:
            raise ProtocolError(wire.E_BAD_SHOT, f"frame range {first}-{last} is empty or longer than "
                                                 f"{wire.MAX_FRAMES_PER_SHOT} frames")
        params = {"shot": shot, "first": first, "last": last, "width": width, "height": height,
                  "colorspace": colorspace}
        with self._lock:
            existing = self._shots.get(shot)
        resumed = existing is not None
        if existing is None:
            existing = Shot.load(self._disk(shot), cache_frames=self.cache_frames, read_shared=self.read_shared)
            resumed = existing is not None
        if existing is not None:
            if existing.params() != params:
                raise ProtocolError(wire.E_BAD_SHOT, f"shot {shot!r} is open with {existing.params()}; close it "
                                                     "with purge=true (or use another id) to change it")
            result = existing
        else:
            disk = self._disk(shot)
            result = Shot(disk, cache_frames=self.cache_frames, read_shared=self.read_shared, **params)
            result.colour  # noqa: B018 - refuse an unknown colour space now, not at propagate
            disk.create()
            result.save()
        with self._lock:
            result = self._shots.setdefault(shot, result)  # one Shot object per id, whoever loaded it first
            self._shots.move_to_end(shot)
        self.enforce_budget(keep=shot)
        return result, resumed

    def _disk(self, shot: str) -> ShotDisk:
        return ShotDisk(self.root, shot, self.spill_compression)

    def get(self, shot: str) -> Shot:
        check_shot_id(shot)
        with self._lock:
            found = self._shots.get(shot)
            if found is not None:
                self._shots.move_to_end(shot)
        if found is None:
            found = Shot.load(self._disk(shot), cache_frames=self.cache_frames, read_shared=self.read_shared)
            if found is None:
                raise ProtocolError(wire.E_NO_SHOT, f"no shot {shot!r}: open it first (open_shot)")
            log.info("shot %s loaded again from disk", shot)
            with self._lock:
                found = self._shots.setdefault(shot, found)
        self.enforce_budget(keep=shot)
        return found

    def close(self, shot: str, *, purge: bool) -> None:
        found = self.get(shot)
        with found.lock:  # a job checks `closed` and marks the shot busy under this lock, in one step
            if found.busy:
                raise ProtocolError(wire.E_BUSY, f"shot {shot!r} is propagating; cancel it first")
            found.closed = True  # a job that looked it up before looks it up again (purged: no_shot)
            try:
                if purge:  # still listed meanwhile: a job looking it up waits for this lock, not a half-purged disk
                    found.disk.purge()
            finally:
                self._forget(found)

    def _forget(self, shot: Shot) -> None:
        with self._lock:
            if self._shots.get(shot.id) is shot:
                del self._shots[shot.id]

    def loaded_size(self, shot: str) -> tuple[int, int] | None:
        """(width, height) of the shot if it is loaded; None otherwise (nothing is read from disk)."""
        with self._lock:
            found = self._shots.get(shot)
        return None if found is None else (found.width, found.height)

    def loaded(self) -> list[Shot]:
        with self._lock:
            return list(self._shots.values())

    def memory(self) -> int:
        return sum(s.nbytes() for s in self.loaded())

    def enforce_budget(self, keep: str | None = None) -> None:
        """Evict least-recently-used idle shots (drop their frames, unload their state) while over budget."""
        if self.memory() <= self.memory_budget:
            return
        for shot in self.loaded():
            if shot.id == keep:
                continue
            shot.drop_cache()
            with shot.lock:  # as in close: never between a job's look-up and its marking the shot busy
                evict = not shot.busy
                if evict:
                    shot.closed = True
                    self._forget(shot)
            if evict:
                log.info("evicted shot %s (memory budget %d bytes)", shot.id, self.memory_budget)
            if self.memory() <= self.memory_budget:
                return
