"""A blocking MAM2 client for Nuke, Blender or a plain Python shell.

Depends only on pyzmq and msgpack (numpy is used when present). Every call has a
timeout; idempotent calls are retried Lazy-Pirate style (close the socket,
reconnect, resend) and fail with `ServerUnavailable` naming the address. Calls
on one Client are serialised by a lock; `cancel()` uses its own socket, so
another thread (e.g. Nuke's UI thread) can stop a running `propagate`. A client of a
local address logs in with this user's token (`auth`: ZeroMQ PLAIN), read from the
token file; a server that refuses the login raises ServerError `unauthorized` at once.

    client = Client("tcp://127.0.0.1:5557")
    client.open_shot("sh010", first=1001, last=1100, width=1920, height=1080)
    client.put_frames("sh010", {1001: "/shared/plate.1001.exr"}, encoding="path")
    client.add_prompt("sh010", 1001, box=(800, 200, 1200, 1000))
    result = client.propagate("sh010", on_progress=lambda done, total, frame: print(done, total))
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from . import auth, wire

try:  # optional: hosts without numpy get Alpha.data as bytes
    import numpy as _np
except ImportError:  # pragma: no cover - exercised in a subprocess test
    _np = None

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, int], Any]  # (done, total, frame); return False to cancel


class MAM2Error(Exception):
    """Base class of client errors."""


class ServerUnavailable(MAM2Error):
    """No reply from the server within the timeout (after the retries)."""


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


@dataclass
class RawImage:
    """Pixels without numpy: little-endian `dtype` ('<f2' or '<f4'), row-major `shape`."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes | memoryview


@dataclass
class Alpha:
    frame: int
    encoding: str  # "raw" or "exr"
    data: bytes | memoryview  # raw pixels, or the bytes of an EXR file
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    cached: bool = False

    def to_numpy(self):
        """(H, W) array (raw encoding only; needs numpy)."""
        if _np is None:
            raise MAM2Error("numpy is not available in this Python; use Alpha.data")
        if self.encoding != wire.ENC_RAW:
            raise MAM2Error("this alpha is EXR bytes; write Alpha.data to a .exr file and read it")
        return _np.frombuffer(self.data, dtype=self.dtype).reshape(self.shape)


@dataclass
class PropagateResult:
    shot: str
    computed: list[int]
    cached: list[int]
    cancelled: bool
    seconds: float
    alphas: dict[int, Alpha] = field(default_factory=dict)  # filled unless on_alpha was given


class Client:
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
        self._monitor: zmq.Socket | None = None  # the socket's failed handshakes
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
            monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
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
        self._monitor = monitor
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

    def __enter__(self) -> "Client":
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
                timeout: float | None = None, retry: bool | None = None) -> tuple[dict, list]:
        """Send one request; return the final reply's (header, buffers). Errors raise ServerError.

        on_message gets intermediate messages (progress, alpha). Idempotent ops are
        retried on timeout unless retry=False.
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
                return self._exchange(op, message, rid, tries, timeout, on_message)
            finally:
                self._owner = self._running = None

    def _exchange(self, op: str, message: list, rid: str, tries: int, timeout: float,
                  on_message: Callable[[dict, list], None] | None) -> tuple[dict, list]:
        attempt = 1
        while attempt <= tries:
            try:
                final = self._attempt(op, message, rid, timeout, on_message)
            except _LoginRefused as refused:  # the request never reached the server
                used = self._token
                self._reset()
                if self._sends_token and auth.read_token(self.token_file) != used:
                    continue  # a server started since the file was read made a new token: log in again
                raise ServerError(op, wire.E_UNAUTHORIZED, self._refused(refused.event, used)) from None
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
                 on_message: Callable[[dict, list], None] | None) -> tuple[dict, list] | None:
        """Send once, read up to the final reply; None when `timeout` passes without a message."""
        if self._socket is None:
            self._socket = self._connect()
        self._check_login(0)  # refused while no request waited: that connection is gone for good
        try:
            self._socket.send_multipart(message, copy=False)
        except zmq.Again:  # no connection to queue it on after SNDTIMEO: its login was refused just now?
            self._check_login(100)
            return None
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        while True:
            ready = dict(poller.poll(int(timeout * 1000)))
            if self._monitor in ready:
                self._check_login(0)
            if self._socket not in ready:
                return None
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

    def _check_login(self, wait_ms: int) -> None:
        """Raise _LoginRefused if the server refused this socket's handshake (seen within `wait_ms`)."""
        if self._monitor.poll(wait_ms):
            raise _LoginRefused(recv_monitor_message(self._monitor)["event"])

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

    # -- ops --------------------------------------------------------------------------------
    def hello(self) -> dict:
        """Server version, protocol, engines, device and limits."""
        return self.request(wire.OP_HELLO, {"client": "mam2_client"})[0]

    def status(self) -> dict:
        return self.request(wire.OP_STATUS)[0]

    def open_shot(self, shot: str, *, first: int, last: int, width: int, height: int,
                  colorspace: str | None = None) -> dict:
        """Open (or resume) a shot; the reply lists frames already received and keyframes.
        colorspace: the plates' OCIO colour space (None: the server's default working space)."""
        fields = {"shot": shot, "first": first, "last": last, "width": width, "height": height}
        if colorspace is not None:
            fields["colorspace"] = colorspace
        return self.request(wire.OP_OPEN_SHOT, fields)[0]

    def put_frames(self, shot: str, frames: Mapping[int, Any], *, encoding: str = wire.ENC_RAW,
                   batch_bytes: int = 256 << 20, on_progress: ProgressCallback | None = None) -> list[int]:
        """Send plates. Values: numpy (H, W, 3|4) float16/float32 or RawImage (encoding "raw"),
        EXR file bytes ("exr"), or paths the server can read ("path"). Returns the frames stored."""
        received: list[int] = []
        batch: list[dict] = []
        buffers: list[Any] = []
        size = 0
        items = sorted(frames.items())

        def flush() -> None:
            nonlocal batch, buffers, size
            if batch:
                reply = self.request(wire.OP_PUT_FRAMES, {"shot": shot, "frames": batch}, buffers)[0]
                received.extend(reply["received"])
                if on_progress is not None:
                    on_progress(len(received), len(items), received[-1])
            batch, buffers, size = [], [], 0

        for frame, value in items:
            ref, buf = _pixels_ref(value, encoding, len(buffers) + 1)
            nbytes = memoryview(buf).nbytes if buf is not None else 0
            if batch and (size + nbytes > batch_bytes or len(buffers) + 1 > wire.MAX_BUFFERS):
                flush()
                ref, buf = _pixels_ref(value, encoding, 1)
            ref["frame"] = int(frame)
            batch.append(ref)
            if buf is not None:
                buffers.append(buf)
                size += nbytes
        flush()
        return received

    def add_prompt(self, shot: str, frame: int, *, points: Iterable[Sequence[float]] = (),
                   box: Sequence[float] | None = None, mask: Any = None) -> dict:
        """Set the prompt of `frame` (replaces an earlier one). Pixel coordinates, origin top-left.
        points: (x, y[, label]) with label 1 = foreground, 0 = background; box: (x0, y0, x1, y1);
        mask: (H, W) array/RawImage. The reply's `affected` lists the frames to re-propagate."""
        fields: dict[str, Any] = {"shot": shot, "frame": int(frame), "points": [list(map(float, p)) for p in points]}
        if box is not None:
            fields["box"] = [float(v) for v in box]
        buffers = []
        if mask is not None:
            ref, buf = _pixels_ref(mask, wire.ENC_RAW if not isinstance(mask, (str, bytes)) else
                                   (wire.ENC_PATH if isinstance(mask, str) else wire.ENC_EXR), 1)
            fields["mask"] = ref
            buffers = [buf] if buf is not None else []
        return self.request(wire.OP_ADD_PROMPT, fields, buffers)[0]

    def remove_prompt(self, shot: str, frame: int) -> dict:
        return self.request(wire.OP_REMOVE_PROMPT, {"shot": shot, "frame": int(frame)})[0]

    def propagate(self, shot: str, *, first: int | None = None, last: int | None = None,
                  direction: str = wire.DIR_BOTH, from_frame: int | None = None, include_cached: bool = False,
                  alpha_dtype: str = wire.DTYPE_FLOAT, alpha_encoding: str = wire.ENC_RAW,
                  on_progress: ProgressCallback | None = None,
                  on_alpha: Callable[[Alpha], Any] | None = None) -> PropagateResult:
        """Track the prompts over the shot (or first..last). Alphas stream as frames finish: to on_alpha
        if given, else into the result. on_progress returning False cancels (so does cancel())."""
        fields = {"shot": shot, "direction": direction, "include_cached": include_cached,
                  "alpha_dtype": alpha_dtype, "alpha_encoding": alpha_encoding}
        for key, value in (("first", first), ("last", last), ("from_frame", from_frame)):
            if value is not None:
                fields[key] = int(value)
        alphas: dict[int, Alpha] = {}
        state = {"cancel_sent": False}

        def on_message(header: dict, buffers: list) -> None:
            if header.get(wire.KEY_KIND) == wire.KIND_ALPHA:
                alpha = _alpha(header["alpha"], buffers)
                if on_alpha is not None:
                    on_alpha(alpha)
                else:
                    alphas[alpha.frame] = alpha
            elif header.get(wire.KEY_KIND) == wire.KIND_PROGRESS and on_progress is not None:
                if on_progress(header["done"], header["total"], header["frame"]) is False \
                        and not state["cancel_sent"]:
                    state["cancel_sent"] = True
                    self._stop_quietly(header[wire.KEY_ID])

        reply, _ = self.request(wire.OP_PROPAGATE, fields, on_message=on_message, timeout=self.frame_timeout,
                                retry=False)
        return PropagateResult(shot=reply["shot"], computed=reply["computed"], cached=reply["cached"],
                               cancelled=reply["cancelled"], seconds=reply["seconds"], alphas=alphas)

    def get_alpha(self, shot: str, frames: Iterable[int], *, alpha_dtype: str = wire.DTYPE_FLOAT,
                  alpha_encoding: str = wire.ENC_RAW) -> tuple[dict[int, Alpha], list[int]]:
        """Finished alphas for the current prompts: ({frame: Alpha}, frames without one yet)."""
        found: dict[int, Alpha] = {}
        missing: list[int] = []
        frames = [int(f) for f in frames]
        for i in range(0, len(frames), 32):
            reply, buffers = self.request(wire.OP_GET_ALPHA, {"shot": shot, "frames": frames[i:i + 32],
                                                              "alpha_dtype": alpha_dtype,
                                                              "alpha_encoding": alpha_encoding})
            for ref in reply["alphas"]:
                found[ref["frame"]] = _alpha(ref, buffers)
            missing.extend(reply["missing"])
        return found, missing

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
        side = Client(self.address, timeout=self.timeout if wait is None else wait,
                      retries=self.retries if wait is None else 1, context=self._context, token_file=self.token_file,
                      curve_server_key=server_key, curve_client_secret=client_secret)
        try:
            return side.request(wire.OP_CANCEL, fields)[0]["cancelled"]
        finally:
            side.close()

    def close_shot(self, shot: str, *, purge: bool = False) -> dict:
        return self.request(wire.OP_CLOSE_SHOT, {"shot": shot, "purge": purge})[0]

    def shutdown(self) -> dict:
        return self.request(wire.OP_SHUTDOWN, retry=False)[0]


def _alpha(ref: dict, buffers: list) -> Alpha:
    data = buffers[ref["buffer"] - 1]
    shape = tuple(ref["shape"]) if ref.get("shape") else None
    return Alpha(frame=ref["frame"], encoding=ref["encoding"], data=data, dtype=ref.get("dtype"), shape=shape,
                 cached=bool(ref.get("cached")))


def _pixels_ref(value: Any, encoding: str, index: int) -> tuple[dict, Any]:
    """(header fields, buffer or None) for one image."""
    if encoding == wire.ENC_PATH:
        return {"encoding": wire.ENC_PATH, "path": os.fspath(value)}, None
    if encoding == wire.ENC_EXR:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError("encoding 'exr' takes the bytes of an EXR file")
        return {"encoding": wire.ENC_EXR, "buffer": index}, value
    if encoding != wire.ENC_RAW:
        raise ValueError(f"encoding must be one of {wire.ENCODINGS}, got {encoding!r}")
    if isinstance(value, RawImage):
        return {"encoding": wire.ENC_RAW, "buffer": index, "dtype": value.dtype, "shape": list(value.shape)}, value.data
    if _np is None:
        raise TypeError("without numpy, pass RawImage(dtype, shape, data) for raw pixels")
    arr = _np.asarray(value)
    dtype = "<f2" if arr.dtype == _np.float16 else "<f4"
    arr = _np.ascontiguousarray(arr, dtype=dtype)
    return ({"encoding": wire.ENC_RAW, "buffer": index, "dtype": dtype, "shape": list(arr.shape)},
            memoryview(arr).cast("B"))


def wait_for_server(client: Client, seconds: float) -> dict:
    """hello() until it answers or `seconds` pass (then ServerUnavailable)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return client.hello()
        except ServerUnavailable:
            if time.monotonic() >= deadline:
                raise
