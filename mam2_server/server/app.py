"""The MAM2 server: one ROUTER socket, one I/O loop that always answers, work on two threads.

* The socket admits only clients that pass ZeroMQ's handshake (`security`: PLAIN with
  the owner's token on loopback and ``ipc://``, CURVE keys elsewhere).
* I/O loop (the thread that calls `serve_forever`): receives every request,
  decodes it (`protocol.decode_request`), answers `hello`, `status`, `cancel` and
  `shutdown` at once, queues the rest within `queues.Admission`'s bounds (else
  `busy`), and forwards whatever the worker threads send back. It never runs an
  engine, so a cancel never waits behind a long frame.
* files stage (a thread per client with work, `queues.ClientQueues`): reads the files
  a put_frames or add_prompt names (`files.FileReader`, within a size and time
  budget), then queues the request for the data thread, which so never waits on a
  client's disk, as no client waits on another's.
* data thread: open_shot, put_frames, prompts, get_alpha, close_shot (disk I/O).
* compute thread: propagate, the only thread that touches the engine.

After `shutdown` (or a signal) the loop keeps forwarding the workers' last replies and
answers every new request with `shutting_down` until the workers have stopped.

Workers hand replies to the I/O loop over an inproc PUSH/PULL pair (ZeroMQ
sockets are not thread-safe); pixel buffers travel with ``copy=False``.
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import zmq

from host_plugins.mam2_client.auth import token_file
from host_plugins.mam2_client.connection import keep_alive
from host_plugins.mam2_client.wire import is_ipv6, is_loopback
from mam2_server import protocol as P
from mam2_server.engines import Engine
from mam2_server.engines.identity import engine_identity
from mam2_server.protocol import ProtocolError
from mam2_server.server.files import FileReader
from mam2_server.server.handlers import Handlers
from mam2_server.server.queues import Admission, ClientQueues, Work
from mam2_server.server.security import (Curve, OwnerToken, SecurityError, check_bind_address,
                                         load_or_create_token)
from mam2_server.server.shots import ShotStore

log = logging.getLogger(__name__)

_OUT = "inproc://mam2-out"
_STOP_SECONDS = 10.0  # how long a stopping server waits for its workers


@dataclass
class ServerConfig:
    address: str = P.DEFAULT_ADDRESS
    cache_dir: Path = Path("mam2-cache")
    memory_budget: int = 4 << 30  # bytes of decoded frames and masks held across shots
    max_message_bytes: int = P.MAX_MESSAGE_BYTES  # per message; a larger ZeroMQ frame drops the connection
    curve_dir: Path | None = None  # keys from `mam2 keys`; required for a non-loopback address
    allowed_roots: Sequence[Path] | None = None  # where "path" frames may be read (None: anywhere)
    max_file_bytes: int | None = None  # largest file a "path" may name (None: max_message_bytes)
    file_seconds: float = 10.0  # time budget to read a file a client names
    token_file: Path | None = None  # the owner's secret (None: auth.token_file()); not used with CURVE
    max_pending_requests: int = 8  # per connection, queued or running (past it: busy)
    max_pending_bytes: int | None = None  # of queued messages, all clients (None: 2 x max_message_bytes)
    cache_frames: int = 4  # decoded frames kept in memory per shot
    spill_compression: str = "none"  # EXR compression of spilled raw frames: none (fast) or zip (smaller)
    engine_id: str = ""  # identifies engine, code and weights in cache keys (default: name and code digest)


@dataclass
class Server:
    engine: Engine
    config: ServerConfig
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        check_bind_address(self.config.address, self.config.curve_dir)
        if not is_loopback(self.config.address) and self.config.allowed_roots is None:
            self.config.allowed_roots = []  # remote clients may not name server files unless --allow-path says so
        # CURVE authenticates clients by key; elsewhere only the owner's token opens the server
        self.token = None if self.config.curve_dir is not None else \
            load_or_create_token(token_file(self.config.token_file))
        self.context = zmq.Context()
        files = FileReader(self.config.allowed_roots, self.config.max_file_bytes or self.config.max_message_bytes,
                           self.config.file_seconds)
        store = ShotStore(self.config.cache_dir, self.config.memory_budget, self.config.cache_frames,
                          self.config.spill_compression, read_shared=files.pixels)
        self.handlers = Handlers(self.engine, self.config.engine_id or engine_identity(self.engine.name), store, files,
                                 limits=self._limits())
        self._admission = Admission(self.config.max_pending_requests, self._max_pending_bytes())
        self._files = ClientQueues(self._read_files, "mam2-files")
        self._queues = {"data": queue.Queue(), "compute": queue.Queue()}
        self._threads: dict[str, threading.Thread] = {}
        self._access: Curve | OwnerToken | None = None
        self._cache_root = str(Path(self.config.cache_dir).resolve())
        self.bound_address: str | None = None

    def _limits(self) -> dict[str, int]:
        c = self.config
        return {"max_header_bytes": P.MAX_HEADER_BYTES, "max_buffers": P.MAX_BUFFERS,
                "max_message_bytes": c.max_message_bytes, "max_file_bytes": c.max_file_bytes or c.max_message_bytes,
                "file_timeout_ms": int(c.file_seconds * 1000), "max_side": P.MAX_SIDE,
                "max_frames_per_shot": P.MAX_FRAMES_PER_SHOT, "max_list_items": P.MAX_LIST_ITEMS,
                "max_string_chars": P.MAX_STRING_CHARS, "max_id_chars": P.MAX_ID_CHARS,
                "max_alphas_per_reply": P.MAX_ALPHAS_PER_REPLY, "max_pending_requests": c.max_pending_requests,
                "max_pending_bytes": self._max_pending_bytes()}

    def _max_pending_bytes(self) -> int:
        return self.config.max_pending_bytes or 2 * self.config.max_message_bytes

    # -- lifecycle ---------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish (thread-safe, signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> threading.Event:
        """Set once the server has been asked to stop."""
        return self._stop

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: self._on_signal(signum))

    def _on_signal(self, signum: int) -> None:
        log.warning("signal %d: shutting down", signum)
        self.stop()

    def serve_forever(self, on_bound: Callable[[str], None] | None = None) -> None:
        """Bind, then serve until `stop()`, a signal or a `shutdown` request; on_bound gets the real address.

        Raises SecurityError when the address cannot be bound (in use, no such interface)."""
        router = self._bind()
        pull = self.context.socket(zmq.PULL)
        pull.bind(_OUT)
        for name, target in (("data", self._data_loop), ("compute", self._compute_loop)):
            self._threads[name] = threading.Thread(target=target, name=f"mam2-{name}", daemon=True)
            self._threads[name].start()
        log.info("mam2 server on %s (engine %s, device %s, cache %s)", self.bound_address, self.engine.name,
                 self.handlers.device, self.config.cache_dir)
        if on_bound is not None:
            on_bound(self.bound_address)
        self._poller = zmq.Poller()
        self._poller.register(router, zmq.POLLIN)
        self._poller.register(pull, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                self._pump(router, pull, self._dispatch)
        finally:
            self._shutdown(router, pull)

    def _bind(self) -> zmq.Socket:
        router = self.context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 1000)
        router.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)  # ZeroMQ drops a larger frame unread
        # a reply to a connection that is gone raises (EHOSTUNREACH) instead of vanishing: its jobs are
        # cancelled then (`_send`); TCP keepalive closes an idle connection whose machine went quiet
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        keep_alive(router)
        if is_ipv6(self.config.address):
            router.setsockopt(zmq.IPV6, 1)
        self._access = OwnerToken(self.context, self.token) if self.token is not None else \
            Curve(self.context, self.config.curve_dir)
        self._access.apply_server(router)
        try:
            router.bind(self.config.address)
        except zmq.ZMQError as exc:
            router.close(linger=0)
            self._access.stop()
            raise SecurityError(f"cannot bind {self.config.address}: {exc}") from None
        self.bound_address = router.getsockopt_string(zmq.LAST_ENDPOINT)
        return router

    def _pump(self, router: zmq.Socket, pull: zmq.Socket, handle) -> None:
        """One turn of the loop: forward the workers' replies, hand each request to `handle`."""
        events = dict(self._poller.poll(100))
        if pull in events:
            for _ in range(64):
                try:
                    self._send(router, pull.recv_multipart(zmq.NOBLOCK, copy=False))
                except zmq.Again:
                    break
        if router in events:
            for _ in range(64):
                try:
                    frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                handle(router, frames)

    def _shutdown(self, router: zmq.Socket, pull: zmq.Socket) -> None:
        """Cancel the jobs, let every worker finish its queue while new requests get `shutting_down`."""
        self.handlers.cancel_all()
        deadline = time.monotonic() + _STOP_SECONDS

        def drain(busy: Callable[[], bool]) -> None:
            while busy() and time.monotonic() < deadline:
                self._pump(router, pull, self._refuse)

        drain(self._files.busy)  # first: it feeds the data queue
        stuck = ["mam2-files"] if self._files.busy() else []
        for stage in ("data", "compute"):
            self._queues[stage].put(None)
            drain(self._threads[stage].is_alive)
            stuck += [self._threads[stage].name] if self._threads[stage].is_alive() else []
        for name in stuck:
            log.warning("%s still busy after %g s; exiting anyway", name, _STOP_SECONDS)
        for source, handle in ((pull, None), (router, self._refuse)):  # the last replies, then late requests
            while True:
                try:
                    frames = source.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                if handle is None:
                    self._send(router, frames)
                else:
                    handle(router, frames)
        pull.close(linger=0)
        router.close(linger=1000)
        self._access.stop()
        if not stuck:  # term() waits for every socket, including a stuck worker's: skip it then
            self.context.term()
        log.info("mam2 server stopped")

    def _public(self, message: str) -> str:
        """An error message as clients see it: it never names the server's cache directory."""
        return message.replace(self._cache_root, "<cache>")

    # -- I/O thread ------------------------------------------------------------------------
    def _send(self, router: zmq.Socket, frames: list) -> None:
        """Send to the client frames[0] names, never blocking the loop: a client gone (killed, its
        machine quiet) has its propagations cancelled, so other clients' shots do not wait behind
        frames no one will read; a client not reading (its queue full) misses this message."""
        try:
            router.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                cancelled = self.handlers.cancel_client(_identity(frames[0]))
                if cancelled:
                    log.info("a client went away: its propagate(s) %s cancelled", ", ".join(map(str, cancelled)))
            elif exc.errno != zmq.EAGAIN:
                raise

    def _refuse(self, router: zmq.Socket, frames: list) -> None:
        """What a stopping server answers to any request."""
        rid, op = P.peek_request(frames[1].buffer) if len(frames) > 1 else (None, None)
        self._send(router, [frames[0].bytes, *P.error_reply(rid, op, P.E_SHUTTING_DOWN, "the server is shutting down")])

    def _dispatch(self, router: zmq.Socket, frames: list) -> None:
        identity, parts = frames[0].bytes, [f.buffer for f in frames[1:]]

        def reply(out: list) -> None:
            self._send(router, [identity, *out])

        rid, op = P.peek_request(parts[0]) if parts else (None, None)
        try:
            if not parts:
                raise ProtocolError(P.E_BAD_MESSAGE, "empty message")
            envelope = P.decode_request(parts, max_message_bytes=self.config.max_message_bytes)
            rid, op, body = envelope.request_id, envelope.body.op, envelope.body
            log.debug("%s %s from %s", op, rid, identity.hex())
            if self._stop.is_set():
                raise ProtocolError(P.E_SHUTTING_DOWN, "the server is shutting down")
            if op == P.OP_HELLO:
                reply(P.encode_reply(rid, op, self.handlers.hello(body)))
            elif op == P.OP_STATUS:
                reply(P.encode_reply(rid, op, self.handlers.status(body)))
            elif op == P.OP_CANCEL:
                reply(P.encode_reply(rid, op, self.handlers.cancel(body, identity)))
            elif op == P.OP_SHUTDOWN:
                log.warning("shutdown requested by %s", identity.hex())
                reply(P.encode_reply(rid, op, P.ShutdownReply()))
                self.stop()
            else:
                work = Work(identity, envelope, sum(len(f) for f in frames[1:]))
                self._admission.admit(identity, work.nbytes)  # held until the final reply (`_worker`)
                try:
                    if op == P.OP_PROPAGATE:
                        work.job = self.handlers.add_job(identity, rid, body.shot)  # a duplicate id: bad_message
                        self._queues["compute"].put(work)
                    elif any(ref.encoding == P.ENC_PATH for ref in P.images(body)):
                        self._files.put(work)  # may fail to start its thread
                    else:
                        self._queues["data"].put(work)
                except BaseException:  # not queued: nothing will send its final reply, so free its slot here
                    self._admission.release(work)
                    raise
        except ProtocolError as exc:
            log.info("request %r (%s) refused: %s: %s", rid, op, exc.code, exc.message)
            reply(P.error_reply(rid, op, exc.code, self._public(exc.message)))
        except Exception as exc:  # noqa: BLE001 - the loop never dies on bad input
            log.error("internal error on %r: %s", rid, traceback.format_exc())
            reply(P.error_reply(rid, op, P.E_INTERNAL, self._public(f"{type(exc).__name__}: {exc}")))

    # -- worker threads ----------------------------------------------------------------------
    def _worker(self, name: str, handle) -> None:
        push = self.context.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(_OUT)
        try:
            while True:
                work = self._queues[name].get()
                if work is None:
                    return
                env = work.envelope
                op = env.body.op

                def send(body: P.Reply, buffers: Sequence[P.Buffer] = (), _w=work, _op=op) -> None:
                    push.send_multipart([_w.identity, *P.encode_reply(_w.envelope.request_id, _op, body, buffers)],
                                        copy=False)

                buffers: Sequence[P.Buffer] = ()
                try:
                    body, buffers = handle(work, send)
                except ProtocolError as exc:
                    log.info("%s %r failed: %s: %s", op, env.request_id, exc.code, exc.message)
                    body = P.ErrorReply(code=exc.code, message=self._public(exc.message))
                except Exception as exc:  # noqa: BLE001
                    log.error("internal error in %s %r: %s", op, env.request_id, traceback.format_exc())
                    body = P.ErrorReply(code=P.E_INTERNAL, message=self._public(f"{type(exc).__name__}: {exc}"))
                if work.job is not None:
                    self.handlers.finish_job(work.job)  # before the final reply: status is then already true
                try:
                    send(body, buffers)
                except Exception:  # noqa: BLE001 - never lose the worker thread
                    log.error("cannot send the reply to %s %r: %s", op, env.request_id, traceback.format_exc())
                finally:
                    self._admission.release(work)
        finally:
            push.close(linger=1000)

    def _read_files(self, work: Work) -> None:
        """The files stage, on the client's own thread (`ClientQueues`)."""
        try:
            work.files = self.handlers.read_files(work.envelope.body, work.identity)
        except Exception as exc:  # noqa: BLE001 - answered by the data thread, in order
            work.failure = exc
        self._queues["data"].put(work)

    def _data_loop(self) -> None:
        h = self.handlers

        def handle(work: Work, send):
            if work.failure is not None:
                raise work.failure
            body, buffers = work.envelope.body, work.envelope.buffers
            if body.op == P.OP_GET_ALPHA:
                return h.get_alpha(body)
            result = {
                P.OP_OPEN_SHOT: lambda: h.open_shot(body),
                P.OP_PUT_FRAMES: lambda: h.put_frames(body, buffers, work.files),
                P.OP_ADD_PROMPT: lambda: h.add_prompt(body, buffers, work.files),
                P.OP_REMOVE_PROMPT: lambda: h.remove_prompt(body),
                P.OP_CLOSE_SHOT: lambda: h.close_shot(body),
            }[body.op]()
            return result, ()

        self._worker("data", handle)

    def _compute_loop(self) -> None:
        def handle(work: Work, send):
            if work.job.cancel.is_set():
                return P.PropagateReply(shot=work.job.shot, computed=[], cached=[], cancelled=True, seconds=0.0), ()
            return self.handlers.propagate(work.envelope.body, work.job, send), ()

        self._worker("compute", handle)


def _identity(frame) -> bytes:
    return frame if isinstance(frame, bytes) else frame.bytes
