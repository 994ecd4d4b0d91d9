"""MAM2 Track and Cancel.

An operator copies the scene's settings into a `TrackJob`; a `Run` (a background.Task) runs
`mam2_client.track.run_job` on a worker thread and its timer applies what it posts: it updates
the status, wires the alpha node at the first written frame and reloads it as more arrive (a
live preview), and finishes the run. Background Blender (`-b`) has no event loop to run timers,
so there Track runs inline (tests set INLINE_IN_BACKGROUND = False and call `pump`).
"""
from __future__ import annotations

import logging
import os
import shlex

import bpy

from . import masks, nodes
from .background import Task, redraw, report_from_timer, tasks
from .background import pump  # noqa: F401  (the tests' handle on the timers, next to `tasks`)
from .jobspec import KeyValues, PanelValues, Refused, absolute, build_job, exr_size, output_folder
from .mam2_client import track as core
from .props import preferences

log = logging.getLogger(__name__)
INLINE_IN_BACKGROUND = True


def find_scene(shot_uuid: str):
    return next((s for s in bpy.data.scenes if hasattr(s, "mam2") and s.mam2.shot_uuid == shot_uuid), None)


def server_command() -> tuple[str, ...]:
    prefs = preferences()
    text = prefs.server_command.strip() if prefs is not None else ""
    if not text:
        return ()
    path = bpy.path.abspath(text)
    return (path,) if os.path.isfile(path) else tuple(shlex.split(text))


def panel_values(scene, image, node) -> PanelValues:
    """The scene's settings as plain data; the keys' Masks rasterised on their frames."""
    s = scene.mam2
    timing = nodes.timing(node) if node is not None else None
    path = bpy.path.abspath(image.filepath, library=image.library) if image and image.filepath else ""
    mask_keys = [k for k in s.keys if k.mask is not None]
    rasters = {}
    if mask_keys and timing is not None and path.lower().endswith(".exr") and os.path.isfile(path):
        width, height = exr_size(path)
        arrays = masks.rasterise(scene, [(k.mask, timing.scene_frame(k.frame)) for k in mask_keys], width, height)
        rasters = {k.frame: a for k, a in zip(mask_keys, arrays)}
    keys = tuple(KeyValues(
        frame=k.frame, box=(*k.box_min, *k.box_max) if k.use_box else None,
        points=tuple((float(p.co[0]), float(p.co[1]), int(p.label == "FG")) for p in k.points),
        mask=rasters.get(k.frame)) for k in s.keys)
    blend = bpy.data.filepath
    return PanelValues(
        address=s.address, start_server=s.start_server, engine=s.engine, server_command=server_command(),
        image_path=path, image_source=image.source if image else "", image_name=image.name if image else "",
        colorspace=image.colorspace_settings.name if image else "", timing=timing,
        use_image_range=s.use_image_range, frame_first=s.frame_first, frame_last=s.frame_last, keys=keys,
        output_dir=s.output_dir, blend_dir=os.path.dirname(blend) if blend else "", shot_uuid=s.shot_uuid,
        shot_span=stored_span(s))


def stored_span(s) -> tuple[int, int] | None:
    """The span the scene's shot was last opened with (None before the first Track)."""
    low, high = s.shot_span
    return (low, high) if low <= high else None


def plate_for_track(scene):
    """(plate Image, its Image node): the add-on's node is made, with Image > Open's mapping, when no
    node of the compositor shows the plate."""
    s = scene.mam2
    frames = nodes.plate_frames(s.image)
    if not frames:
        return s.image, None
    return s.image, nodes.ensure_plate_node(scene, s.image, frames[0], frames[-1] - frames[0] + 1, s.plate_node)


class Run(Task):
    """One Track of one scene; applies progress, written frames (live preview) and the result."""

    def __init__(self, scene, image, node, job: core.TrackJob, stored_pattern: str) -> None:
        super().__init__(scene.mam2.shot_uuid, self._track, self._apply_item)
        self.job, self.stored_pattern = job, stored_pattern
        self.image_name, self.node_name, self.timing = image.name, node.name, nodes.timing(node)
        self.plate_gone = False
        self.written: int | None = None  # the latest alpha written since the last preview
        self.previews = 0

    def _track(self, task: Task) -> core.JobResult:
        return core.run_job(self.job, self.cancel, lambda text, percent: self.post((text, percent)),
                            on_written=lambda frame: self.post(frame), context=self.context)

    def _apply_item(self, item) -> None:
        scene = find_scene(self.name)
        if scene is None:  # the scene was deleted: nothing to show it in
            self.cancel.set()
            return
        if isinstance(item, int):  # a written alpha frame: shown once the mailbox is drained
            self.written = item
        elif isinstance(item, tuple):
            text, percent = item
            scene.mam2.status, scene.mam2.progress = text, percent / 100
            _progress("update", percent)
            redraw()
        else:
            result = item if isinstance(item, core.JobResult) else core.JobResult(error=f"internal error: {item!r}")
            report_from_timer(*finish(scene, self, result))

    def failed(self, exc: Exception) -> None:
        """The run ended on a bug in the add-on: the scene shows it and Track works again."""
        text = f"internal error: {type(exc).__name__}: {exc} (see the console)"
        scene = find_scene(self.name)
        if scene is not None:
            scene.mam2.running = False
            scene.mam2.status = f"Error: {text}"
        try:
            _progress("end")
        except Exception:
            log.exception("mam2: ending the progress bar failed")
        report_from_timer("ERROR", f"MAM2: {text}")

    def drained(self) -> None:
        scene = find_scene(self.name)
        if self.written is not None and scene is not None:  # the live preview: wire or reload the alphas
            self._wire(scene, self.written)
            self.written = None
            self.previews += 1

    def _wire(self, scene, frame: int) -> None:
        stored = core.frame_path(self.stored_pattern, frame)
        _, plate = nodes.wire_alpha(scene, bpy.data.images.get(self.image_name), self.timing, stored,
                                    self.job.shot, self.node_name)
        self.plate_gone = not plate
        redraw()


def finish(scene, run: Run, result: core.JobResult) -> tuple[str, str]:
    """Main thread: show the result; (report level, text) for the artist."""
    s = scene.mam2
    s.running, s.progress = False, 1.0
    _progress("end")
    text = core.summary(result, list(range(run.job.first, run.job.last + 1)))
    done = [f for f in result.written + result.cached
            if os.path.exists(core.frame_path(run.job.output_pattern, f))]
    if done:
        run._wire(scene, done[0])
        if run.plate_gone:
            text += f". The plate image '{run.image_name}' is gone: the alphas are in the '{nodes.ALPHA_NODE}' node"
    s.status = text
    redraw()
    if result.error:
        return "ERROR", f"MAM2: {result.error}"
    return ("WARNING" if result.cancelled or result.warning else "INFO"), f"MAM2: {text}"


def _progress(what: str, value: int = 0) -> None:
    wm = bpy.context.window_manager
    if wm is not None:
        {"begin": lambda: wm.progress_begin(0, 100), "update": lambda: wm.progress_update(value),
         "end": wm.progress_end}[what]()


class MAM2_OT_track(bpy.types.Operator):
    """Send the plates and every key to the MAM2 server, track over the plate, load the alphas as they come"""
    bl_idname = "mam2.track"
    bl_label = "MAM2: Track"

    directory: bpy.props.StringProperty(subtype="DIR_PATH", options={"SKIP_SAVE", "HIDDEN"})

    def invoke(self, context, event):
        s = context.scene.mam2
        if not bpy.data.filepath and (not s.output_dir or s.output_dir.startswith("//")):
            context.window_manager.fileselect_add(self)  # an unsaved file: ask where the alphas go
            return {"RUNNING_MODAL"}
        return self.execute(context)

    def execute(self, context):
        scene = context.scene
        s = scene.mam2
        if self.directory:
            s.output_dir = self.directory
        s.ensure_uuid(scene)
        if s.shot_uuid in tasks:
            self.report({"ERROR"}, "MAM2: this scene is already tracking; Cancel it first")
            return {"CANCELLED"}
        try:
            image, node = plate_for_track(scene)
            values = panel_values(scene, image, node)
            job = build_job(values)
        except (Refused, core.PromptError) as exc:
            s.status = f"Error: {exc}"
            self.report({"ERROR"}, f"MAM2: {exc}")
            return {"CANCELLED"}
        s.shot_span = job.span  # the next Track keeps this shot while its range fits in the span
        folder = output_folder(values.output_dir, job.shot)
        path = absolute(folder, values.blend_dir)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            s.status = f"Error: cannot make the alpha folder {path}: {reason}"
            self.report({"ERROR"}, f"MAM2: cannot make the alpha folder {path}: {reason}; choose another Output "
                                   "folder")
            return {"CANCELLED"}
        run = Run(scene, image, node, job, folder + os.path.basename(job.output_pattern))
        s.shot, s.plate_node, s.running, s.progress = job.shot, node.name, True, 0.0
        s.status = f"Tracking files {job.first}-{job.last} on {job.address}..."
        _progress("begin")
        if bpy.app.background and INLINE_IN_BACKGROUND:
            level, text = finish(scene, run, core.run_job(job, run.cancel, lambda text, percent: None))
            self.report({level}, text)
            return {"CANCELLED"} if level == "ERROR" else {"FINISHED"}
        run.start()
        return {"FINISHED"}


class MAM2_OT_cancel(bpy.types.Operator):
    """Stop the running track after the frame in progress"""
    bl_idname = "mam2.cancel"
    bl_label = "MAM2: Cancel"

    def execute(self, context):
        task = tasks.get(context.scene.mam2.shot_uuid)
        if task is None:
            self.report({"INFO"}, "MAM2: nothing to cancel")
            return {"CANCELLED"}
        task.cancel.set()
        context.scene.mam2.status = "Cancelling after the frame in progress..."
        return {"FINISHED"}


CLASSES = (MAM2_OT_track, MAM2_OT_cancel)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
