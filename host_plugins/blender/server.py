"""The server's state in the panel, and Check / Stop / Restart (on worker threads, like Track).

A server the add-on started (`launcher.ensure_server`) belongs to this Blender: it exits with
it (`--exit-with`), and it is stopped when the add-on is disabled. One the add-on did not
start is only ever asked about, never stopped from here.
"""
from __future__ import annotations

from functools import partial

import bpy

from .background import Task, redraw, report_from_timer, tasks
from .mam2_client import MAM2Error, control, launcher
from .ops import server_command

_seen: dict[str, str] = {}  # address -> what the last Check found


def state(address: str) -> str:
    """One line for the panel (no network: what this Blender knows)."""
    server = launcher.started_server(address)
    if server is not None:
        engine = " ".join(server.serve_args) or "default engine"
        if server.running():
            return f"Started here (pid {server.process.pid}, {engine})"
        return f"Started here, exited with code {server.process.returncode}: see {server.log_path}"
    return _seen.get(address, "Not started here")


def _describe(hello: dict, status: dict) -> str:
    return (f"mam2 {hello.get('server', '?')}, engine {hello.get('engine', '?')} on {hello.get('device', '?')}, "
            f"{len(status.get('shots', []))} shots, {len(status.get('jobs', []))} running")


def _start(name: str, address: str, work) -> bool:
    key = f"server:{address}"
    if key in tasks:
        return False

    def apply(result) -> None:
        text = str(result)
        _seen[address] = text
        report_from_timer("ERROR" if isinstance(result, Exception) else "INFO", f"MAM2 server: {text}")
        redraw()

    Task(key, lambda task: work(task.context), apply).start()
    _seen[address] = f"{name}..."
    return True


def _check(address: str, context) -> str:
    try:
        hello, status = control.check(address, context)
    except MAM2Error:
        return "Not answering"
    return ("Started here: " if launcher.started_server(address) else "Running (not started here): ") \
        + _describe(hello, status)


def _stop(address: str, _context) -> str:  # stop_server asks with a client of its own
    return "Stopped" if launcher.stop_server(address) else "Not started here: stop it where it runs"


def _restart(address: str, serve_args: tuple[str, ...], command: tuple[str, ...], context) -> str:
    try:
        client = control.restart(address, serve_args, command, context)
        if client is None:
            return "Running, but not started here: restart it where it runs"
        with client:
            return "Restarted: " + _describe(client.hello(), client.status())
    except MAM2Error as exc:
        return f"Could not start it: {exc}"


ACTIONS = {
    "CHECK": ("Checking", "Ask the server at the address for its version, engine, device and jobs"),
    "STOP": ("Stopping", "Stop the server this Blender started (it finishes the frame in progress)"),
    "RESTART": ("Restarting", "Stop the server this Blender started and start it again with the panel's engine"),
}


class MAM2_OT_server(bpy.types.Operator):
    """Check, stop or restart the MAM2 server"""
    bl_idname = "mam2.server"
    bl_label = "MAM2 Server"
    bl_options = {"INTERNAL"}

    action: bpy.props.EnumProperty(items=[(k, k.title(), tip) for k, (_, tip) in ACTIONS.items()])

    @classmethod
    def description(cls, context, properties):
        return ACTIONS[properties.action][1]

    def execute(self, context):
        s = context.scene.mam2
        if self.action == "RESTART":
            engine = ("--engine", s.engine) if s.engine != "default" else ()
            work = partial(_restart, s.address, engine, server_command())
        else:
            work = partial(_check if self.action == "CHECK" else _stop, s.address)
        if not _start(ACTIONS[self.action][0], s.address, work):
            self.report({"WARNING"}, "MAM2: a server command is already running")
            return {"CANCELLED"}
        return {"FINISHED"}


def register() -> None:
    bpy.utils.register_class(MAM2_OT_server)


def unregister() -> None:
    bpy.utils.unregister_class(MAM2_OT_server)
    launcher.stop_started_servers()  # the add-on is disabled: a server it started goes with it
    _seen.clear()
