"""The MAM2 node's Python side: translate between the MAM2 gizmo and `mam2_client.track`.

Button scripts in MAM2.gizmo call `track`, `retrack`, `cancel` and `set_prompt_frame`
with `nuke.thisNode()`. Knobs and nodes are touched only on Nuke's main thread;
network I/O runs on a worker thread, which reports through `nuke.ProgressTask` and
hands its result back with `nuke.executeInMainThread`. Headless (`nuke -t`) runs
the job inline, as there is no event loop to hand back to.
"""
from __future__ import annotations

import logging
import os
import threading

from mam2_client import track as core
import nuke

log = logging.getLogger(__name__)

READ_NODE = "AlphaRead"  # inside the gizmo: Read of the alpha sequence
COPY_NODE = "AlphaCopy"  # Copy rgba.alpha from READ_NODE into the input (disabled until alphas exist)
INPUT_NODE = "Input1"
FG_POINTS = ("fg1", "fg2", "fg3")
BG_POINTS = ("bg1", "bg2")

_jobs: dict[str, tuple[threading.Thread, threading.Event]] = {}  # node fullName -> running job


class _Refused(Exception):
    """A problem found on the main thread before any I/O; the message is for the artist."""


def track(node) -> None:
    """'Track': send the plates and the prompt on `prompt_frame`, propagate over the range."""
    _start(node, retrack=False)


def retrack(node) -> None:
    """'Re-track from this frame': the prompt knobs at the current frame become a keyframe."""
    _start(node, retrack=True)


def cancel(node) -> None:
    """'Cancel': the worker stops after the frame in progress (never blocks on the network)."""
    running = _jobs.get(node.fullName())
    if running is None:
        _status(node, "Nothing to cancel")
        return
    running[1].set()
    _status(node, "Cancelling after the frame in progress...")


def set_prompt_frame(node) -> None:
    node["prompt_frame"].setValue(nuke.frame())


def _start(node, *, retrack: bool) -> None:
    key = node.fullName()
    if key in _jobs:
        _fail(node, "a run is already going on this node; Cancel it first")
        return
    try:
        job = _build_job(node, retrack)
    except (_Refused, core.PromptError) as exc:
        _fail(node, str(exc))
        return
    event = threading.Event()
    frames = list(range(job.first, job.last + 1))
    _status(node, f"Tracking {job.first}-{job.last} on {job.address}...")
    if not nuke.GUI:
        _finish(node, job, core.run_job(job, event, lambda message, percent: None), frames)
        return
    title = f"MAM2 {node.name()}"  # read here: knobs and names only on the main thread
    worker = threading.Thread(target=_work, args=(node, title, job, event, frames), name=f"mam2-{key}", daemon=True)
    _jobs[key] = (worker, event)
    worker.start()


def _work(node, title: str, job: core.TrackJob, event: threading.Event, frames: list[int]) -> None:
    task = nuke.ProgressTask(title)

    def progress(message: str, percent: int) -> None:
        if task.isCancelled():
            event.set()
        task.setMessage(message)
        task.setProgress(percent)

    try:
        result = core.run_job(job, event, progress)
    except Exception as exc:  # a bug must still reach the artist, not die in a thread
        log.exception("mam2: job failed")
        result = core.JobResult(error=f"internal error: {exc!r}")
    nuke.executeInMainThread(_finish, args=(node, job, result, frames))
    # the progress bar goes away with `task` when this thread ends


def _finish(node, job: core.TrackJob, result: core.JobResult, frames: list[int]) -> None:
    """Main thread: point the Read at the alphas, enable the Copy, show the outcome."""
    _jobs.pop(node.fullName(), None)
    if result.written or result.cached:
        read = node.node(READ_NODE)
        read["file"].setValue(job.output_pattern.replace(os.sep, "/"))
        for name, value in (("first", job.first), ("last", job.last), ("origfirst", job.first),
                            ("origlast", job.last)):
            read[name].setValue(value)
        read["reload"].execute()
        node.node(COPY_NODE)["disable"].setValue(False)
    if result.error:
        _fail(node, result.error)
    else:
        _status(node, core.summary(result, frames))


def _build_job(node, retrack: bool) -> core.TrackJob:
    """Read the knobs and the input (main thread); render plates that are not EXR files."""
    plate = node.input(0)
    if plate is None:
        raise _Refused("no input: connect the plate to the MAM2 node's input")
    fmt = plate.format()
    width, height = fmt.width(), fmt.height()
    if node["use_input_range"].value():
        first, last = plate.firstFrame(), plate.lastFrame()
    else:
        first, last = int(node["range_first"].value()), int(node["range_last"].value())
    if last < first:
        raise _Refused(f"the frame range {first}-{last} is empty")
    frame = nuke.frame() if retrack else int(node["prompt_frame"].value())
    prompt = _prompt(node, frame)
    prompt.validate(width, height, first, last)
    address = node["address"].value().strip()
    if not address:
        raise _Refused("the server address is empty (e.g. tcp://127.0.0.1:5557)")
    shot = core.shot_id("nuke", nuke.root()["name"].value(), node.fullName(), width, height, first, last)
    node["shot"].setValue(shot)
    return core.TrackJob(address=address, start_server=bool(node["start_server"].value()),
                         engine=node["engine"].value(), shot=shot, first=first, last=last, width=width,
                         height=height, plates=_plates(node, plate, first, last), prompt=prompt,
                         output_pattern=core.alpha_pattern(node["output_dir"].value(), shot), retrack=retrack)


def _prompt(node, frame: int) -> core.ShotPrompt:
    box = None
    if node["use_box"].value():
        knob = node["box"]
        box = tuple(float(knob.getValueAt(frame, i)) for i in range(4))
    points = []
    for names, label in ((FG_POINTS, 1), (BG_POINTS, 0)):
        for name in names:
            if node[f"{name}_on"].value():
                knob = node[name]
                points.append((float(knob.getValueAt(frame, 0)), float(knob.getValueAt(frame, 1)), label))
    return core.ShotPrompt(frame=frame, box=box, points=tuple(points))


def _plates(node, plate, first: int, last: int) -> dict[int, str]:
    """Scene-linear EXR per frame: a Read's own files when they are EXR, else a render of the input."""
    if plate.Class() == "Read":
        pattern = plate["file"].value()
        if pattern.lower().endswith(".exr"):  # EXR plates are scene-linear; the server reads them itself
            return {f: core.frame_path(pattern, f) for f in range(first, last + 1)}
    pattern = os.path.join(os.path.dirname(core.alpha_pattern(node["output_dir"].value(), node["shot"].value())),
                           "plates", node["shot"].value(), "plate.%04d.exr").replace(os.sep, "/")  # per shot
    os.makedirs(os.path.dirname(pattern), exist_ok=True)
    with node:
        write = nuke.nodes.Write(file=pattern, file_type="exr", channels="rgb")
        try:
            write["datatype"].setValue("32 bit float")
            write.setInput(0, node.node(INPUT_NODE))
            nuke.execute(write, first, last)
        except RuntimeError as exc:  # a render error or the artist cancelled the render
            raise _Refused(f"rendering the input plates failed: {exc}") from None
        finally:
            nuke.delete(write)
    return {f: core.frame_path(pattern, f) for f in range(first, last + 1)}


def _status(node, text: str) -> None:
    node["status"].setValue(text)


def _fail(node, text: str) -> None:
    _status(node, f"Error: {text}")
    nuke.message(f"MAM2: {text}")
