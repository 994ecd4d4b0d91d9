"""Stop the server when the process that started it is gone (`mam2 serve --exit-with PID`).

A host application (Nuke, Blender) that starts a server passes its own pid; if the host quits
or crashes without stopping the server, the server shuts down cleanly by itself instead of
holding the GPU and computing an orphaned job.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Callable

log = logging.getLogger(__name__)


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone on Linux)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        import ctypes
        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x00100000, False, pid)  # SYNCHRONIZE
        if not handle:
            return False
        try:
            return kernel32.WaitForSingleObject(handle, 0) == 0x102  # WAIT_TIMEOUT: still running
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) said it exists


def watch_process(pid: int, on_gone: Callable[[], None], stop: threading.Event, interval: float = 1.0) -> threading.Thread:
    """Call `on_gone` once `pid` has exited (checked every `interval` s until `stop` is set)."""
    def run() -> None:
        while not stop.wait(interval):
            if not process_alive(pid):
                log.warning("process %d that started this server is gone: shutting down", pid)
                on_gone()
                return

    thread = threading.Thread(target=run, name="mam2-exit-with", daemon=True)
    thread.start()
    return thread
