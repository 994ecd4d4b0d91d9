"""The server's state in the panel, and Check / Stop / Restart (on worker threads, like Track).

A server the add-on started (`launcher.ensure_server`) belongs to this Blender: it exits with
it (`--exit-with`), and it is stopped when the add-on is disabled. One the add-on did not
start is only ever asked about, never stopped from here.
"""
from __future__ import annotations

import bpy

from .mam2_client import Client, MAM2Error, launcher
from .ops import Task, _tasks, _redraw, _report, _server_command

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


def _describe(client: Client) -> str:
    hello, status = client.hello(), client.status()
    return (f"mam2 {hello.get('server', '?')}, engine {hello.get('engine', '?')} on {hello.get('device', '?')}, "
            f"{len(status.get('shots', []))} shots, {len(status.get('jobs', []))} running")


def _start(name: str, address: str, work) -> bool:
    key = f"server:{address}"
    if key in _tasks:
        return False

    def apply(result) -> None:
        text = str(result)
        _seen[address] = text
        _report("ERROR" if isinstance(result, Exception) else "INFO", f"MAM2 server: {text}")
        _redraw()

    Task(key, lambda task: work(), apply).start()
    _seen[address] = f"{name}..."
    return True


def _check(address: str) -> str:
    try:
        with Client(address, timeout=2.0, retries=1) as client:
            return ("Started here: " if launcher.started_server(address) else "Running (not started here): ") \
                + _describe(client)
    except MAM2Error:
        return "Not answering"


def _stop(address: str) -> str:
    return "Stopped" if launcher.stop_server(address) else "Not started here: stop it where it runs"


def _restart(address: str, serve_args: tuple[str, ...], command: tuple[str, ...]) -> str:
    if launcher.started_server(address) is None:
        try:
            with Client(address, timeout=1.0, retries=1) as client:
                client.hello()
            return "Running, but not started here: restart it where it runs"
        except MAM2Error:
            pass
    try:
        extra = {"command": command} if command else {}
        with launcher.restart_server(address, serve_args=serve_args, **extra) as client:
            return "Restarted: " + _describe(client)
    except MAM2Error as exc:
        return f"Could not start it: {exc}"


class _ServerOp:
    bl_options = {"INTERNAL"}

    def execute(self, context):
        s = context.scene.mam2
        if not _start(self.bl_label, s.address, self.work(s)):
            self.report({"WARNING"}, "MAM2: a server command is already running")
            return {"CANCELLED"}
        return {"FINISHED"}

    @staticmethod
    def work(s):
        raise NotImplementedError


class MAM2_OT_server_check(_ServerOp, bpy.types.Operator):
    """Ask the server at the address for its version, engine, device and jobs"""
    bl_idname = "mam2.server_check"
    bl_label = "Checking"

    @staticmethod
    def work(s):
        address = s.address
        return lambda: _check(address)


class MAM2_OT_server_stop(_ServerOp, bpy.types.Operator):
    """Stop the server this Blender started (it finishes the frame in progress)"""
    bl_idname = "mam2.server_stop"
    bl_label = "Stopping"

    @staticmethod
    def work(s):
        address = s.address
        return lambda: _stop(address)


class MAM2_OT_server_restart(_ServerOp, bpy.types.Operator):
    """Stop the server this Blender started and start it again with the panel's engine"""
    bl_idname = "mam2.server_restart"
    bl_label = "Restarting"

    @staticmethod
    def work(s):
        address, command = s.address, _server_command()
        serve_args = ("--engine", s.engine) if s.engine != "default" else ()
        return lambda: _restart(address, serve_args, command)


CLASSES = (MAM2_OT_server_check, MAM2_OT_server_stop, MAM2_OT_server_restart)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
    launcher.stop_started_servers()  # the add-on is disabled: a server it started goes with it
    _seen.clear()
