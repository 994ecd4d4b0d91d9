"""What each op does: functions from a typed request to typed replies, run on the server's threads.

`Handlers` owns the engine and the shot store. Quick ops (`hello`, `status`,
`cancel`) run on the I/O thread; data ops (`open_shot`, `put_frames`, prompts,
`get_alpha`, `close_shot`) on the data thread; `propagate` on the compute thread,
the only one that touches the engine. A handler returns a final reply (or
raises ProtocolError); `propagate` also sends intermediate messages through `send`.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from mam2_server import __version__
from mam2_server import protocol as P
from mam2_server.engines import Engine, available_engines
from mam2_server.prompts import Point, Prompt, PromptError
from mam2_server.protocol import ProtocolError
from mam2_server.server.files import FileReader, SharedPlate
from mam2_server.server.pixels import (alpha_to_wire, check_exr_buffer, check_exr_file, check_mask_info,
                                       check_plate_info, decode_pixels, digest_bytes)
from mam2_server.server.shots import Shot, ShotStore

log = logging.getLogger(__name__)

Send = Callable[[P.Reply, Sequence[P.Buffer]], None]


@dataclass
class Job:
    """A queued or running propagate, cancellable from the I/O thread."""

    client: bytes  # the ROUTER identity of the connection that sent it
    request_id: str | int
    shot: str
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def key(self) -> tuple[bytes, str | int]:
        return self.client, self.request_id  # ids are the client's to choose: two clients may pick the same


def rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def detect_device(engine: Engine) -> str:
    device = getattr(engine, "device", None)
    if device is not None:
        return str(device)
    torch = sys.modules.get("torch")  # weights-free engines never import torch: they run on the CPU
    if torch is not None and torch.cuda.is_available():
        return "cuda"
    return "cpu"


class Handlers:
    def __init__(self, engine: Engine, engine_id: str, store: ShotStore, files: FileReader, *,
                 limits: dict[str, int]) -> None:
        self.engine = engine
        self.engine_id = engine_id  # engine, code and weights (engines.identity): part of every alpha cache key
        self.store = store
        self.files = files
        self.limits = limits
        self.device = detect_device(engine)
        self.jobs: dict[tuple[bytes, str | int], Job] = {}
        self.jobs_lock = threading.Lock()

    # -- I/O thread ------------------------------------------------------------------
    def hello(self, req: P.Hello) -> P.Reply:
        return P.HelloReply(server=__version__, protocol=P.PROTOCOL_VERSION, engine=self.engine.name,
                            engines=available_engines(), device=self.device, limits=dict(self.limits))

    def status(self, req: P.Status) -> P.Reply:
        shots = [P.ShotInfo(shot=s.id, first=s.first, last=s.last, width=s.width, height=s.height,
                            received=len(s.frames), keyframes=sorted(s.prompts), loaded=True, busy=bool(s.busy))
                 for s in self.store.loaded()]
        with self.jobs_lock:
            jobs = [P.JobInfo(shot=j.shot, id=j.request_id) for j in self.jobs.values()]
        return P.StatusReply(shots=shots, jobs=jobs, rss_bytes=rss_bytes(), cache_bytes=self.store.memory(),
                             memory_budget=self.store.memory_budget, device=self.device, engine=self.engine.name)

    def add_job(self, client: bytes, request_id: str | int, shot: str) -> Job:
        """Register a propagate; a request id the connection already uses for one is `bad_message` (its
        replies, and a cancel by id, could not tell the two apart)."""
        job = Job(client, request_id, shot)
        with self.jobs_lock:
            if job.key in self.jobs:
                raise ProtocolError(P.E_BAD_MESSAGE, f"request id {request_id!r:.80} is already used by a propagate "
                                                     "of this connection that is queued or running; use a new id "
                                                     "for every request")
            self.jobs[job.key] = job
        return job

    def cancel(self, req: P.Cancel, client: bytes) -> P.Reply:
        """`target` alone: that job of the sender's own (`client`); `shot`: the shot's jobs, whoever sent
        them (with `target`: only that request id's)."""
        if req.target is None and req.shot is None:
            raise ProtocolError(P.E_BAD_MESSAGE, "cancel needs 'target' (a request id) or 'shot'")
        with self.jobs_lock:
            hits = [j for j in self.jobs.values()
                    if (req.target is None or j.request_id == req.target) and
                    (j.shot == req.shot if req.shot is not None else j.client == client)]
        for job in hits:
            job.cancel.set()
        return P.CancelReply(cancelled=[j.request_id for j in hits])

    def cancel_client(self, client: bytes) -> list[str | int]:
        """Cancel every job of the connection `client` (gone); their request ids."""
        with self.jobs_lock:
            hits = [j for j in self.jobs.values() if j.client == client and not j.cancel.is_set()]
        for job in hits:
            job.cancel.set()
        return [j.request_id for j in hits]

    def cancel_all(self) -> None:
        with self.jobs_lock:
            for job in self.jobs.values():
                job.cancel.set()

    # -- files stage ----------------------------------------------------------------------
    def read_files(self, req: P.Request, client: bytes) -> dict[int, SharedPlate | np.ndarray]:
        """What the files a request names hold, by index in `P.images(req)`: plates are checked from
        their headers, masks read whole once their header fits the shot (its size when the shot is
        loaded, else MAX_SIDE: the data thread checks the decoded size); each within the FileReader's
        size and time budget, in the lane of the client that asked."""
        lane = ("client", client)
        if isinstance(req, P.PutFrames):
            return {i: self.files.plate(ref.path, lane)
                    for i, ref in enumerate(req.frames) if ref.encoding == P.ENC_PATH}
        size = self.store.loaded_size(req.shot)  # never loads it: an open_shot queued before may not have run
        return {i: self.files.pixels(ref.path, lane, check=lambda info, _name=repr(ref.path):
                                     check_mask_info(info, _name, size))
                for i, ref in enumerate(P.images(req)) if ref.encoding == P.ENC_PATH}

    # -- data thread --------------------------------------------------------------------
    def open_shot(self, req: P.OpenShot) -> P.Reply:
        shot, resumed = self.store.open(shot=req.shot, first=req.first, last=req.last, width=req.width,
                                        height=req.height, colorspace=req.colorspace)
        return P.OpenShotReply(shot=shot.id, resumed=resumed, received=sorted(shot.frames),
                               keyframes=sorted(shot.prompts))

    def put_frames(self, req: P.PutFrames, buffers: Sequence[P.Buffer],
                   files: dict[int, SharedPlate] | None = None) -> P.Reply:
        """Raw pixels are checked, hashed and spilled as EXR; EXR bytes and shared paths are checked
        from their headers and sizes (their pixels are read once, when the engine needs them).

        The whole request is checked before anything is stored (references were checked on arrival)."""
        shot = self.store.get(req.shot)
        size = {"width": shot.width, "height": shot.height}
        for i, ref in enumerate(req.frames):
            shot.check_frame(ref.frame)
            if ref.encoding == P.ENC_PATH:
                check_plate_info((files or {})[i].info, repr(ref.path), **size)
            elif ref.encoding == P.ENC_EXR:
                check_exr_buffer(buffers[ref.buffer - 1])
            if shot.busy and ref.frame in shot.frames:
                raise ProtocolError(P.E_BUSY, f"shot {shot.id!r} is propagating: frame {ref.frame} cannot be "
                                              "replaced until it finishes (or is cancelled)")
        received, sanitised = [], []
        for i, ref in enumerate(req.frames):
            if ref.encoding == P.ENC_PATH:
                plate = (files or {})[i]
                path = shot.disk.put_frame(ref.frame, plate.digest, None, plate.path)
            elif ref.encoding == P.ENC_EXR:
                data = buffers[ref.buffer - 1]
                path = shot.disk.put_frame(ref.frame, digest_bytes(data), None, None, data,
                                           check=lambda p: check_exr_file(p, **size))
            else:
                image = decode_pixels(ref, buffers, channels=(3, 1), **size)
                path = shot.disk.put_frame(ref.frame, image.digest, image.pixels, None)
                if image.sanitised:
                    sanitised.append(ref.frame)
            with shot.lock:  # re-checked here: a propagate may have started while the file was written
                current = shot.frames.get(ref.frame)
                if shot.busy and current is not None and current[1] != path:
                    path.unlink(missing_ok=True)
                    raise ProtocolError(P.E_BUSY, f"shot {shot.id!r} started propagating: frame {ref.frame} "
                                                  "was not replaced")
                shot.frames[ref.frame] = (path.name.split(".")[1], path)
                shot.disk.remove_other_versions(ref.frame, keep=path)
            received.append(ref.frame)
        return P.PutFramesReply(shot=shot.id, received=received, sanitised=sanitised)

    def add_prompt(self, req: P.AddPrompt, buffers: Sequence[P.Buffer],
                   files: dict[int, np.ndarray] | None = None) -> P.Reply:
        shot = self.store.get(req.shot)
        shot.check_frame(req.frame)
        mask = None
        if req.mask is not None:
            mask = decode_pixels(req.mask, buffers, width=shot.width, height=shot.height, channels=(1,),
                                 file_pixels=(files or {}).get(0)).pixels[:, :, 0].astype(np.float32)
        try:
            points = []
            for p in req.points:
                if len(p) not in (2, 3):
                    raise PromptError(f"a point is [x, y] or [x, y, label], got {p}")
                points.append(Point(p[0], p[1], int(p[2]) if len(p) == 3 else 1))
            prompt = Prompt(frame=req.frame, box=tuple(req.box) if req.box is not None else None,
                            points=tuple(points), mask=mask)
        except (PromptError, TypeError, ValueError) as exc:
            raise ProtocolError(P.E_BAD_PROMPT, str(exc)) from None
        with shot.lock:
            affected = shot.set_prompt(req.frame, prompt, chained=self.engine.chained)
        return P.PromptReply(shot=shot.id, frame=req.frame, affected=affected, keyframes=sorted(shot.prompts))

    def remove_prompt(self, req: P.RemovePrompt) -> P.Reply:
        shot = self.store.get(req.shot)
        with shot.lock:
            affected = shot.set_prompt(req.frame, None, chained=self.engine.chained)
        return P.PromptReply(shot=shot.id, frame=req.frame, affected=affected, keyframes=sorted(shot.prompts))

    def get_alpha(self, req: P.GetAlpha) -> tuple[P.Reply, list[P.Buffer]]:
        if len(req.frames) > P.MAX_ALPHAS_PER_REPLY:
            raise ProtocolError(P.E_TOO_LARGE, f"{len(req.frames)} frames asked; at most {P.MAX_ALPHAS_PER_REPLY} "
                                               "per get_alpha")
        _check_alpha_format(req.alpha_encoding, req.alpha_dtype)
        shot = self.store.get(req.shot)
        for frame in req.frames:
            shot.check_frame(frame)
        with shot.lock:
            keys = (shot.alpha_keys(self.engine_id, chained=self.engine.chained, reach=self.engine.neighbour_reach)
                    if self._complete(shot) else {})
        alphas, buffers, missing = [], [], []
        for frame in req.frames:
            alpha = shot.disk.load_alpha(frame, keys[frame]) if frame in keys else None
            if alpha is None:
                missing.append(frame)
                continue
            ref, buf = alpha_to_wire(alpha, frame, encoding=req.alpha_encoding, dtype=req.alpha_dtype,
                                     cached=True, buffer_index=len(buffers) + 1)
            alphas.append(ref)
            buffers.append(buf)
        return P.GetAlphaReply(shot=shot.id, alphas=alphas, missing=missing), buffers

    @staticmethod
    def _complete(shot: Shot) -> bool:
        return bool(shot.prompts) and all(k in shot.frames for k in shot.prompts)

    def close_shot(self, req: P.CloseShot) -> P.Reply:
        self.store.close(req.shot, purge=req.purge)
        return P.CloseShotReply(shot=req.shot)

    # -- compute thread --------------------------------------------------------------------
    def propagate(self, req: P.Propagate, job: Job, send: Send) -> P.Reply:
        start = time.perf_counter()
        if req.direction not in P.DIRECTIONS:
            raise ProtocolError(P.E_BAD_MESSAGE, f"direction must be one of {P.DIRECTIONS}, got {req.direction!r}")
        if req.from_frame is not None and req.direction == P.DIR_BOTH:
            raise ProtocolError(P.E_BAD_MESSAGE, "from_frame needs direction 'forward' or 'backward'")
        _check_alpha_format(req.alpha_encoding, req.alpha_dtype)
        for _ in range(3):
            shot = self.store.get(req.shot)
            with shot.lock:  # one consistent snapshot: prompts, frames and cache keys
                if shot.closed:  # closed or evicted since the look-up: look again (closed with purge: no_shot)
                    continue
                targets, source, keys = self._plan(shot, req)
                prompts = list(shot.prompts.values())
                shot.busy += 1  # under the lock that close_shot and eviction check it under
                break
        else:
            raise ProtocolError(P.E_NO_SHOT, f"shot {req.shot!r} was closed while this propagate started; "
                                             "open it again")
        try:
            return self._run(shot, req, job, send, targets, source, keys, prompts, start)
        finally:
            with shot.lock:
                shot.busy -= 1
            shot.drop_cache()

    def _plan(self, shot: Shot, req: P.Propagate):
        if not shot.prompts:
            raise ProtocolError(P.E_BAD_PROMPT, f"shot {shot.id!r} has no prompt: add_prompt first")
        first = shot.first if req.first is None else req.first
        last = shot.last if req.last is None else req.last
        shot.check_frame(first)
        shot.check_frame(last)
        if first > last:
            raise ProtocolError(P.E_BAD_FRAME, f"empty range: first {first} is after last {last}")
        if req.from_frame is not None and req.from_frame not in shot.prompts:
            raise ProtocolError(P.E_BAD_PROMPT, f"from_frame {req.from_frame} is not a keyframe of shot "
                                                f"{shot.id!r} (keyframes: {sorted(shot.prompts)})")
        targets = list(range(first, last + 1))
        if req.direction != P.DIR_BOTH:
            origin = req.from_frame if req.from_frame is not None else max(shot.prompts)
            targets = [f for f in targets if (f >= origin if req.direction == P.DIR_FORWARD else f <= origin)]
        missing = [f for f in sorted(set(targets) | set(shot.prompts)) if f not in shot.frames]
        if missing:
            shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
            raise ProtocolError(P.E_MISSING_FRAMES, f"shot {shot.id!r} lacks {len(missing)} frame(s) needed: "
                                                    f"{shown}; send them with put_frames")
        source = shot.source()
        keys = shot.alpha_keys(self.engine_id, chained=self.engine.chained, frames=source.frames,
                               reach=self.engine.neighbour_reach)
        return targets, source, keys

    def _run(self, shot: Shot, req: P.Propagate, job: Job, send: Send, targets: list[int], source,
             keys: dict[int, str], prompts: list[Prompt], start: float) -> P.Reply:
        cached = [f for f in targets if shot.disk.has_alpha(f, keys[f])]
        todo = [f for f in targets if f not in set(cached)]
        total = len(todo) + (len(cached) if req.include_cached else 0)
        done = 0
        computed: list[int] = []

        def emit(frame: int, alpha: np.ndarray, was_cached: bool) -> None:
            nonlocal done
            ref, buf = alpha_to_wire(alpha, frame, encoding=req.alpha_encoding, dtype=req.alpha_dtype,
                                     cached=was_cached, buffer_index=1)
            send(P.AlphaMessage(alpha=ref), [buf])
            done += 1
            send(P.Progress(done=done, total=total, frame=frame), [])

        if req.include_cached:
            for frame in cached:
                if job.cancel.is_set():
                    break
                alpha = shot.disk.load_alpha(frame, keys[frame])
                if alpha is not None:
                    emit(frame, alpha, True)
        if todo and not job.cancel.is_set():
            results = self.engine.run(source, prompts, only=set(todo))
            remaining = set(todo)
            try:
                for result in results:
                    if result.frame not in remaining:
                        continue
                    alpha = np.ascontiguousarray(result.alpha, dtype=np.float32)
                    # cache first: every frame a client has seen survives a crash
                    shot.disk.save_alpha(result.frame, keys[result.frame], alpha)
                    computed.append(result.frame)
                    emit(result.frame, alpha, False)
                    remaining.discard(result.frame)
                    if job.cancel.is_set() or not remaining:
                        break  # closing the generator stops a pass that runs on past the last frame needed
            except PromptError as exc:
                raise ProtocolError(P.E_BAD_PROMPT, str(exc)) from None
            except ProtocolError:
                raise
            except Exception as exc:  # noqa: BLE001 - an engine failure is a reply, not a dead server
                log.exception("engine %s failed on shot %s", self.engine.name, shot.id)
                raise ProtocolError(P.E_ENGINE, f"engine {self.engine.name} failed after "
                                                f"{len(computed)} frame(s): {type(exc).__name__}: {exc}") from None
            finally:
                results.close()
        cancelled = job.cancel.is_set() and len(computed) < len(todo)
        return P.PropagateReply(shot=shot.id, computed=computed, cached=cached, cancelled=cancelled,
                                seconds=round(time.perf_counter() - start, 4))

    def finish_job(self, job: Job) -> None:
        with self.jobs_lock:
            if self.jobs.get(job.key) is job:
                del self.jobs[job.key]


def _check_alpha_format(encoding: str, dtype: str) -> None:
    if encoding not in (P.ENC_RAW, P.ENC_EXR) or dtype not in P.DTYPES:
        raise ProtocolError(P.E_BAD_MESSAGE, f"alpha_encoding is 'raw' or 'exr' and alpha_dtype '<f2' or '<f4', "
                                             f"got {encoding!r:.20} and {dtype!r:.20}")
