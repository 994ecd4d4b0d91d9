"""The worker/timer plumbing every background task of the add-on (Track, the server commands) uses.

bpy is touched only on the main thread: a `Task`'s work runs on a worker thread (all network
I/O) and posts its progress and its result on a queue, and a persistent `bpy.app.timers`
callback drains that queue on the main thread. File > New/Open cancels the tasks of the file
being closed; disabling the add-on (what quitting does) also cancels the runs on the server.
Background Blender (`-b`, bpy as a module) has no event loop to run timers: tests call `pump`.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

import bpy
from bpy.app.handlers import persistent

from .mam2_client import worker

log = logging.getLogger(__name__)
POLL_S = 0.1


class Task(worker.Worker):
    """Work for a worker thread; `apply(item)` runs on the main thread for every item it posts and for
    its result. Returning from the worker puts the result (or the exception) in the mailbox. Its
    sockets use its own zmq context (worker.Worker), so quitting can end them (`detach_all`)."""

    def __init__(self, name: str, work: Callable[["Task"], object], apply: Callable[[object], None]) -> None:
        super().__init__()
        self.name, self._work, self._apply = name, work, apply
        self.cancel = threading.Event()
        self.detached = False  # its file was closed: drain the mailbox, apply nothing
        self.done = False
        self.mailbox: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=f"mam2-{name}", daemon=True)
        self.timer = self.poll  # one bound method, so that timers.is_registered/unregister find it

    def _run(self) -> None:  # worker thread: no bpy here
        try:
            result = self._work(self)
        except Exception as exc:  # a bug must still reach the artist, not die in a thread
            log.exception("mam2: %s failed", self.name)
            result = exc
        self.close()
        self.mailbox.put(_Done(result))

    def post(self, item) -> None:
        self.mailbox.put(item)

    def drained(self) -> None:
        """Main thread, after the mailbox was emptied (once per timer tick)."""

    def failed(self, exc: Exception) -> None:
        """Main thread: the timer body raised (a bug); the task has already been ended. Tell the artist."""
        report_from_timer("ERROR", f"MAM2: {self.name} failed: {type(exc).__name__}: {exc}")

    def start(self) -> None:
        tasks[self.name] = self
        self.thread.start()
        bpy.app.timers.register(self.timer, first_interval=POLL_S, persistent=True)

    def poll(self):
        """bpy.app.timers callback (main thread): apply what the worker posted.

        Nothing may escape it: Blender drops a timer whose callback raises, and the task would then
        never end (its entry in `tasks` makes every later Track "already tracking"). A failure in
        `drained` or in applying the result ends the task (`_fail`)."""
        try:
            return self._poll()
        except Exception as exc:
            log.exception("mam2: %s failed in its timer", self.name)
            self._fail(exc)
            return None

    def _poll(self):
        while True:
            try:
                item = self.mailbox.get_nowait()
            except queue.Empty:
                if not self.detached:
                    self.drained()
                return POLL_S
            last = isinstance(item, _Done)
            if last:
                self._end()
                item = item.result
            if not self.detached:
                if last:
                    self._apply(item)  # the result: a failure here ends the task through poll's handler
                else:
                    try:
                        self._apply(item)
                    except Exception:  # a bad progress item: the run goes on, its result still comes
                        log.exception("mam2: applying %r failed", item)
            if last:
                return None

    def _end(self) -> None:
        """The task is over: off the table of tasks in flight and of closed files' tasks."""
        self.done = True
        if tasks.get(self.name) is self:
            del tasks[self.name]
        _detached.discard(self)

    def _fail(self, exc: Exception) -> None:
        """Main thread: end the task after its timer body raised; the worker is cancelled (it ends after the
        frame in progress, its later posts are never read)."""
        self.cancel.set()
        self._end()
        if not self.detached:
            try:
                self.failed(exc)
            except Exception:
                log.exception("mam2: reporting the failure of %s failed", self.name)


class _Done:
    def __init__(self, result) -> None:
        self.result = result


tasks: dict[str, Task] = {}  # task name (the shot UUID for runs) -> task in flight
_detached: set[Task] = set()  # tasks of a closed file, still finishing


def pump() -> None:
    """Run the pending timer callbacks once (what Blender's event loop does; for background tests)."""
    for task in list(tasks.values()) + list(_detached):
        if task.timer() is None and bpy.app.timers.is_registered(task.timer):
            bpy.app.timers.unregister(task.timer)


def detach_all(quitting: bool = False) -> None:
    """Stop applying every task's results (their file is closing) and cancel the runs. Quitting (or
    disabling the add-on) also cancels them on the server and ends the workers: a worker still
    holding a socket would keep Blender from exiting."""
    running = list(tasks.values())
    for task in running:
        task.cancel.set()
        task.detached = True
        _detached.add(task)
    tasks.clear()
    if quitting:  # no worker may outlive this: a live thread at exit hangs Blender 4.5
        worker.cancel_on_servers((t.job.address, t.job.shot) for t in running if getattr(t, "job", None))
        worker.end_workers(list(_detached))
    try:
        bpy.context.window_manager.progress_end()
    except (AttributeError, RuntimeError):
        pass


@persistent
def _on_load_pre(*_args) -> None:
    detach_all()


def report_from_timer(level: str, text: str) -> None:
    """Report from a timer (no operator there): through the internal report operator."""
    log.log(logging.ERROR if level == "ERROR" else logging.INFO, text)
    try:
        bpy.ops.mam2.report(level=level, message=text)
    except RuntimeError:  # background Blender raises ERROR reports; the status already shows it
        pass


def redraw(wm=None) -> None:
    """Redraw the Compositor and Image Editors (Area.tag_redraw) of every window."""
    wm = wm if wm is not None else bpy.context.window_manager
    for window in wm.windows if wm is not None else ():
        for area in window.screen.areas:
            if area.type in ("NODE_EDITOR", "IMAGE_EDITOR"):
                area.tag_redraw()


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


def register() -> None:
    bpy.utils.register_class(MAM2_OT_report)
    bpy.app.handlers.load_pre.append(_on_load_pre)


def unregister() -> None:
    """Also what quitting does (Blender disables its add-ons): the runs are cancelled on the server."""
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    detach_all(quitting=True)
    for task in list(_detached):
        if bpy.app.timers.is_registered(task.timer):
            bpy.app.timers.unregister(task.timer)
    _detached.clear()
    bpy.utils.unregister_class(MAM2_OT_report)
