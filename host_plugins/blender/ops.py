"""MAM2 operators: Track, Re-track from the current frame, Cancel; the worker/timer plumbing.

bpy is touched only on the main thread: an operator copies the panel into a `TrackJob`,
a worker thread runs `mam2_client.track.run_job` (all network I/O) and posts progress
and its result on a queue, and a `bpy.app.timers` callback drains that queue, updates the
status/progress and wires the alphas into the compositor. Background Blender (`-b`, or bpy
as a module) has no event loop to run timers, so there the job runs inline, as Nuke's
adapter does for `nuke -t` (tests set INLINE_IN_BACKGROUND = False and call `pump`).
"""
from __future__ import annotations

import logging
import os
import queue
import threading

import bpy
from mam2_client import track as core

from . import nodes
from .jobspec import PanelValues, Refused, build_job
from .ui import BG_POINTS, FG_POINTS

log = logging.getLogger(__name__)
POLL_S = 0.1
INLINE_IN_BACKGROUND = True


class _Run:
    """One job in flight for a scene: the worker thread, its cancel flag and its mailbox."""

    def __init__(self, scene: str, image: str, job: core.TrackJob) -> None:
        self.scene, self.image, self.job = scene, image, job
        self.cancel = threading.Event()
        self.mailbox: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._work, name=f"mam2-{job.shot}", daemon=True)
        self.timer = self.poll  # one bound method, so that timers.is_registered/unregister find it

    def _work(self) -> None:  # worker thread: no bpy here
        try:
            result = core.run_job(self.job, self.cancel, lambda text, percent: self.mailbox.put((text, percent)))
        except Exception as exc:  # a bug must still reach the artist, not die in a thread
            log.exception("mam2: job failed")
            result = core.JobResult(error=f"internal error: {exc!r}")
        self.mailbox.put(result)

    def poll(self):
        """bpy.app.timers callback (main thread): show progress; apply the result when it is there."""
        scene = bpy.data.scenes.get(self.scene)
        while True:
            try:
                item = self.mailbox.get_nowait()
            except queue.Empty:
                return POLL_S
            if isinstance(item, core.JobResult):
                _runs.pop(self.scene, None)
                if scene is not None:
                    level, text = _finish(scene, self.image, self.job, item)
                    _report(level, text)
                return None
            if scene is not None:
                text, percent = item
                scene.mam2.status, scene.mam2.progress = f"{text}", percent / 100
                bpy.context.window_manager.progress_update(percent)
                _redraw()


_runs: dict[str, _Run] = {}  # scene name -> its running job


def pump() -> None:
    """Run the pending timer callbacks once (what Blender's event loop does; for background tests)."""
    for run in list(_runs.values()):
        if run.timer() is None and bpy.app.timers.is_registered(run.timer):
            bpy.app.timers.unregister(run.timer)


def panel_values(scene) -> PanelValues:
    s = scene.mam2
    image = s.image
    points = tuple((float(getattr(s, n)[0]), float(getattr(s, n)[1]), label)
                   for names, label in ((FG_POINTS, 1), (BG_POINTS, 0)) for n in names if getattr(s, f"{n}_on"))
    return PanelValues(
        address=s.address, start_server=s.start_server, engine=s.engine,
        image_path=bpy.path.abspath(image.filepath, library=image.library) if image and image.filepath else "",
        image_source=image.source if image else "", image_name=image.name if image else "",
        use_image_range=s.use_image_range, frame_first=s.frame_first, frame_last=s.frame_last,
        prompt_frame=s.prompt_frame, use_box=s.use_box, box_min=tuple(s.box_min), box_max=tuple(s.box_max),
        points=points, output_dir=bpy.path.abspath(s.output_dir) if s.output_dir else "",
        blend_file=bpy.data.filepath, scene=scene.name)


def _finish(scene, image_name: str, job: core.TrackJob, result: core.JobResult) -> tuple[str, str]:
    """Main thread: wire the alphas into the compositor; (report level, text) for the artist."""
    s = scene.mam2
    s.running, s.progress = False, 1.0
    bpy.context.window_manager.progress_end()
    if result.written or result.cached:
        plate = bpy.data.images.get(image_name)
        nodes.wire_alpha(scene, plate, job.output_pattern.replace(os.sep, "/"), job.first, job.last, job.shot)
    text = core.summary(result, list(range(job.first, job.last + 1)))
    s.status = text
    _redraw()
    if result.error:
        return "ERROR", f"MAM2: {result.error}"
    if result.cancelled:
        return "WARNING", f"MAM2: {text}"
    return ("WARNING" if result.warning else "INFO"), f"MAM2: {text}"


def _report(level: str, text: str) -> None:
    """Report from a timer (no operator there): through the internal report operator."""
    log.log(logging.ERROR if level == "ERROR" else logging.INFO, text)
    try:
        bpy.ops.mam2.report(level=level, message=text)
    except RuntimeError:  # background Blender raises ERROR reports; the status already shows it
        pass


def _redraw() -> None:
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "NODE_EDITOR":
                area.tag_redraw()


class _Start:
    retrack = False

    def execute(self, context):
        scene = context.scene
        if scene.name in _runs:
            self.report({"ERROR"}, "MAM2: a run is already going on this scene; Cancel it first")
            return {"CANCELLED"}
        try:
            job = build_job(panel_values(scene), retrack=self.retrack, current_frame=scene.frame_current)
        except (Refused, core.PromptError) as exc:
            scene.mam2.status = f"Error: {exc}"
            self.report({"ERROR"}, f"MAM2: {exc}")
            return {"CANCELLED"}
        s = scene.mam2
        s.shot, s.running, s.progress = job.shot, True, 0.0
        s.status = f"Tracking {job.first}-{job.last} on {job.address}..."
        context.window_manager.progress_begin(0, 100)
        run = _Run(scene.name, s.image.name, job)
        if bpy.app.background and INLINE_IN_BACKGROUND:
            level, text = _finish(scene, run.image, job, core.run_job(job, run.cancel, lambda text, percent: None))
            self.report({level}, text)
            return {"CANCELLED"} if level == "ERROR" else {"FINISHED"}
        _runs[scene.name] = run
        run.thread.start()
        bpy.app.timers.register(run.timer, first_interval=POLL_S)
        return {"FINISHED"}


class MAM2_OT_track(_Start, bpy.types.Operator):
    """Send the plates and the prompt on the prompt frame, track over the range, load the alphas"""
    bl_idname = "mam2.track"
    bl_label = "MAM2: Track"


class MAM2_OT_retrack(_Start, bpy.types.Operator):
    """The box and points become a correction on the current frame; re-track from there"""
    bl_idname = "mam2.retrack"
    bl_label = "MAM2: Re-track from current frame"
    retrack = True


class MAM2_OT_cancel(bpy.types.Operator):
    """Stop the running track after the frame in progress"""
    bl_idname = "mam2.cancel"
    bl_label = "MAM2: Cancel"

    def execute(self, context):
        run = _runs.get(context.scene.name)
        if run is None:
            self.report({"INFO"}, "MAM2: nothing to cancel")
            return {"CANCELLED"}
        run.cancel.set()
        context.scene.mam2.status = "Cancelling after the frame in progress..."
        return {"FINISHED"}


class MAM2_OT_set_prompt_frame(bpy.types.Operator):
    """Use the current frame as the prompt frame"""
    bl_idname = "mam2.set_prompt_frame"
    bl_label = "MAM2: Prompt on current frame"

    def execute(self, context):
        context.scene.mam2.prompt_frame = context.scene.frame_current
        return {"FINISHED"}


class MAM2_OT_report(bpy.types.Operator):
    """Show a MAM2 message (used by the background job's timer)"""
    bl_idname = "mam2.report"
    bl_label = "MAM2 report"
    bl_options = {"INTERNAL"}

    level: bpy.props.EnumProperty(items=[(k, k, "") for k in ("INFO", "WARNING", "ERROR")])
    message: bpy.props.StringProperty()

    def execute(self, context):
        self.report({self.level}, self.message)
        return {"FINISHED"}


CLASSES = (MAM2_OT_track, MAM2_OT_retrack, MAM2_OT_cancel, MAM2_OT_set_prompt_frame, MAM2_OT_report)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for run in list(_runs.values()):
        run.cancel.set()
        if bpy.app.timers.is_registered(run.timer):
            bpy.app.timers.unregister(run.timer)
    _runs.clear()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
