"""Host plugins' worker threads, and how quitting the host ends them.

A host does all network I/O on worker threads (a dead server must not freeze its UI). Each
worker's sockets use a zmq context of its own (`Worker.context`: pass it to `Client`,
`ensure_server`, `track.run_job`), so that quitting can end them: an embedded Python cannot
finalise while a thread holds a socket of a live context (Blender 4.5 hangs on exit). When the
host quits it tells the servers to cancel its runs (`cancel_on_servers`: their workers may not
live to tell them), then `end_workers`: QUIT_WAIT_S for the workers' last replies, then the
context of each one still waiting on a server is terminated, which ends its blocking call.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import zmq

from .client import Client, MAM2Error

QUIT_WAIT_S = 3.0  # how long quitting waits for the workers' last replies before cutting their sockets
CANCEL_WAIT_S = 1.0  # one try at telling the server to cancel (it may be dead)


@dataclass(eq=False)
class Worker:
    """A worker thread (set `thread` before starting it) and its own zmq context."""

    context: zmq.Context = field(default_factory=zmq.Context, init=False)
    thread: threading.Thread | None = field(default=None, init=False)
    _term_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def close(self) -> None:
        """The worker, once its work is done: close any socket left over and end the context."""
        with self._term_lock:
            if not self.context.closed:
                self.context.destroy(linger=0)

    def end_io(self, wait: float) -> bool:
        """Another thread (quitting): terminate the context, so that a blocking call of the worker
        raises ETERM and it closes its sockets. True once they are closed, False after `wait` seconds
        (a worker stuck elsewhere, e.g. waiting for the host's main thread)."""
        def term() -> None:
            with self._term_lock:
                if not self.context.closed:
                    self.context.term()
        helper = threading.Thread(target=term, name=f"{getattr(self.thread, 'name', 'mam2')}-end", daemon=True)
        helper.start()
        helper.join(wait)
        return not helper.is_alive()


def cancel_on_servers(shots: Iterable[tuple[str, str]], wait: float = CANCEL_WAIT_S) -> None:
    """Tell the server at each (address, shot) to stop that shot's jobs now: one short try each."""
    for address, shot in sorted(set(shots)):
        try:
            with Client(address, timeout=wait, retries=1) as client:
                client.cancel(shot=shot, wait=wait)
        except (MAM2Error, zmq.ZMQError):
            pass  # a dead server computes nothing


def end_workers(workers: Sequence[Worker], wait: float = QUIT_WAIT_S) -> None:
    """Quitting (their runs cancelled): give the started workers `wait` seconds to end, then cut the
    sockets of those still waiting and give each `wait` more to end."""
    started = [w for w in workers if w.thread is not None]
    deadline = time.monotonic() + wait
    for worker in started:
        worker.thread.join(max(0.0, deadline - time.monotonic()))
    for worker in started:
        if worker.thread.is_alive() and worker.end_io(wait):
            worker.thread.join(wait)
