"""Running a Track: read the node (main thread), talk to the server (worker thread), show the result
(main thread).

As Foundry's "Threading" page says: knobs and nodes only on the main thread; the worker reports
through nuke.ProgressTask and hands back with nuke.executeInMainThread; renders it needs run on
the main thread through nuke.executeInMainThreadWithResult (whose callee never raises: its result
says what happened). Headless (`nuke -t`, nuke.GUI false) has no event loop: all runs inline.
A node deleted or a script closed while a job runs is expected: the job's entry is always
removed, and nothing is applied to a node that is gone.

Closing the script (onScriptClose) cancels every run, on the server too. Nuke has no exit
callback but finalises its Python (atexit): quitting ends the workers as mam2_client.worker does
(up to QUIT_WAIT_S for their last replies, then their zmq contexts are terminated), so that no
thread holds a socket of a live context while the interpreter exits.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field

import nuke
from mam2_client import track as core
from mam2_client import worker

from . import graph, keys, plates
from .common import Refused, deleted, fail

log = logging.getLogger(__name__)
PLATE_INPUT = 0


@dataclass(eq=False)
class Running(worker.Worker):
    """A job in flight: its cancel event, and (worker.Worker) its own zmq context and its thread."""

    address: str
    shot: str
    scratch: str = ""  # its temp folder (rendered plates and masks), if any
    cancel: threading.Event = field(default_factory=threading.Event, init=False)
    told_server: bool = field(default=False, init=False)  # told the server to cancel (script closed, quit)


_jobs: dict[str, Running] = {}  # shot uuid -> the running job
helpers: set[Running] = set()  # other workers talking to a server (the Server tab's actions)
_hooked = []  # the onScriptClose and atexit callbacks, registered once


def hook() -> None:
    """Register the script-close and quit callbacks (once, when the first worker starts)."""
    if not _hooked:
        nuke.addOnScriptClose(cancel_all)
        atexit.register(quit_all)
        _hooked.append(True)


@dataclass
class Context:
    """What the main thread knows about a job besides the TrackJob (for the status and cleanup)."""

    key: str
    title: str
    read_pattern: str
    fmt: object  # the plate's nuke.Format, for AlphaRead
    scratch: str  # temp folder of rendered masks/plates, removed when the job ends
    notes: list[str] = field(default_factory=list)


def start(node, *, set_key: bool) -> None:
    """'Track' (set_key: also key the current frame first). Main thread."""
    key = graph.shot_uuid(node)
    if key in _jobs:
        raise Refused("a run is already going on this node; Cancel it first")
    notes = []
    if set_key:
        keys.add(node, nuke.frame())
    elif not keys.load(node):
        keys.add(node, nuke.frame())
        notes.append(f"keyed frame {nuke.frame()}")
    scratch = tempfile.mkdtemp(prefix="mam2_nuke_")
    try:
        job, context, render = _build(node, key, set_key, scratch, notes)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    node["status"].setValue(f"Tracking {job.first}-{job.last} on {job.address}...")
    running = _jobs[key] = Running(job.address, job.shot, scratch)
    if not nuke.GUI:
        _finish(node, job, _run(job, running, lambda message, percent: None, render), context)
        return
    hook()
    running.thread = threading.Thread(target=_work, args=(node, job, running, render, context), name=f"mam2-{key}",
                                      daemon=True)
    running.thread.start()


def _build(node, key: str, set_key: bool, scratch: str, notes: list[str]):
    plate = node.input(PLATE_INPUT)
    if plate is None:
        raise Refused("no input: connect the plate to the MAM2 node's input")
    if plate.Class() == "Read" and plate["disable"].value():
        raise Refused(f"the input {plate.name()} is disabled (Nuke shows black there): enable it, or connect the plate")
    fmt = plate.format()
    width, height = fmt.width(), fmt.height()
    first, last = graph.frame_range(node, plate)
    address = node["address"].value().strip()
    if not address:
        raise Refused("the server address is empty (e.g. tcp://127.0.0.1:5557)")
    space = graph.colorspace(node)
    span = graph.shot_span(node, first, last)
    shot = core.shot_id("nuke", key, width, height, *span, tag=space or "")
    node["shot"].setValue(shot)
    folder, read_folder, warning = graph.alpha_folder(node, shot)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise Refused(f"cannot create the alpha folder {folder}: {exc}") from None
    notes += [warning] if warning else []
    if plates.proxy_on():
        notes.append("proxy mode is on: MAM2 renders its inputs and tracks at full resolution")
    prompts = _prompts(node, scratch, width, height, first, last)
    direct = plates.direct_files(plate, first, last, core.frame_path)
    render = None if direct is not None else _plate_renderer(node, scratch)
    name = f"{shot}.alpha.%04d.exr"
    job = core.TrackJob(address=address, start_server=bool(node["start_server"].value()),
                        engine=node["engine"].value(), shot=shot, first=first, last=last, width=width, height=height,
                        plates=direct or {}, prompt=prompts[-1], output_pattern=os.path.join(folder, name),
                        retrack=set_key, keyframes=prompts, colorspace=space, span=span,
                        refresh_plates=bool(node["resend_plates"].value()))
    context = Context(key, f"MAM2 {node.name()}", f"{read_folder}/{name}", fmt, scratch, notes)
    return job, context, render


def _prompts(node, scratch: str, width: int, height: int, first: int, last: int) -> tuple[core.ShotPrompt, ...]:
    """Every key as a prompt; masks rendered at their frames from the 'mask' input."""
    stored = keys.load(node)
    masked = [k.frame for k in stored.values() if k.mask]
    masks = {}
    if masked:
        if node.input(keys.MASK_INPUT) is None:
            raise Refused(f"keys {masked} use the mask, but nothing is connected to the 'mask' input")
        masks = plates.render(node, plates.MASK_SOURCE, "alpha", os.path.join(scratch, "mask.%04d.exr"), masked)
    prompts = []
    for key in stored.values():
        box, points = keys.values(node, key)
        prompt = core.ShotPrompt(frame=key.frame, box=box, points=points, mask=masks.get(key.frame))
        try:
            prompt.validate(width, height, first, last)
        except core.PromptError as exc:
            raise Refused(str(exc)) from None
        prompts.append(prompt)
    return tuple(prompts)


def _plate_renderer(node, scratch: str):
    """render(frames) for run_job: the input rendered on the main thread (inline when headless)."""
    pattern = os.path.join(scratch, "plate.%04d.exr")

    def on_main(frames: list[int]) -> tuple[dict[int, str] | None, str]:
        try:
            return plates.render(node, plates.PLATE_SOURCE, "rgb", pattern, frames), ""
        except Refused as exc:
            return None, str(exc)
        except ValueError as exc:
            if deleted(exc):
                return None, "the MAM2 node was deleted"
            raise

    def render(frames: list[int]) -> dict[int, str]:
        outcome = on_main(frames) if not nuke.GUI else nuke.executeInMainThreadWithResult(on_main, args=(frames,))
        files, error = outcome if outcome else (None, "rendering the input failed (see the Script Editor)")
        if files is None:
            raise core.HostError(error)
        return files
    return render


def _work(node, job: core.TrackJob, running: Running, render, context: Context) -> None:
    result = _track_with_progress(job, running, render, context.title)  # its progress bar is gone by now
    nuke.executeInMainThread(_finish, args=(node, job, result, context))


def _track_with_progress(job: core.TrackJob, running: Running, render, title: str) -> core.JobResult:
    task = nuke.ProgressTask(title)  # Nuke removes the bar when this object goes away

    def progress(message: str, percent: int) -> None:
        if task.isCancelled():
            running.cancel.set()
        task.setMessage(message)
        task.setProgress(percent)
    return _run(job, running, progress, render)


def _run(job: core.TrackJob, running: Running, progress, render) -> core.JobResult:
    try:
        return core.run_job(job, running.cancel, progress, render, context=running.context)
    except Exception as exc:  # a bug must still reach the artist, not die in a thread
        log.exception("mam2: job failed")
        return core.JobResult(error=f"internal error: {exc!r}")
    finally:
        running.close()


def _finish(node, job: core.TrackJob, result: core.JobResult, context: Context) -> None:
    """Main thread: the alphas into the graph, the outcome into the status line (if the node still exists)."""
    _jobs.pop(context.key, None)
    shutil.rmtree(context.scratch, ignore_errors=True)
    try:
        node.name()  # raises if the node was deleted or its script closed meanwhile
        shown = graph.show_alphas(node, job.output_pattern, context.read_pattern, context.fmt, job.first, job.last)
        text = core.summary(result, list(range(job.first, job.last + 1)))
        if result.server:
            text += f" (server: engine {result.server.get('engine')} on {result.server.get('device')})"
        if context.notes:
            text += ". Note: " + "; ".join(context.notes)
        if result.error:
            fail(node, result.error + (f" ({'; '.join(context.notes)})" if context.notes else ""))
        else:
            node["status"].setValue(text if shown or result.cancelled else text + " (no alphas yet)")
    except ValueError as exc:
        if not deleted(exc):
            raise
        log.info("mam2: %s ended after its node was deleted; alphas: %s", context.title, job.output_pattern)


def cancel(node) -> None:
    running = _jobs.get(node["shot_uuid"].value())
    if running is None:
        node["status"].setValue("Nothing to cancel")
        return
    running.cancel.set()
    node["status"].setValue("Cancelling after the frame in progress...")


def cancel_all() -> None:
    """onScriptClose: every run stops after its frame in progress (its node is going away); the server
    is told now, as the worker may not live to tell it (Nuke quitting)."""
    running = [job for job in _jobs.values() if not job.told_server]
    for job in running:
        job.cancel.set()
        job.told_server = True
    worker.cancel_on_servers((job.address, job.shot) for job in running)


def quit_all() -> None:
    """atexit (Nuke quitting): cancel the runs, give the workers QUIT_WAIT_S for their last replies, then
    cut the sockets of those still waiting and let them end (worker.end_workers)."""
    workers = [w for w in [*_jobs.values(), *helpers] if w.thread is not None]
    if not workers:
        return
    cancel_all()
    worker.end_workers(workers)
    for running in workers:
        if running.scratch:  # its _finish will not run
            shutil.rmtree(running.scratch, ignore_errors=True)
