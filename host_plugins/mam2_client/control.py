"""The hosts' Server controls: Check and Restart the server at an address (Stop is
`launcher.stop_server`). Run them on a worker thread, with its `context` (see `worker`).

Only a server this process started (`launcher.started_server`) is ever restarted: when another
one answers at the address, `restart` does nothing and says so (it is restarted where it runs).
"""
from __future__ import annotations

from typing import Sequence

from . import launcher
from .client import Client, MAM2Error

PROBE_S = 1.0  # the hello that asks whether a server runs at the address before a restart
CHECK_S = 2.0  # the hello and status of Check


def answers(address: str, context=None, timeout: float = PROBE_S) -> bool:
    """Whether a server answers hello at `address` (one try)."""
    try:
        with Client(address, timeout=timeout, retries=1, context=context) as client:
            client.hello()
        return True
    except MAM2Error:
        return False


def check(address: str, context=None, timeout: float = CHECK_S) -> tuple[dict, dict]:
    """(hello, status) of the server at `address`, one try each; raises MAM2Error."""
    with Client(address, timeout=timeout, retries=1, context=context) as client:
        return client.hello(), client.status()


def restart(address: str, serve_args: Sequence[str] = (), command: Sequence[str] = (),
            context=None) -> Client | None:
    """Stop the server this process started at `address` and start it again with `serve_args` (and
    `command`, if given; else the old one's), or start one when none answers there. None, doing
    nothing, when one this process did not start answers. A Client of the new server (the caller
    closes it); raises what `launcher.ensure_server` raises."""
    if launcher.started_server(address) is None and answers(address, context):
        return None
    extra = {"command": command} if command else {}
    return launcher.restart_server(address, serve_args=serve_args, context=context, **extra)
