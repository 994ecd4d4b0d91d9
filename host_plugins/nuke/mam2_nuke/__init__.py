"""The MAM2 node's Python side: translates between gizmos/MAM2.gizmo and `mam2_client`.

The gizmo's buttons call these functions with nuke.thisNode(). Every one of them shows a problem
in the node's status line and a message, never as a traceback: bad knobs, a deleted node, a
missing pyzmq/msgpack, an OSError. Modules: `keys` (keyframes), `graph` (node <-> job, alphas
back in the graph), `plates` (what pixels the server gets), `runner` (threads), `server` (the
Server tab).
"""
from __future__ import annotations

import functools
import logging
import sys

import nuke

from . import keys
from .common import Refused, deleted, fail

log = logging.getLogger(__name__)


def _button(func):
    @functools.wraps(func)
    def run(node):
        try:
            return func(node)
        except Refused as exc:
            fail(node, str(exc))
        except ImportError as exc:
            fail(node, f"pyzmq/msgpack cannot be imported in this Nuke's Python {sys.version_info[0]}."
                        f"{sys.version_info[1]} ({exc}); install MAM2 for Nuke with `mam2 package nuke DIR` and "
                        "put DIR on NUKE_PATH")
        except Exception as exc:
            if deleted(exc):
                return  # the node went away under the button: nothing to show
            log.exception("mam2: %s failed", func.__name__)
            fail(node, f"internal error: {exc!r}")
    return run


@_button
def track(node) -> None:
    """'Track': send the input and every key, propagate over the range (keys the current frame if none)."""
    from . import runner
    runner.start(node, set_key=False)


@_button
def retrack(node) -> None:
    """'Set key + track': key the current frame's prompt, then track; the server recomputes only what it affects."""
    from . import runner
    runner.start(node, set_key=True)


@_button
def cancel(node) -> None:
    """'Cancel': the worker stops after the frame in progress (never blocks on the network)."""
    from . import runner
    runner.cancel(node)


@_button
def add_key(node) -> None:
    key = keys.add(node, nuke.frame())
    node["status"].setValue(f"Key {key.describe()}")


@_button
def delete_key(node) -> None:
    node["status"].setValue(f"Deleted the key at frame {keys.delete(node)}")


@_button
def goto_key(node) -> None:
    nuke.frame(keys.selected(node))


@_button
def check_server(node) -> None:
    from . import server
    server.act(node, "status")


@_button
def restart_server(node) -> None:
    from . import server
    server.act(node, "restart")


@_button
def stop_server(node) -> None:
    from . import server
    server.act(node, "stop")
