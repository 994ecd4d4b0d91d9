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

The socket, login, retries and cancel are `connection.Connection`'s; this module adds the typed
ops and their data (Alpha, RawImage, PropagateResult), and re-exports the errors.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import wire
from .connection import Connection, MAM2Error, ServerError, ServerUnavailable

__all__ = ["Alpha", "Client", "MAM2Error", "PropagateResult", "RawImage", "ServerError", "ServerUnavailable",
           "wait_for_server"]

try:  # optional: hosts without numpy get Alpha.data as bytes
    import numpy as _np
except ImportError:  # pragma: no cover - exercised in a subprocess test
    _np = None

ProgressCallback = Callable[[int, int, int], Any]  # (done, total, frame); return False to cancel


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


class Client(Connection):
    """The protocol's ops as methods (see docs/protocol.md); Connection's arguments."""

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
                  on_alpha: Callable[[Alpha], Any] | None = None,
                  stop: Callable[[], bool] | None = None) -> PropagateResult:
        """Track the prompts over the shot (or first..last). Alphas stream as frames finish: to on_alpha
        if given, else into the result. on_progress returning False cancels (so does cancel()); so
        does `stop` returning True, which is also asked while no frame finishes (a host's Cancel
        button during a long frame). A server that goes away raises ServerUnavailable at once."""
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

        def stopped() -> bool:  # one cancel, whichever of on_progress and stop asks first
            if state["cancel_sent"] or not stop():
                return False
            state["cancel_sent"] = True
            return True

        reply, _ = self.request(wire.OP_PROPAGATE, fields, on_message=on_message, timeout=self.frame_timeout,
                                retry=False, stop=stopped if stop is not None else None)
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
