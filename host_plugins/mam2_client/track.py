"""Host-agnostic tracking job for the host plugins: prompts, frame ranges, paths and the run.

A host adapter (Nuke's `host_plugins/nuke/mam2_nuke/`, Blender's `host_plugins/blender/`) reads its
UI on the host's main thread into a `TrackJob`, runs `run_job` on a worker thread and
applies the `JobResult` on the main thread. Coordinates here are the hosts' (Nuke and
Blender: origin bottom-left); `ShotPrompt.to_server` flips y for the protocol's top-left.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import wire
from .client import MAM2Error, ServerError
from .launcher import ensure_server

ENGINE_DEFAULT = "default"  # the Engine knob's "use whatever the server runs"
PADDING = re.compile(r"(#+)|%(0?\d*)d")
SHOT_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")

Progress = Callable[[str, int], None]  # (message, percent 0..100)
# frames -> EXR files (the host's main thread); raises HostError. The files are the job's: it deletes
# them once they are sent.
Render = Callable[[list[int]], dict[int, str]]
SEND_CHUNK = 8  # plate files rendered, then read into memory, at once when they are sent as bytes
SHOT_BLOCK = 1000  # a shot's frame range on the server is whole blocks of this many frames (see shot_span)


class PromptError(ValueError):
    """The prompt knobs do not describe a usable prompt (the message says which and why)."""


class HostError(MAM2Error):
    """The host could not do its part (render plates, a deleted node...); the message is for the artist."""


@dataclass(frozen=True)
class ShotPrompt:
    """One keyframe prompt in the host's pixel coordinates (Nuke, Blender: origin bottom-left).

    box: (x, y, r, t) (left, bottom, right, top, as Nuke's BBox_Knob holds it) or None;
    points: (x, y, label), label 1 = fg, 0 = bg;
    mask: None, a (height, width) float array (numpy) with the bottom row first like the host's pixels,
    or the path of a one-channel EXR the host rendered (rows top-down, as files are).
    """

    frame: int
    box: tuple[float, float, float, float] | None
    points: tuple[tuple[float, float, int], ...] = ()
    mask: Any = field(default=None, compare=False, repr=False)

    def validate(self, width: int, height: int, first: int, last: int) -> None:
        """Raise PromptError when the server would refuse it (empty/off-frame box, no prompt...)."""
        if not first <= self.frame <= last:
            raise PromptError(f"prompt frame {self.frame} is outside the tracked range {first}-{last}")
        if self.box is None and not self.points and self.mask is None:
            raise PromptError(f"no prompt on frame {self.frame}: enable the box, a foreground point or the mask")
        if self.mask is not None and not isinstance(self.mask, str):
            shape = tuple(getattr(self.mask, "shape", ()))
            if shape != (height, width):
                raise PromptError(f"the mask on frame {self.frame} is {shape}, not the {width}x{height} frame")
            if not (self.mask > 0.5).any():
                raise PromptError(f"the mask on frame {self.frame} is empty: draw it over the subject")
        if self.box is not None:
            x, y, r, t = self.box
            if r - x < 1 or t - y < 1:
                raise PromptError(f"the box ({x:g}, {y:g}, {r:g}, {t:g}) is empty: drag it over the subject "
                                  f"on frame {self.frame}")
            if r <= 0 or t <= 0 or x >= width or y >= height:
                raise PromptError(f"the box ({x:g}, {y:g}, {r:g}, {t:g}) lies outside the {width}x{height} frame")
        for x, y, label in self.points:
            if not (0 <= x < width and 0 <= y < height):
                kind = "foreground" if label else "background"
                raise PromptError(f"a {kind} point ({x:g}, {y:g}) lies outside the {width}x{height} frame")
        if self.points and not any(label for _, _, label in self.points) and self.box is None and self.mask is None:
            raise PromptError("only background points: add a foreground point or the box")

    def to_server(self, height: int) -> tuple[tuple[float, float, float, float] | None, list[tuple[float, float, int]]]:
        """(box (x0, y0, x1, y1), points) with the origin top-left, as the protocol wants."""
        box = None
        if self.box is not None:
            x, y, r, t = self.box
            box = (x, height - t, r, height - y)
        return box, [(x, height - y, label) for x, y, label in self.points]

    def server_mask(self):
        """The mask with the top row first, as the protocol wants (a file path as it is; None without)."""
        if self.mask is None or isinstance(self.mask, str):
            return self.mask
        return self.mask[::-1].astype("float32").copy()


@dataclass(frozen=True)
class TrackJob:
    """Everything the worker needs; plain data, read from knobs on the main thread."""

    address: str
    start_server: bool
    engine: str  # ENGINE_DEFAULT or an engine name for a locally started server
    shot: str
    first: int
    last: int
    width: int
    height: int
    plates: dict[int, str]  # frame -> scene-linear EXR the server can read
    prompt: ShotPrompt
    output_pattern: str  # printf-style alpha path, e.g. /out/sh010.alpha.%04d.exr
    retrack: bool = False  # keep the server's frames when it has them all; add this keyframe
    # Every keyframe of the shot (empty: just `prompt`). When given, it is the whole truth: the
    # server's other keyframes are removed (remove_prompt) and these are (re)sent; an unchanged key
    # keeps its cached frames.
    keyframes: tuple[ShotPrompt, ...] = ()
    colorspace: str | None = None  # the plates' colour space (OCIO name); None: the server's default
    refresh_plates: bool = False  # render/send frames the server already holds again (the input changed)
    server_command: tuple[str, ...] = ()  # how to start `mam2` (else launcher.server_command())
    server_command_setting: str = ""  # where the host's artist sets that command (for the error message)
    span: tuple[int, int] | None = None  # the shot's range on the server (shot_span); None: first..last


@dataclass
class JobResult:
    written: list[int] = field(default_factory=list)  # alpha files written this run
    computed: list[int] = field(default_factory=list)
    cached: list[int] = field(default_factory=list)
    cancelled: bool = False
    warning: str = ""
    error: str = ""  # set instead of raising, so the adapter only has to show it
    server: dict = field(default_factory=dict)  # the server's hello: engine, device, version


def owned_uuid(current: str, owner: str, me: str, has_twin: Callable[[str], bool]) -> str:
    """The shot UUID of the node or scene named `me`, kept with its file: `current`, or a fresh one when
    there is none or when another node or scene shares it (`has_twin(uuid)`: a copy) and `owner`, the
    name recorded with the UUID, is not `me`. So of two with one UUID the copy gets a new one,
    whichever acts first, and the original keeps its shot; a renamed one with no twin keeps its UUID.
    The host then records `me` as the owner."""
    if not current or (owner != me and has_twin(current)):
        return uuid.uuid4().hex
    return current


def shot_id(host: str, key: str, width: int, height: int, first: int, last: int, tag: str = "") -> str:
    """A valid, stable shot id per (host, key, size, range[, tag]): other parameters get a new shot.
    `key` names the node or scene for good (its UUID: stable across Save As and renames); `tag` holds
    anything else open_shot fixes, e.g. the colour space. The range is the one the shot is opened
    with: pass its `shot_span`, so that changing the tracked range keeps the shot."""
    digest = hashlib.sha1(f"{host}|{key}|{width}x{height}|{first}-{last}|{tag}".encode()).hexdigest()[:10]
    name = SHOT_CHARS.sub("_", key).strip("_.-")[:60] or "node"
    return f"{host}_{name}_{digest}"


def shot_span(first: int, last: int, previous: tuple[int, int] | None = None) -> tuple[int, int]:
    """The frame range to open the shot of the tracked range first..last with.

    The server fixes a shot's range when it is opened (open_shot with another range is refused),
    while its plates and finished alphas are per frame and keyed by content. So the shot covers
    the whole SHOT_BLOCK-frame blocks around the tracked range, and keeps `previous` (the span it
    was opened with before) while the tracked range fits in it: widening or narrowing the tracked
    range inside keeps the shot, its plates and its finished alphas.
    """
    if previous is not None and previous[0] <= first and last <= previous[1]:
        return int(previous[0]), int(previous[1])
    return first // SHOT_BLOCK * SHOT_BLOCK, (last // SHOT_BLOCK + 1) * SHOT_BLOCK - 1


def frame_path(pattern: str, frame: int) -> str:
    """Expand `####` or `%04d` padding for one frame (no padding: the path itself)."""
    def pad(m: re.Match) -> str:
        width = len(m.group(1)) if m.group(1) else int(m.group(2) or 0)
        return f"{frame:0{width}d}"
    return PADDING.sub(pad, pattern, count=1)


def write_atomic(path: str, data: bytes | memoryview) -> None:
    """Write beside the target, then rename: a Read never sees half a file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run_job(job: TrackJob, cancel: threading.Event, progress: Progress,
            render: Render | None = None, on_written: Callable[[int], None] | None = None,
            context=None) -> JobResult:
    """Track (or re-track) one shot on the server and write its alphas. Runs on a worker thread.

    `render(frames)` makes plates for frames that have no file in `job.plates` and that the
    server lacks (all of them with `job.refresh_plates`); the host runs it on its main thread.
    It is called SEND_CHUNK frames at a time, and each chunk's files are deleted once sent.
    on_written(frame) is called after each alpha file is written (a live preview). context: a
    zmq.Context for this job's sockets (default pyzmq's shared one); a host that quits mid-run
    terminates it, which ends the job's blocking calls (an interpreter cannot finalise while a
    thread holds a socket of a live context).
    Never raises for server/prompt problems: they come back in JobResult.error.
    """
    result = JobResult()
    client = None
    try:
        serve_args = ("--engine", job.engine) if job.engine != ENGINE_DEFAULT else ()
        progress(f"connecting to {job.address}", 0)
        client = ensure_server(job.address, start=job.start_server, serve_args=serve_args,
                               command=job.server_command or None, command_setting=job.server_command_setting,
                               **({"context": context} if context else {}))
        hello = client.hello()
        result.server = {k: hello.get(k) for k in ("server", "engine", "device")}
        engine = hello.get("engine", "")
        if job.engine != ENGINE_DEFAULT and engine != job.engine:
            result.warning = f"the server runs engine '{engine}', not '{job.engine}' (restart it to switch)"
        span = job.span or (job.first, job.last)
        opened = client.open_shot(job.shot, first=span[0], last=span[1], width=job.width, height=job.height,
                                  colorspace=job.colorspace)
        _send_plates(client, job, set(opened["received"]), render, progress, cancel)
        if cancel.is_set():
            result.cancelled = True
            return result
        _send_prompts(client, job, opened.get("keyframes", ()))

        def on_alpha(alpha) -> None:
            write_atomic(frame_path(job.output_pattern, alpha.frame), alpha.data)
            result.written.append(alpha.frame)
            if on_written is not None:
                on_written(alpha.frame)

        def on_progress(done: int, total: int, frame: int) -> bool:
            label = (f"cancelling after the frame in progress ({done}/{total} done)" if cancel.is_set()
                     else f"frame {frame} ({done}/{total})")
            progress(label, 10 + int(90 * done / max(total, 1)))
            return not cancel.is_set()

        progress("tracking", 10)
        done = client.propagate(job.shot, first=job.first, last=job.last, alpha_encoding=wire.ENC_EXR,
                                on_progress=on_progress, on_alpha=on_alpha, stop=cancel.is_set)
        result.computed, result.cached, result.cancelled = done.computed, done.cached, done.cancelled
        absent = [f for f in done.cached if not os.path.exists(frame_path(job.output_pattern, f))]
        if absent and not done.cancelled:  # e.g. a new output folder: fetch the server's finished frames
            found, _ = client.get_alpha(job.shot, absent, alpha_encoding=wire.ENC_EXR)
            for alpha in found.values():
                on_alpha(alpha)
        progress("done", 100)
    except ServerError as exc:
        result.error = f"the server refused '{exc.op}': {exc.message} ({exc.code})"
    except MAM2Error as exc:  # also HostError
        result.error = str(exc)
    except OSError as exc:  # an alpha that cannot be written, a plate or mask file that cannot be read
        result.error = f"file error: {exc}"
    except Exception as exc:  # a malformed reply or a bug: still a message for the artist, never a crash
        result.error = f"internal error: {exc!r}"
    finally:
        if client is not None:
            client.close()
    return result


def reads_our_files(address: str) -> bool:
    """True when the server at `address` runs on this machine and can open our files by path."""
    return wire.is_loopback(address)


def _send_plates(client, job: TrackJob, received: set[int], render: Render | None, progress: Progress,
                 cancel: threading.Event) -> None:
    """Plate files by path to a local server, as bytes to a remote one; renders only what is lacking."""
    if reads_our_files(job.address):
        if job.plates and (not job.retrack or job.refresh_plates or set(job.plates) - received):
            progress(f"sending {len(job.plates)} plates", 2)
            client.put_frames(job.shot, job.plates, encoding=wire.ENC_PATH)
    else:
        _send_files(client, job.shot, {f: p for f, p in job.plates.items()
                                       if job.refresh_plates or f not in received}, progress)
    wanted = [f for f in range(job.first, job.last + 1)
              if f not in job.plates and (job.refresh_plates or f not in received)]
    if render is not None and wanted:
        _render_and_send(client, job.shot, wanted, render, progress, cancel)


def _render_and_send(client, shot: str, frames: list[int], render: Render, progress: Progress,
                     cancel: threading.Event) -> None:
    """SEND_CHUNK frames at a time: render them, send them as bytes (the files are scratch, gone after
    this job), delete them. The host's temp space holds one chunk, its main thread is free between
    chunks, and a cancel lands between chunks."""
    for i in range(0, len(frames), SEND_CHUNK):
        chunk = frames[i:i + SEND_CHUNK]
        progress(f"rendering input frames {chunk[0]}-{chunk[-1]} ({i}/{len(frames)} sent)",
                 1 + 9 * i // len(frames))
        if cancel.is_set():  # also set by the progress call (a host's progress bar Cancel)
            return
        client.close()  # no socket held while the host's main thread renders (the next call reconnects)
        files = render(chunk)
        try:
            _send_files(client, shot, files, None)
        finally:
            for path in files.values():
                try:
                    os.remove(path)
                except OSError:
                    pass


def _send_files(client, shot: str, files: dict[int, str], progress: Progress | None) -> None:
    """EXR files as bytes, a few at a time (a remote server cannot read our paths)."""
    frames = sorted(files)
    for i in range(0, len(frames), SEND_CHUNK):
        if progress is not None:
            progress(f"sending plates ({i}/{len(frames)})", 5)
        chunk = {}
        for f in frames[i:i + SEND_CHUNK]:
            with open(files[f], "rb") as fh:
                chunk[f] = fh.read()
        client.put_frames(shot, chunk, encoding=wire.ENC_EXR)


def _send_prompts(client, job: TrackJob, server_keys) -> None:
    prompts = job.keyframes or (job.prompt,)
    if job.keyframes:
        for frame in sorted(set(server_keys) - {p.frame for p in prompts}):
            client.remove_prompt(job.shot, frame)
    local = reads_our_files(job.address)
    for prompt in prompts:
        box, points = prompt.to_server(job.height)
        mask = prompt.server_mask()
        if isinstance(mask, str) and not local:  # a remote server cannot read our file: its bytes
            with open(mask, "rb") as fh:
                mask = fh.read()
        client.add_prompt(job.shot, prompt.frame, box=box, points=points, mask=mask)


def summary(result: JobResult, frames: Sequence[int]) -> str:
    """The status line for a finished job."""
    if result.error:
        return f"Error: {result.error}"
    head = "Cancelled" if result.cancelled else "Done"
    text = (f"{head}: {len(result.computed)} frames computed, {len(result.cached)} cached, "
            f"{len(result.written)} alphas written; range {frames[0]}-{frames[-1]}")
    return f"{text}. Warning: {result.warning}" if result.warning else text
