"""Find a running MAM2 server, or start a local one in the background (`mam2 serve`).

The command is, in order: `command=`, $MAM2_SERVER_COMMAND (split like a shell
line), `mam2` on PATH, or `$MAM2_PYTHON -m mam2_server.cli`. Inside Nuke or
Blender `sys.executable` is the host application, so it is never used.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

from . import wire
from .client import Client, ServerUnavailable


def server_command() -> list[str] | None:
    if os.environ.get("MAM2_SERVER_COMMAND"):
        return shlex.split(os.environ["MAM2_SERVER_COMMAND"])
    exe = shutil.which("mam2")
    if exe:
        return [exe]
    if os.environ.get("MAM2_PYTHON"):
        return [os.environ["MAM2_PYTHON"], "-m", "mam2_server.cli"]
    return None


def ensure_server(address: str = wire.DEFAULT_ADDRESS, *, start: bool = True, command: Sequence[str] | None = None,
                  serve_args: Sequence[str] = (), wait: float = 60.0, timeout: float = 2.0,
                  log_path: str | os.PathLike | None = None, **client_kwargs) -> Client:
    """A Client for a server that answers `hello` at `address`, starting one locally if needed.

    Raises ServerUnavailable with the reason (remote address, no command found,
    the server exited: its log's last lines) when none can be reached.
    """
    probe = Client(address, timeout=timeout, retries=1, **client_kwargs)
    try:
        probe.hello()
        return probe
    except ServerUnavailable:
        probe.close()
    if not start:
        raise ServerUnavailable(f"no MAM2 server answers at {address} (start one with `mam2 serve --address {address}`)")
    if not wire.is_loopback(address):
        raise ServerUnavailable(f"no MAM2 server answers at {address}; it is not a local address, so it cannot be "
                                "started from here: run `mam2 serve` on that machine")
    cmd = list(command) if command else server_command()
    if not cmd:
        raise ServerUnavailable(f"no MAM2 server answers at {address} and none can be started: `mam2` is not on "
                                "PATH; set MAM2_SERVER_COMMAND (e.g. '/opt/mam2/.venv/bin/mam2') or MAM2_PYTHON")
    log_file = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"mam2-serve-{os.getpid()}.log"
    full = [*cmd, "serve", "--address", address, *serve_args]
    with open(log_file, "ab") as log:
        try:
            process = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True, close_fds=True)
        except OSError as exc:
            raise ServerUnavailable(f"cannot start a MAM2 server with {shlex.join(full)}: {exc}") from None
    client = Client(address, timeout=min(timeout, 1.0), retries=1, **client_kwargs)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            client.hello()
            client.timeout = max(timeout, 10.0)
            client.retries = 3
            return client
        except ServerUnavailable:
            if process.poll() is not None:
                break
    client.close()
    tail = log_file.read_text(errors="replace").strip().splitlines()[-8:] if log_file.exists() else []
    state = f"exited with code {process.returncode}" if process.poll() is not None else f"did not answer in {wait:g} s"
    raise ServerUnavailable(f"started `{shlex.join(full)}` but it {state}; log {log_file}:\n" + "\n".join(tail))
