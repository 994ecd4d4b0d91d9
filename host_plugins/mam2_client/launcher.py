"""Find a running MAM2 server, or start a local one in the background (`mam2 serve`) and own it.

The command is, in order: `command=`, $MAM2_SERVER_COMMAND (split like a shell
line), `mam2` on PATH, or `$MAM2_PYTHON -m mam2_server.cli`. Inside Nuke or
Blender `sys.executable` is the host application, so it is never used.

A server started here belongs to this process (the host application):

* it gets a clean environment: the host's PYTHONPATH / PYTHONHOME (Nuke and Blender set
  them for their own Python) would break the server's interpreter;
* it is told to exit when this process does (`mam2 serve --exit-with PID`), so it never
  outlives a host that quit or crashed, and it is stopped at normal interpreter exit;
* `started_server`, `stop_server` and `restart_server` give the hosts Status / Stop /
  Restart controls. A server this process did not start is never stopped from here.

The server and its clients share this user's token file (see `auth`), so a server started
here answers this user's hosts and no one else.
"""
from __future__ import annotations

import atexit
import errno
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from . import wire
from .client import Client, MAM2Error, ServerUnavailable


def server_command() -> list[str] | None:
    if os.environ.get("MAM2_SERVER_COMMAND"):
        return shlex.split(os.environ["MAM2_SERVER_COMMAND"])
    exe = shutil.which("mam2")
    if exe:
        return [exe]
    if os.environ.get("MAM2_PYTHON"):
        return [os.environ["MAM2_PYTHON"], "-m", "mam2_server.cli"]
    return None


def server_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The host's environment without the variables that steer a Python interpreter (PYTHON*,
    macOS's __PYVENV_LAUNCHER__), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "__PYVENV_LAUNCHER__"}
    env.update(extra or {})
    return env


@dataclass
class LocalServer:
    """A `mam2 serve` process this process started."""

    address: str
    command: list[str]  # what runs `serve`: ["mam2"] or [python, "-m", "mam2_server.cli"]
    serve_args: list[str]
    log_path: Path
    process: subprocess.Popen = field(repr=False)
    env: dict[str, str] | None = field(default=None, repr=False)
    token_file: str | None = None  # its --token-file (None: this user's default)

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 8) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return []

    def stop(self, timeout: float = 10.0) -> int | None:
        """Ask the server to shut down (it finishes the frame being written), then terminate, then
        kill. Returns the exit code (None if it could not be reaped)."""
        if self.running():
            try:
                with Client(self.address, timeout=min(timeout, 2.0), retries=1,
                            token_file=self.token_file) as client:
                    client.shutdown()
            except MAM2Error:
                pass  # not answering: signals below
            for stop in (None, self.process.terminate, self.process.kill):
                if stop is not None and self.running():
                    stop()
                try:
                    self.process.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        return self.process.poll()


_started: dict[str, LocalServer] = {}
_lock = threading.Lock()


def started_server(address: str = wire.DEFAULT_ADDRESS) -> LocalServer | None:
    """The server this process started at `address` (None if it started none there)."""
    with _lock:
        return _started.get(address)


def stop_server(address: str = wire.DEFAULT_ADDRESS, timeout: float = 10.0) -> bool:
    """Stop the server this process started at `address`; False when it started none there."""
    with _lock:
        server = _started.pop(address, None)
    if server is None:
        return False
    server.stop(timeout)
    return True


def stop_started_servers() -> None:
    """Stop every server this process started (registered with atexit; hosts call it on quit)."""
    with _lock:
        addresses = list(_started)
    for address in addresses:
        stop_server(address)


atexit.register(stop_started_servers)


def restart_server(address: str = wire.DEFAULT_ADDRESS, **kwargs) -> Client:
    """Stop the server this process started at `address` (if any) and start a new one, with the
    same command, arguments and environment unless `kwargs` say otherwise."""
    old = started_server(address)
    stop_server(address)
    if old is not None:
        kwargs.setdefault("command", old.command)
        kwargs.setdefault("serve_args", old.serve_args)
        kwargs.setdefault("log_path", old.log_path)
        kwargs.setdefault("env", old.env)
        if old.token_file is not None:
            kwargs.setdefault("token_file", old.token_file)
    return ensure_server(address, **kwargs)


def open_log(path: Path):
    """`path` opened to append the server's output, created private (0600): the log names files and shots.

    A symbolic link there (planted in a shared temporary folder) or a file of another user is refused."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_NONBLOCK", 0), 0o600)  # a FIFO fails, never blocks
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        if hasattr(os, "getuid"):
            if st.st_uid != os.getuid():
                raise OSError(errno.EPERM, f"{path} belongs to another user")
            if stat.S_IMODE(st.st_mode) & 0o077:
                os.fchmod(fd, 0o600)
        return os.fdopen(fd, "ab")
    except BaseException:
        os.close(fd)
        raise


def ensure_server(address: str = wire.DEFAULT_ADDRESS, *, start: bool = True, command: Sequence[str] | None = None,
                  serve_args: Sequence[str] = (), wait: float = 60.0, timeout: float = 2.0,
                  log_path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                  exit_with_host: bool = True, command_setting: str = "", **client_kwargs) -> Client:
    """A Client for a server that answers `hello` at `address`, starting one locally if needed.

    `env` is added to the started server's clean environment (see `server_environment`);
    `exit_with_host` makes it exit when this process does; `command_setting` names the host's own
    setting for the command, for the message when none is found. Raises ServerUnavailable with
    the reason (remote address, no command found, the server exited: its log's last
    lines) when none can be reached; other errors (ServerError `unauthorized`: a server
    of someone else's there) pass through. Whatever is raised, the clients made here are
    closed and a server started here is stopped.
    """
    probe = Client(address, timeout=timeout, retries=1, **client_kwargs)
    found = False
    try:
        probe.hello()
        found = True
        return probe
    except ServerUnavailable:
        pass  # none there: start one below; any other error (e.g. unauthorized) is the caller's
    finally:
        if not found:
            probe.close()  # its sockets would keep the context from terminating
    if not start:
        raise ServerUnavailable(f"no MAM2 server answers at {address} (start one with `mam2 serve --address {address}`)")
    if not wire.is_loopback(address):
        raise ServerUnavailable(f"no MAM2 server answers at {address}; it is not a local address, so it cannot be "
                                "started from here: run `mam2 serve` on that machine")
    cmd = list(command) if command else server_command()
    if not cmd:
        where = f"set {command_setting}, or " if command_setting else "set "
        raise ServerUnavailable(f"no MAM2 server answers at {address} and none can be started: `mam2` is not on "
                                f"PATH; {where}MAM2_SERVER_COMMAND (e.g. '/opt/mam2/.venv/bin/mam2') or MAM2_PYTHON")
    log_file = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"mam2-serve-{os.getpid()}.log"
    full = [*cmd, "serve", "--address", address, *serve_args]
    token_file = client_kwargs.get("token_file")
    if token_file is not None:  # the server's token where this client reads it
        full += ["--token-file", os.fspath(token_file)]
    if exit_with_host:
        full += ["--exit-with", str(os.getpid())]
    try:  # an unwritable log folder or a missing/non-executable command: a message, not a traceback
        with open_log(log_file) as log:
            process = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       env=server_environment(env), start_new_session=True, close_fds=True)
    except OSError as exc:
        raise ServerUnavailable(f"cannot start a MAM2 server with {shlex.join(full)}: {exc}") from None
    server = LocalServer(address, cmd, list(serve_args), log_file, process, dict(env) if env else None,
                         os.fspath(token_file) if token_file is not None else None)
    client = Client(address, timeout=min(timeout, 1.0), retries=1, **client_kwargs)
    registered = False
    try:  # whatever goes wrong (a refused login, an interrupt): close the client, stop what we started
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                client.hello()
                client.timeout = max(timeout, 10.0)
                client.retries = 3
                with _lock:
                    _started[address] = server
                registered = True
                return client
            except ServerUnavailable:
                if process.poll() is not None:
                    break
        state = (f"exited with code {process.returncode}" if process.poll() is not None
                 else f"did not answer in {wait:g} s")
        raise ServerUnavailable(f"started `{shlex.join(full)}` but it {state}; log {log_file}:\n"
                                + "\n".join(server.log_tail()))
    finally:
        if not registered:
            client.close()
            if process.poll() is None:
                server.stop(timeout=5.0)
