"""The Server tab: what runs at the node's address, and Stop / Restart for a server this Nuke started.

Each action talks to the network on a worker thread (a dead server must not freeze the UI) and
writes its one-line answer into `server_info` on the main thread. The server a node starts gets
a clean environment and exits with Nuke (mam2_client.launcher: `--exit-with` this process).
"""
from __future__ import annotations

import threading

import nuke
from mam2_client import MAM2Error, control, launcher

from . import runner
from .common import deleted


def act(node, action: str) -> None:
    """Main thread: read the knobs, run `action` off the main thread, show the answer."""
    address = node["address"].value().strip()
    engine = node["engine"].value()
    serve_args = ("--engine", engine) if engine != "default" else ()
    shot = node["shot"].value()
    node["server_info"].setValue(f"{action}: {address}...")
    worker = runner.Running(address, "")  # its own zmq context: quitting Nuke can end its sockets

    def work() -> None:
        try:
            text = describe(action, address, serve_args, shot, worker.context)
        finally:
            worker.close()
            runner.helpers.discard(worker)
        if nuke.GUI:
            nuke.executeInMainThread(_show, args=(node, text))
        else:
            _show(node, text)
    if nuke.GUI:
        runner.hook()
        runner.helpers.add(worker)
        worker.thread = threading.Thread(target=work, name=f"mam2-server-{action}", daemon=True)
        worker.thread.start()
    else:
        work()


def describe(action: str, address: str, serve_args, shot: str, context=None) -> str:
    """Do `action` and say what runs at `address` now; never raises. context: the zmq context to use."""
    try:
        if action == "stop":
            if not launcher.stop_server(address):
                return (f"{address}: not started by this Nuke, so not stopped here "
                        "(stop it where it runs, e.g. Ctrl+C on `mam2 serve`)")
            return f"{address}: stopped the server this Nuke started"
        if action == "restart":
            client = control.restart(address, serve_args, context=context)
            if client is None:
                return f"{address}: not started by this Nuke, so not restarted here (restart it where it runs)"
            client.close()
        hello, status = control.check(address, context)
    except MAM2Error as exc:
        return f"{address}: {exc}"
    except Exception as exc:  # e.g. a malformed address (zmq), an unwritable log folder: a line, not a traceback
        return f"{address}: {type(exc).__name__}: {exc}"
    own = launcher.started_server(address)
    owner = (f"started by this Nuke (pid {own.process.pid}), stops with it" if own is not None
             else "not started by this Nuke")
    text = f"{address}: MAM2 {hello.get('server')}, engine {hello.get('engine')} on {hello.get('device')}, {owner}"
    info = next((s for s in status.get("shots", ()) if s.get("shot") == shot), None)
    if not shot:
        return text + "; not tracked yet"
    if info is None:
        return text + "; this node's shot is not on the server (Track sends it)"
    keys = ", ".join(str(k) for k in info.get("keyframes", ())) or "none"
    return (text + f"; shot: {info.get('received')} frames received, keys {keys}"
            + (", tracking" if info.get("busy") else ""))


def _show(node, text: str) -> None:
    try:
        node["server_info"].setValue(text)
    except ValueError as exc:
        if not deleted(exc):
            raise
