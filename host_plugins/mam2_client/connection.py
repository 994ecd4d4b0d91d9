"""The client's connection to a MAM2 server: socket, login, request/reply and cancel.

A `Connection` holds one DEALER socket (made again after a timeout: Lazy Pirate) and logs
in as `auth` says (this user's token for a local address, CURVE keys for a --curve server);
a socket monitor sees a refused login, which fails at once, and a logged-in connection that
closes while a reply is awaited (a server killed or gone: TCP keepalive notices a vanished
machine), which ends the wait at once instead of after the timeout: the request died with it.
`client.Client` adds the typed ops on top; the errors here are the client's (re-exported by
`client` and the package).
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any, Callable, Mapping, Sequence, TypeVar

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from . import auth, wire

log = logging.getLogger(__name__)
_Self = TypeVar("_Self", bound="Connection")


class MAM2Error(Exception):
    """Base class of client errors."""


class ServerUnavailable(MAM2Error):
    """No reply from the server within the timeout (after the retries)."""


POLL_S = 0.25  # how often a wait looks at its `stop` callable
_LOST = object()  # _attempt: the connection closed while a reply was awaited


def keep_alive(sock: zmq.Socket) -> None:
    """TCP keepalive on `sock`'s connections: one idle for 10 s is probed every 5 s, and closed by the
    kernel after 3 unanswered probes, so a vanished machine is noticed in about 25 s. (ZeroMQ's own
    heartbeats would also close a connection busy with one long message: a 4K plate on a slow link.)"""
    for option, value in ((zmq.TCP_KEEPALIVE, 1), (zmq.TCP_KEEPALIVE_IDLE, 10), (zmq.TCP_KEEPALIVE_INTVL, 5),
                          (zmq.TCP_KEEPALIVE_CNT, 3)):
        sock.setsockopt(option, value)


class _LoginRefused(Exception):
    """The server refused the socket's handshake (ZeroMQ monitor `event`)."""

    def __init__(self, event: int) -> None:
        super().__init__(event)
        self.event = event


class ServerError(MAM2Error):
    """The server answered with an error reply, or refused this client's login (code `unauthorized`)."""

    def __init__(self, op: str, code: str, message: str) -> None:
        super().__init__(f"{op}: {code}: {message}")
        self.op, self.code, self.message = op, code, message


class Connection:
    """A socket to one server: connect and log in, send a request and read its replies (retrying
    idempotent ones), cancel. Thread-safe: requests are serialised by a lock."""

    def __init__(self, address: str = wire.DEFAULT_ADDRESS, *, timeout: float = 10.0, retries: int = 3,
                 frame_timeout: float = 600.0, curve_server_key: str | None = None,
                 curve_client_secret: str | None = None, context: zmq.Context | None = None,
                 token_file: str | os.PathLike | None = None) -> None:
        """timeout: seconds to wait for a reply; retries: tries of idempotent calls before giving up;
        frame_timeout: longest gap between two propagate messages (one frame's compute time);
        curve_*: key files from `mam2 keys` for a server started with --curve;
        token_file: the local server's token (default: $MAM2_TOKEN_FILE, else ~/.cache/mam2/token)."""
        self.address = address
        self.timeout = timeout
        self.retries = max(1, retries)
        self.frame_timeout = frame_timeout
        self._curve = (curve_server_key, curve_client_secret) if curve_server_key else None
        self._context = context or zmq.Context.instance()
        self.token_file = token_file
        # never hand this user's local secret to a remote server (those authenticate clients by CURVE key)
        self._sends_token = self._curve is None and wire.is_loopback(address)
        self._token: str | None = None  # as read from the token file when the socket connected
        self._socket: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None  # the socket's handshakes and closed connections
        self._logged_in = False  # a connection of this socket completed its handshake (and is open)
        self._running: tuple[str, str | None] | None = None  # (request id, shot) of the request in flight
        self._lock = threading.Lock()
        self._owner: int | None = None  # thread inside request(), to refuse re-entry from callbacks

    # -- plumbing ---------------------------------------------------------------------
    def _connect(self) -> zmq.Socket:
        sock = self._context.socket(zmq.DEALER)
        monitor = None
        try:  # a bad key file or address: close what was made (open sockets keep the context from terminating)
            sock.setsockopt(zmq.LINGER, 0)
            if wire.is_ipv6(self.address):
                sock.setsockopt(zmq.IPV6, 1)
            if self._curve is not None:
                from zmq.auth import load_certificate
                server_public, _ = load_certificate(self._curve[0])
                public, secret = load_certificate(self._curve[1])
                sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_public, public, secret
            elif self._sends_token:
                self._token = auth.read_token(self.token_file)
                auth.use_token(sock, self._token)
            keep_alive(sock)
            monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                              | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
            # a send blocks only when no connection is left to queue it on: after a refused login (never retried)
            sock.setsockopt(zmq.SNDTIMEO, int(self.timeout * 1000))
            sock.connect(self.address)
        except BaseException:
            if monitor is not None:
                try:
                    sock.disable_monitor()
                except zmq.ZMQError:
                    pass
                monitor.close(linger=0)
            sock.close(linger=0)
            raise
        self._monitor, self._logged_in = monitor, False
        return sock

    def _reset(self) -> None:
        if self._socket is not None:
            try:
                self._socket.disable_monitor()
            except zmq.ZMQError:
                pass  # e.g. the host terminated the context (quitting): the sockets must still close,
                # or the termination waits for them forever
            finally:
                self._monitor.close(linger=0)
                self._socket.close(linger=0)
                self._socket = self._monitor = None

    def close(self) -> None:
        with self._lock:
            self._reset()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _unavailable(self, op: str, tries: int, timeout: float) -> ServerUnavailable:
        return ServerUnavailable(
            f"no reply from the MAM2 server at {self.address} to '{op}' ({tries} tr{'y' if tries == 1 else 'ies'} "
            f"of {timeout:g} s). Is `mam2 serve --address {self.address}` running? "
            "(mam2_client.ensure_server() can start a local one.)")

    def request(self, op: str, fields: Mapping[str, Any] | None = None, buffers: Sequence[Any] = (), *,
                on_message: Callable[[dict, list], None] | None = None,
                timeout: float | None = None, retry: bool | None = None,
                stop: Callable[[], bool] | None = None) -> tuple[dict, list]:
        """Send one request; return the final reply's (header, buffers). Errors raise ServerError.

        on_message gets intermediate messages (progress, alpha). Idempotent ops are
        retried on timeout unless retry=False. stop, polled a few times a second while waiting:
        True cancels the request on the server (which then sends its final reply), even while no
        message arrives (a long frame).
        """
        timeout = self.timeout if timeout is None else timeout
        tries = self.retries if (op in wire.IDEMPOTENT_OPS if retry is None else retry) else 1
        rid = uuid.uuid4().hex
        header = {wire.KEY_VERSION: wire.PROTOCOL_VERSION, wire.KEY_ID: rid, wire.KEY_OP: op, **(fields or {})}
        if self._owner == threading.get_ident():
            raise MAM2Error(f"'{op}' called from inside a callback of this Client's running request; use "
                            "another Client (cancel() is fine: it has its own socket)")
        message = [msgpack.packb(header, use_bin_type=True), *buffers]
        with self._lock:
            self._owner = threading.get_ident()
            self._running = (rid, (fields or {}).get("shot"))
            try:
                return self._exchange(op, message, rid, tries, timeout, on_message, stop)
            finally:
                self._owner = self._running = None

    def _exchange(self, op: str, message: list, rid: str, tries: int, timeout: float,
                  on_message: Callable[[dict, list], None] | None,
                  stop: Callable[[], bool] | None) -> tuple[dict, list]:
        attempt = 1
        while attempt <= tries:
            try:
                final = self._attempt(op, message, rid, timeout, on_message, stop)
            except _LoginRefused as refused:  # the request never reached the server
                used = self._token
                self._reset()
                if self._sends_token and auth.read_token(self.token_file) != used:
                    continue  # a server started since the file was read made a new token: log in again
                raise ServerError(op, wire.E_UNAUTHORIZED, self._refused(refused.event, used)) from None
            if final is _LOST:
                self._reset()
                if on_message is not None or attempt == tries:  # a stream's partial work is not sent twice
                    raise ServerUnavailable(
                        f"the MAM2 server at {self.address} went away while answering '{op}' (its connection "
                        "closed: stopped, killed or unreachable; a request over its --max-message size closes it "
                        f"too). What it finished is kept; start it again (`mam2 serve --address {self.address}`) "
                        "and run again.")
                log.warning("mam2: the connection to %s closed during %s (try %d/%d)", self.address, op, attempt,
                            tries)
                attempt += 1
                continue
            if final is not None:
                return final
            log.warning("mam2: no reply to %s from %s in %.1f s (try %d/%d)", op, self.address, timeout, attempt,
                        tries)
            if on_message is not None:  # a streaming job we stop waiting for must not run on;
                self._stop_quietly(rid, wait=1.0)  # one short try: the server may well be dead
            self._reset()  # Lazy Pirate: a fresh socket drops queued requests and stale replies
            attempt += 1
        raise self._unavailable(op, tries, timeout)

    def _attempt(self, op: str, message: list, rid: str, timeout: float,
                 on_message: Callable[[dict, list], None] | None,
                 stop: Callable[[], bool] | None = None) -> tuple[dict, list] | object | None:
        """Send once, read up to the final reply; None when `timeout` passes without a message,
        _LOST when the connection closes meanwhile."""
        if self._socket is None:
            self._socket = self._connect()
        self._check_login(0)  # refused while no request waited: that connection is gone for good
        # (a closed connection seen now is an earlier one: the socket reconnects by itself)
        try:
            self._socket.send_multipart(message, copy=False)
        except zmq.Again:  # no connection to queue it on after SNDTIMEO: its login was refused just now?
            self._check_login(100)
            return None
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        stop_sent = closed = False
        deadline = time.monotonic() + timeout
        while True:
            if closed and not self._socket.poll(0):  # what arrived before it closed has been read
                return _LOST
            left = deadline - time.monotonic()
            ready = dict(poller.poll(0 if closed else int(1000 * max(0.0, min(left, POLL_S) if stop else left))))
            if self._monitor in ready and self._check_login(0):
                closed = True  # a server that stops sends its last replies first: read them
                continue
            if self._socket not in ready:
                if stop is not None and not stop_sent and stop():
                    stop_sent = True
                    self._stop_quietly(rid, wait=self.timeout)
                    deadline = max(deadline, time.monotonic() + POLL_S)  # look at what came meanwhile
                if time.monotonic() >= deadline:
                    return None
                continue
            deadline = time.monotonic() + timeout  # the gap between two messages is what is timed
            frames = self._socket.recv_multipart(copy=False)
            try:
                reply = msgpack.unpackb(frames[0].bytes, raw=False)
            except Exception:  # noqa: BLE001
                continue
            if not isinstance(reply, dict) or reply.get(wire.KEY_ID) != rid:
                continue  # a late reply to an earlier request
            kind = reply.get(wire.KEY_KIND)
            data = [f.buffer for f in frames[1:]]
            if kind == wire.KIND_ERROR:
                raise ServerError(op, reply.get("code", "?"), reply.get("message", ""))
            if kind == wire.KIND_REPLY:
                return reply, data
            if on_message is not None:
                try:
                    on_message(reply, data)
                except BaseException:
                    self._stop_quietly(rid)  # a failing callback must not leave the server computing
                    raise

    def _check_login(self, wait_ms: int) -> bool:
        """Raise _LoginRefused if the server refused this socket's handshake (seen within `wait_ms`);
        True if a logged-in connection closed. Reads the events there are now. A connection closed
        before its handshake completed is not one (a peer that is no MAM2 server, or a refused
        login, whose own event comes first): the socket reconnects, and the wait runs its course."""
        closed = False
        while self._monitor.poll(wait_ms):
            wait_ms = 0
            event = recv_monitor_message(self._monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._logged_in = True
            elif event == zmq.EVENT_DISCONNECTED:
                closed, self._logged_in = closed or self._logged_in, False
            else:
                raise _LoginRefused(event)
        return closed

    def _refused(self, event: int, token: str | None) -> str:
        if self._curve is not None:
            return (f"the MAM2 server at {self.address} refused this client's CURVE key ({self._curve[1]}): "
                    "its public key must be in the server's authorized/ directory (see `mam2 keys`)")
        if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:  # e.g. a --curve server, or no MAM2 server at all
            how = "a token" if self._sends_token else "no key"
            return (f"the server at {self.address} expects another kind of login than this client's ({how}); "
                    "a server started with --curve needs curve_server_key= and curve_client_secret=")
        return auth.refused_message(self.address, self.token_file, token)

    def _stop_quietly(self, rid: str, wait: float | None = None) -> None:
        try:
            self.cancel(rid, wait=wait)
        except MAM2Error:
            pass

    def cancel(self, request_id: str | None = None, *, shot: str | None = None,
               wait: float | None = None) -> list[str]:
        """Stop propagations: the request `request_id` (this Client's running one, or with its `shot`),
        or every job of `shot`. Thread-safe: uses its own socket, which is why a request id is sent
        with its shot (the server matches an id alone only against the sender's own jobs).
        wait: seconds for a single try (default: this client's timeout and retries).
        """
        running = self._running
        if request_id is not None and shot is None and running is not None and running[0] == request_id:
            shot = running[1]
        fields: dict[str, Any] = {}
        if request_id is not None:
            fields["target"] = request_id
        if shot is not None:
            fields["shot"] = shot
        server_key, client_secret = self._curve or (None, None)
        side = Connection(self.address, timeout=self.timeout if wait is None else wait,
                          retries=self.retries if wait is None else 1, context=self._context,
                          token_file=self.token_file, curve_server_key=server_key, curve_client_secret=client_secret)
        try:
            return side.request(wire.OP_CANCEL, fields)[0]["cancelled"]
        finally:
            side.close()
