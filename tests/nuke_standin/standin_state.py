"""Shared state of the `nuke` stand-in: the main thread, the current frame, the node context."""
from __future__ import annotations

import threading

MAIN = threading.main_thread()
NOT_ATTACHED = "A PythonObject is not attached to a node"  # Nuke's ValueError for a deleted node's objects
frame = [1]  # the timeline's current frame
context: list = []  # groups entered with `with group:` / begin(): where nuke.nodes.X() creates nodes
this: list = []  # nuke.thisNode() while a button script runs


def main_only(what: str) -> None:
    if threading.current_thread() is not MAIN:
        raise RuntimeError(f"nuke standin: {what} called from thread {threading.current_thread().name!r}; "
                           "Nuke requires the main thread (use nuke.executeInMainThread)")
