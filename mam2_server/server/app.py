"""The MAM2 server: one ROUTER socket, one I/O loop that always answers, work on two threads.

* I/O loop (the thread that calls `serve_forever`): receives every request,
  decodes it (`protocol.decode_request`), answers `hello`, `status`, `cancel`
  and `shutdown` at once, queues the rest, and forwards whatever the worker
  threads send back. It never runs an engine, so a cancel never waits behind a
  long frame.
* data thread: open_shot, put_frames, prompts, get_alpha, close_shot (disk I/O).
* compute thread: propagate, the only thread that touches the engine.

Workers hand replies to the I/O loop over an inproc PUSH/PULL pair (ZeroMQ
sockets are not thread-safe); pixel buffers travel with ``copy=False``.
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import zmq

from host_plugins.mam2_client.wire import is_loopback
from mam2_server import protocol as P
from mam2_server.engines import Engine
from mam2_server.protocol import ProtocolError
from mam2_server.server.handlers import Handlers, Job
from mam2_server.server.security import Curve, check_bind_address
from mam2_server.server.shots import ShotStore

log = logging.getLogger(__name__)

_OUT = "inproc://mam2-out"
_DATA_OPS = (P.OP_OPEN_SHOT, P.OP_PUT_FRAMES, P.OP_ADD_PROMPT, P.OP_REMOVE_PROMPT, P.OP_GET_ALPHA,
             P.OP_CLOSE_SHOT)


@dataclass
class ServerConfig:
    address: str = P.DEFAULT_ADDRESS
    cache_dir: Path = Path("mam2-cache")
    memory_budget: int = 4 << 30  # bytes of decoded frames and masks held across shots
    max_message_bytes: int = P.MAX_MESSAGE_BYTES  # per ZeroMQ frame; larger ones drop the connection
    curve_dir: Path | None = None  # keys from `mam2 keys`; required for a non-loopback address
    allowed_roots: Sequence[Path] | None = None  # where "path" frames may be read (None: anywhere)
    cache_frames: int = 4  # decoded frames kept in memory per shot
    spill_compression: str = "none"  # EXR compression of spilled raw frames: none (fast) or zip (smaller)
    engine_id: str = ""  # identifies engine + weights in cache keys (default: the engine name)


@dataclass
class _Work:
    identity: bytes
    envelope: P.Envelope
    job: Job | None = None


@dataclass
class Server:
    engine: Engine
    config: ServerConfig
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        check_bind_address(self.config.address, self.config.curve_dir)
        if not is_loopback(self.config.address) and self.config.allowed_roots is None:
            self.config.allowed_roots = []  # remote clients may not name server files unless --allow-path says so
        self.context = zmq.Context()
        store = ShotStore(self.config.cache_dir, self.config.memory_budget, self.config.cache_frames,
                          self.config.spill_compression)
        self.handlers = Handlers(self.engine, self.config.engine_id or self.engine.name, store,
                                 allowed_roots=self.config.allowed_roots)
        self._queues = {"data": queue.Queue(), "compute": queue.Queue()}
        self._threads: list[threading.Thread] = []
        self._curve: Curve | None = None
        self.bound_address: str | None = None

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
        """Bind, then serve until `stop()`, a signal or a `shutdown` request; on_bound gets the real address."""
        router = self.context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 1000)
        router.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
        router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        if self.config.curve_dir is not None:
            self._curve = Curve(self.context, self.config.curve_dir)
            self._curve.apply_server(router)
        router.bind(self.config.address)
        self.bound_address = router.getsockopt_string(zmq.LAST_ENDPOINT)
        pull = self.context.socket(zmq.PULL)
        pull.bind(_OUT)
        for name, target in (("data", self._data_loop), ("compute", self._compute_loop)):
            thread = threading.Thread(target=target, name=f"mam2-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("mam2 server on %s (engine %s, device %s, cache %s)", self.bound_address, self.engine.name,
                 self.handlers.device, self.config.cache_dir)
        if on_bound is not None:
            on_bound(self.bound_address)
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(pull, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                if pull in events:
                    for _ in range(64):
                        try:
                            router.send_multipart(pull.recv_multipart(zmq.NOBLOCK, copy=False), copy=False)
                        except zmq.Again:
                            break
                if router in events:
                    for _ in range(64):
                        try:
                            frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._dispatch(router, frames)
        finally:
            self._shutdown(router, pull)

    def _shutdown(self, router: zmq.Socket, pull: zmq.Socket) -> None:
        self.handlers.cancel_all()
        for q in self._queues.values():
            q.put(None)
        stuck = []
        for thread in self._threads:
            thread.join(timeout=10)
            if thread.is_alive():
                log.warning("%s still busy after 10 s; exiting anyway", thread.name)
                stuck.append(thread)
        while True:  # flush the last replies (e.g. the cancelled propagate's final reply)
            try:
                router.send_multipart(pull.recv_multipart(zmq.NOBLOCK, copy=False), copy=False)
            except zmq.Again:
                break
        pull.close(linger=0)
        router.close(linger=1000)
        if self._curve is not None:
            self._curve.stop()
        if not stuck:  # term() waits for every socket, including a stuck worker's: skip it then
            self.context.term()
        log.info("mam2 server stopped")

    # -- I/O thread ------------------------------------------------------------------------
    def _dispatch(self, router: zmq.Socket, frames: list) -> None:
        identity, parts = frames[0].bytes, [f.buffer for f in frames[1:]]

        def reply(out: list) -> None:
            router.send_multipart([identity, *out], copy=False)

        op = P.OP_HELLO
        rid = None
        try:
            if not parts:
                raise ProtocolError(P.E_BAD_MESSAGE, "empty message")
            rid = P.peek_request_id(parts[0])
            envelope = P.decode_request(parts)
            rid, op, body = envelope.request_id, envelope.body.op, envelope.body
            log.debug("%s %s from %s", op, rid, identity.hex())
            if op == P.OP_HELLO:
                reply(P.encode_reply(rid, op, self.handlers.hello(body)))
            elif op == P.OP_STATUS:
                reply(P.encode_reply(rid, op, self.handlers.status(body)))
            elif op == P.OP_CANCEL:
                reply(P.encode_reply(rid, op, self.handlers.cancel(body)))
            elif op == P.OP_SHUTDOWN:
                log.warning("shutdown requested by %s", identity.hex())
                reply(P.encode_reply(rid, op, P.ShutdownReply()))
                self.stop()
            elif self._stop.is_set():
                raise ProtocolError(P.E_SHUTTING_DOWN, "the server is shutting down")
            elif op == P.OP_PROPAGATE:
                job = self.handlers.add_job(rid, body.shot)
                self._queues["compute"].put(_Work(identity, envelope, job))
            else:
                self._queues["data"].put(_Work(identity, envelope))
        except ProtocolError as exc:
            log.info("request %r (%s) refused: %s: %s", rid, op, exc.code, exc.message)
            reply(P.error_reply(rid, op, exc.code, exc.message))
        except Exception as exc:  # noqa: BLE001 - the loop never dies on bad input
            log.error("internal error on %r: %s", rid, traceback.format_exc())
            reply(P.error_reply(rid, op, P.E_INTERNAL, f"{type(exc).__name__}: {exc}"))

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
                    body = P.ErrorReply(code=exc.code, message=exc.message)
                except Exception as exc:  # noqa: BLE001
                    log.error("internal error in %s %r: %s", op, env.request_id, traceback.format_exc())
                    body = P.ErrorReply(code=P.E_INTERNAL, message=f"{type(exc).__name__}: {exc}")
                if work.job is not None:
                    self.handlers.finish_job(work.job)  # before the final reply: status is then already true
                try:
                    send(body, buffers)
                except Exception:  # noqa: BLE001 - never lose the worker thread
                    log.error("cannot send the reply to %s %r: %s", op, env.request_id, traceback.format_exc())
        finally:
            push.close(linger=1000)

    def _data_loop(self) -> None:
        h = self.handlers

        def handle(work: _Work, send):
            body, buffers = work.envelope.body, work.envelope.buffers
            if body.op == P.OP_GET_ALPHA:
                return h.get_alpha(body)
            result = {
                P.OP_OPEN_SHOT: lambda: h.open_shot(body),
                P.OP_PUT_FRAMES: lambda: h.put_frames(body, buffers),
                P.OP_ADD_PROMPT: lambda: h.add_prompt(body, buffers),
                P.OP_REMOVE_PROMPT: lambda: h.remove_prompt(body),
                P.OP_CLOSE_SHOT: lambda: h.close_shot(body),
            }[body.op]()
            return result, ()

        self._worker("data", handle)

    def _compute_loop(self) -> None:
        def handle(work: _Work, send):
            if work.job.cancel.is_set():
                return P.PropagateReply(shot=work.job.shot, computed=[], cached=[], cancelled=True, seconds=0.0), ()
            return self.handlers.propagate(work.envelope.body, work.job, send), ()

        self._worker("compute", handle)
