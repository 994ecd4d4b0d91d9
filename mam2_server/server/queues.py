"""The work between the server's I/O loop and its worker threads, and the bounds on it.

* `Admission`: a request is held in memory from its arrival until its final reply.
  Each client (ROUTER identity: one connection) may have `max_requests` of them queued
  or running, and all clients together `max_bytes` of message bytes; past either the
  request is answered `busy` at once and dropped, so pipelining cannot pile messages up.
* `ClientQueues`: one FIFO per client, drained by a thread of its own while it has
  work, for the files stage: a client waiting on a slow disk holds up only itself.
"""
from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

from mam2_server import protocol as P
from mam2_server.protocol import ProtocolError
from mam2_server.server.handlers import Job


@dataclass
class Work:
    identity: bytes  # the client's ROUTER identity
    envelope: P.Envelope
    nbytes: int  # of the message, header and buffers: what Admission holds until the final reply
    job: Job | None = None
    files: dict = field(default_factory=dict)  # what the files stage read, by image index
    failure: Exception | None = None  # the files stage refused the request


class Admission:
    """Counts what each client has in flight; `admit` raises `busy` past the bounds."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self._requests: Counter[bytes] = Counter()
        self._bytes = 0
        self._lock = threading.Lock()

    def admit(self, identity: bytes, nbytes: int) -> None:
        with self._lock:
            if self._requests[identity] >= self.max_requests:
                raise ProtocolError(P.E_BUSY, f"this connection already has {self._requests[identity]} requests "
                                              f"queued or running (max_pending_requests {self.max_requests}); send "
                                              "more as their replies arrive")
            if self._bytes and self._bytes + nbytes > self.max_bytes:  # one message alone always fits
                raise ProtocolError(P.E_BUSY, f"the server holds {self._bytes} bytes of queued requests; this one's "
                                              f"{nbytes} would pass max_pending_bytes ({self.max_bytes}): send it "
                                              "again once earlier requests are answered")
            self._requests[identity] += 1
            self._bytes += nbytes

    def release(self, work: Work) -> None:
        with self._lock:
            self._requests[work.identity] -= 1
            if not self._requests[work.identity]:
                del self._requests[work.identity]
            self._bytes -= work.nbytes


class ClientQueues:
    """Runs `handle(work)` for each work item in its client's order, clients independently."""

    def __init__(self, handle: Callable[[Work], None], name: str) -> None:
        self.handle = handle
        self.name = name
        self._queues: dict[bytes, deque[Work]] = {}
        self._lock = threading.Lock()

    def put(self, work: Work) -> None:
        with self._lock:
            queue = self._queues.get(work.identity)
            if queue is not None:
                queue.append(work)
                return
            queue = self._queues[work.identity] = deque([work])
        try:
            threading.Thread(target=self._drain, args=(work.identity, queue), name=self.name, daemon=True).start()
        except BaseException:  # e.g. no thread left to start: drop the queue, or this client's work would pile
            with self._lock:  # up in it unserved (and `busy()` stay true); the caller answers the request
                if self._queues.get(work.identity) is queue:
                    del self._queues[work.identity]
            raise

    def _drain(self, identity: bytes, queue: deque[Work]) -> None:
        while True:
            with self._lock:
                if not queue:
                    del self._queues[identity]
                    return
                work = queue[0]
            self.handle(work)
            with self._lock:
                queue.popleft()  # only now: `busy()` stays true while the last item is handled

    def busy(self) -> bool:
        with self._lock:
            return bool(self._queues)
