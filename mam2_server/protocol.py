"""The MAM2 wire protocol: typed requests and replies, and the one place that (de)serialises them.

A message is ``[header, *buffers]`` (ZeroMQ multipart; the ROUTER socket adds the
client identity in front). ``header`` is a msgpack map with ``v`` (protocol
version), ``id`` (request id), ``op`` and, in replies, ``kind``; the remaining keys
are the fields of the op's dataclass below. Pixels travel in ``buffers`` and are
referred to by index. Only msgpack is ever decoded: no pickle, no msgpack
extension types. Constants live in `host_plugins.mam2_client.wire` so that the
client shares them without importing the server. Reference: docs/protocol.md.
"""
from __future__ import annotations

import dataclasses
import hmac
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence, Union

import msgpack

from host_plugins.mam2_client import wire
from host_plugins.mam2_client.wire import *  # noqa: F401,F403  (re-exported constants)

Buffer = Union[bytes, memoryview]


class ProtocolError(ValueError):
    """A request that cannot be served; becomes an `error` reply with `code` and `message`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------- shared parts
@dataclass
class Pixels:
    """An image on the wire: raw buffer, EXR bytes in a buffer, or a server-readable path."""

    encoding: str  # wire.ENCODINGS
    buffer: int | None = None  # index of the buffer (1 = first frame after the header); raw and exr
    dtype: str | None = None  # raw only: "<f2" or "<f4"
    shape: list[int] | None = None  # raw only: [H, W] or [H, W, C]
    path: str | None = None  # path only

    def check(self, buffers: Sequence[Buffer]) -> None:
        if self.encoding not in wire.ENCODINGS:
            raise ProtocolError(wire.E_BAD_FRAME, f"encoding must be one of {wire.ENCODINGS}, got {self.encoding!r}")
        if self.encoding == wire.ENC_PATH:
            if not self.path:
                raise ProtocolError(wire.E_BAD_FRAME, "encoding 'path' needs a 'path'")
            if "\0" in self.path or not os.path.isabs(self.path):
                raise ProtocolError(wire.E_BAD_FRAME, f"path {self.path!r:.200} must be absolute and free of NUL "
                                                      "characters")
            return
        if self.buffer is None or not 1 <= self.buffer <= len(buffers):
            raise ProtocolError(wire.E_BAD_FRAME, f"buffer index {self.buffer} does not name one of the "
                                                  f"{len(buffers)} buffers (1-based)")
        if self.encoding == wire.ENC_RAW:
            if self.dtype not in wire.DTYPES:
                raise ProtocolError(wire.E_BAD_FRAME, f"dtype must be one of {wire.DTYPES}, got {self.dtype!r}")
            shape = self.shape or []
            if len(shape) not in (2, 3) or not all(0 < s <= wire.MAX_SIDE for s in shape[:2]) or \
                    (len(shape) == 3 and shape[2] not in (1, 3, 4)):
                raise ProtocolError(wire.E_BAD_FRAME, f"shape must be [H, W] or [H, W, 1|3|4] with sides "
                                                      f"<= {wire.MAX_SIDE}, got {self.shape!r}")
            expected = math.prod(shape) * wire.DTYPE_SIZES[self.dtype]
            got = memoryview(buffers[self.buffer - 1]).nbytes
            if got != expected:
                raise ProtocolError(wire.E_BAD_FRAME, f"buffer {self.buffer} holds {got} bytes, "
                                                      f"shape {shape} {self.dtype} needs {expected}")


@dataclass
class FramePixels(Pixels):
    frame: int = 0


@dataclass
class AlphaFrame(Pixels):
    frame: int = 0
    cached: bool = False  # served from the disk cache rather than computed now


# ---------------------------------------------------------------------------- requests
@dataclass
class Request:
    op: ClassVar[str]


@dataclass
class Hello(Request):
    op: ClassVar[str] = wire.OP_HELLO
    client: str = ""  # free text, e.g. "nuke 15.1 / mam2_client 1"


@dataclass
class Status(Request):
    op: ClassVar[str] = wire.OP_STATUS


@dataclass
class OpenShot(Request):
    op: ClassVar[str] = wire.OP_OPEN_SHOT
    shot: str
    first: int
    last: int
    width: int
    height: int
    colorspace: str | None = None  # the plates' OCIO colour space; None: the server's default (see io.colour)


@dataclass
class PutFrames(Request):
    op: ClassVar[str] = wire.OP_PUT_FRAMES
    shot: str
    frames: list[FramePixels]


@dataclass
class AddPrompt(Request):
    op: ClassVar[str] = wire.OP_ADD_PROMPT
    shot: str
    frame: int
    points: list[list[float]] = field(default_factory=list)  # [[x, y, label], ...]
    box: list[float] | None = None  # [x0, y0, x1, y1]
    mask: Pixels | None = None  # (H, W) object mask, > 0.5 is the object


@dataclass
class RemovePrompt(Request):
    op: ClassVar[str] = wire.OP_REMOVE_PROMPT
    shot: str
    frame: int


@dataclass
class Propagate(Request):
    op: ClassVar[str] = wire.OP_PROPAGATE
    shot: str
    first: int | None = None  # default: the shot's first frame
    last: int | None = None  # default: the shot's last frame
    direction: str = wire.DIR_BOTH
    from_frame: int | None = None  # default: the latest keyframe; only for forward/backward
    include_cached: bool = False  # also stream frames already valid in the cache
    alpha_encoding: str = wire.ENC_RAW  # raw or exr
    alpha_dtype: str = wire.DTYPE_FLOAT


@dataclass
class GetAlpha(Request):
    op: ClassVar[str] = wire.OP_GET_ALPHA
    shot: str
    frames: list[int]
    alpha_encoding: str = wire.ENC_RAW
    alpha_dtype: str = wire.DTYPE_FLOAT


@dataclass
class Cancel(Request):
    op: ClassVar[str] = wire.OP_CANCEL
    target: str | int | None = None  # the request id of a propagate; or
    shot: str | None = None  # every job of this shot


@dataclass
class CloseShot(Request):
    op: ClassVar[str] = wire.OP_CLOSE_SHOT
    shot: str
    purge: bool = False  # also delete the shot's frames and cached alphas from disk


@dataclass
class Shutdown(Request):
    op: ClassVar[str] = wire.OP_SHUTDOWN


REQUESTS: dict[str, type[Request]] = {cls.op: cls for cls in (
    Hello, Status, OpenShot, PutFrames, AddPrompt, RemovePrompt, Propagate, GetAlpha, Cancel, CloseShot,
    Shutdown)}


# ---------------------------------------------------------------------------- replies
@dataclass
class Reply:
    kind: ClassVar[str] = wire.KIND_REPLY


@dataclass
class HelloReply(Reply):
    server: str  # mam2 version
    protocol: int
    engine: str
    engines: list[str]
    device: str
    limits: dict[str, int]


@dataclass
class ShotInfo:
    shot: str
    first: int
    last: int
    width: int
    height: int
    received: int  # frames on the server
    keyframes: list[int]
    loaded: bool  # in memory (False: evicted, state on disk)
    busy: bool


@dataclass
class JobInfo:
    shot: str
    id: str | int  # the propagate's request id, as sent


@dataclass
class StatusReply(Reply):
    shots: list[ShotInfo]
    jobs: list[JobInfo]  # running and queued propagations
    rss_bytes: int
    cache_bytes: int  # decoded frames held in memory
    memory_budget: int
    device: str
    engine: str


@dataclass
class OpenShotReply(Reply):
    shot: str
    resumed: bool  # state found on disk (earlier session or eviction)
    received: list[int]
    keyframes: list[int]


@dataclass
class PutFramesReply(Reply):
    shot: str
    received: list[int]
    sanitised: list[int]  # frames whose NaN/inf pixels were replaced (NaN and +-inf -> 0)


@dataclass
class PromptReply(Reply):
    shot: str
    frame: int
    affected: list[int]  # frames whose alpha this edit invalidates (re-propagate these)
    keyframes: list[int]


@dataclass
class Progress(Reply):
    kind: ClassVar[str] = wire.KIND_PROGRESS
    done: int
    total: int
    frame: int


@dataclass
class AlphaMessage(Reply):
    kind: ClassVar[str] = wire.KIND_ALPHA
    alpha: AlphaFrame


@dataclass
class PropagateReply(Reply):
    shot: str
    computed: list[int]
    cached: list[int]  # valid in the cache already (streamed only with include_cached)
    cancelled: bool
    seconds: float


@dataclass
class GetAlphaReply(Reply):
    shot: str
    alphas: list[AlphaFrame]
    missing: list[int]  # no alpha for the current prompts yet


@dataclass
class CancelReply(Reply):
    cancelled: list[str | int]  # request ids (as sent) of the propagations told to stop


@dataclass
class CloseShotReply(Reply):
    shot: str


@dataclass
class ShutdownReply(Reply):
    pass


@dataclass
class ErrorReply(Reply):
    kind: ClassVar[str] = wire.KIND_ERROR
    code: str
    message: str


# ---------------------------------------------------------------------------- decoding
@dataclass
class Envelope:
    """A decoded request: header fields plus the typed body and the raw buffers."""

    request_id: str | int
    body: Request
    buffers: list[Buffer]


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ProtocolError as exc:
                errors.append(exc.message)
        raise ProtocolError(wire.E_BAD_MESSAGE, f"{where}: {'; '.join(errors)}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ProtocolError(wire.E_BAD_MESSAGE, f"{where}: expected a list, got {type(value).__name__}")
        if len(value) > wire.MAX_LIST_ITEMS:
            raise ProtocolError(wire.E_TOO_LARGE, f"{where}: {len(value)} items (max {wire.MAX_LIST_ITEMS})")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(wire.E_BAD_MESSAGE, f"{where}: expected a map")
        return value
    if dataclasses.is_dataclass(tp):
        return _from_map(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ProtocolError(wire.E_BAD_MESSAGE, f"{where}: expected a bool, got {type(value).__name__}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 1 << 53:
            raise ProtocolError(wire.E_BAD_MESSAGE, f"{where}: expected an integer, got {value!r:.40}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ProtocolError(wire.E_BAD_MESSAGE, f"{where}: expected a finite number, got {value!r:.40}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ProtocolError(wire.E_BAD_MESSAGE, f"{where}: expected a string, got {type(value).__name__}")
        if len(value) > wire.MAX_STRING_CHARS:
            raise ProtocolError(wire.E_TOO_LARGE, f"{where}: string of {len(value)} characters "
                                                  f"(max {wire.MAX_STRING_CHARS})")
        return value
    raise TypeError(f"protocol field type {tp!r} not supported")


def _from_map(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ProtocolError(wire.E_BAD_MESSAGE, f"{where}: expected a map, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], f"{where}.{f.name}" if where else f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ProtocolError(wire.E_BAD_MESSAGE, f"{where or cls.op}: missing field {f.name!r}")
    unknown = [k for k in data if k not in names and k not in _ENVELOPE]
    if unknown:
        raise ProtocolError(wire.E_BAD_MESSAGE, f"{where or getattr(cls, 'op', '')}: unknown field(s) "
                                                f"{[str(k)[:40] for k in unknown[:5]]}")
    return cls(**kwargs)


_ENVELOPE = (wire.KEY_VERSION, wire.KEY_ID, wire.KEY_OP, wire.KEY_TOKEN)


def peek_request(header: Buffer) -> tuple[str | int | None, str | None]:
    """(request id, op) of a header that may not decode fully, so that an error can still name them.

    Each is None unless valid: an id of the allowed types, an op the server knows.
    """
    if memoryview(header).nbytes > wire.MAX_HEADER_BYTES:
        return None, None
    try:
        data = msgpack.unpackb(bytes(header), raw=False, strict_map_key=True, ext_hook=_no_ext)
    except Exception:  # noqa: BLE001 - any garbage is possible here
        return None, None
    if not isinstance(data, dict):
        return None, None
    rid, op = data.get(wire.KEY_ID), data.get(wire.KEY_OP)
    return (rid if _valid_id(rid) else None), (op if isinstance(op, str) and op in REQUESTS else None)


def _valid_id(rid: Any) -> bool:
    return (isinstance(rid, str) and len(rid) <= wire.MAX_ID_CHARS) or \
        (isinstance(rid, int) and not isinstance(rid, bool) and abs(rid) <= 1 << 53)


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(wire.E_BAD_MESSAGE, "msgpack extension types are not accepted")


def decode_request(frames: Sequence[Buffer], *, max_header_bytes: int = wire.MAX_HEADER_BYTES,
                   max_message_bytes: int = wire.MAX_MESSAGE_BYTES, token: str | None = None) -> Envelope:
    """Decode ``[header, *buffers]`` into an Envelope; raise ProtocolError on anything malformed.

    Sizes are checked before anything is decoded. `token`: the secret every request must carry
    (None: none is needed, e.g. CURVE clients); it is checked before the rest of the header.
    """
    if not frames:
        raise ProtocolError(wire.E_BAD_MESSAGE, "empty message")
    if len(frames) - 1 > wire.MAX_BUFFERS:
        raise ProtocolError(wire.E_TOO_LARGE, f"{len(frames) - 1} buffers (max {wire.MAX_BUFFERS})")
    total = sum(memoryview(f).nbytes for f in frames)
    if total > max_message_bytes:
        raise ProtocolError(wire.E_TOO_LARGE, f"message of {total} bytes (max {max_message_bytes}); "
                                              "send fewer frames per put_frames")
    header = frames[0]
    if memoryview(header).nbytes > max_header_bytes:
        raise ProtocolError(wire.E_TOO_LARGE, f"header of {memoryview(header).nbytes} bytes "
                                              f"(max {max_header_bytes}); send pixels as buffers")
    try:
        data = msgpack.unpackb(bytes(header), raw=False, strict_map_key=True, ext_hook=_no_ext)
    except ProtocolError:
        raise
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types on garbage
        raise ProtocolError(wire.E_BAD_MESSAGE, f"header is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ProtocolError(wire.E_BAD_MESSAGE, f"header must be a msgpack map, got {type(data).__name__}")
    if token is not None:
        sent = data.get(wire.KEY_TOKEN)
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode("utf-8", "replace"), token.encode()):
            raise ProtocolError(wire.E_UNAUTHORIZED, "this server only serves the user who started it: send the "
                                                     "token from that user's token file ($MAM2_TOKEN_FILE, else "
                                                     "~/.cache/mam2/token) as 'token'")
    version = data.get(wire.KEY_VERSION)
    if type(version) is not int or version != wire.PROTOCOL_VERSION:
        raise ProtocolError(wire.E_BAD_VERSION, f"protocol version {version!r:.20} not supported; "
                                                f"this server speaks {wire.PROTOCOL_VERSION}")
    rid = data.get(wire.KEY_ID)
    if not _valid_id(rid):
        raise ProtocolError(wire.E_BAD_MESSAGE, f"request id must be a string of <= {wire.MAX_ID_CHARS} "
                                                "characters or an integer")
    op = data.get(wire.KEY_OP)
    cls = REQUESTS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ProtocolError(wire.E_UNKNOWN_OP, f"unknown op {op!r:.40}; known: {', '.join(wire.OPS)}")
    body = _from_map(cls, data, "")
    buffers = list(frames[1:])
    for ref in images(body):
        ref.check(buffers)
    used = {p.buffer for p in images(body) if p.encoding in (wire.ENC_RAW, wire.ENC_EXR)}
    unused = [i for i in range(1, len(frames)) if i not in used]
    if unused:
        raise ProtocolError(wire.E_BAD_MESSAGE, f"buffer(s) {unused[:10]} are not referenced by any field")
    return Envelope(rid, body, buffers)


def images(body: Request) -> list[Pixels]:
    """The image references of a request (their buffers must account for every buffer sent)."""
    found = []
    for f in dataclasses.fields(body):
        value = getattr(body, f.name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Pixels):
                found.append(item)
    return found


def encode_request(request_id: str | int, body: Request, buffers: Sequence[Buffer] = ()) -> list[Buffer]:
    header = {wire.KEY_VERSION: wire.PROTOCOL_VERSION, wire.KEY_ID: request_id, wire.KEY_OP: body.op}
    header.update(_to_map(body))
    return [msgpack.packb(header, use_bin_type=True), *buffers]


# ---------------------------------------------------------------------------- encoding
def _to_map(obj: Any) -> dict:
    """The fields of a dataclass as a map; fields that are None are left out (a reply never holds null)."""
    return {f.name: _plain(v) for f in dataclasses.fields(obj) if (v := getattr(obj, f.name)) is not None}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return _to_map(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def encode_reply(request_id: str | int | None, op: str | None, body: Reply,
                 buffers: Sequence[Buffer] = ()) -> list[Buffer]:
    """``[header, *buffers]`` for one reply (final or intermediate)."""
    header = {wire.KEY_VERSION: wire.PROTOCOL_VERSION, wire.KEY_ID: request_id, wire.KEY_OP: op,
              wire.KEY_KIND: body.kind}
    header.update(_to_map(body))
    return [msgpack.packb(header, use_bin_type=True), *buffers]


def error_reply(request_id: str | int | None, op: str | None, code: str, message: str) -> list[Buffer]:
    return encode_reply(request_id, op, ErrorReply(code=code, message=message))


REPLIES: dict[str, type[Reply]] = {
    wire.OP_HELLO: HelloReply, wire.OP_STATUS: StatusReply, wire.OP_OPEN_SHOT: OpenShotReply,
    wire.OP_PUT_FRAMES: PutFramesReply, wire.OP_ADD_PROMPT: PromptReply, wire.OP_REMOVE_PROMPT: PromptReply,
    wire.OP_PROPAGATE: PropagateReply, wire.OP_GET_ALPHA: GetAlphaReply, wire.OP_CANCEL: CancelReply,
    wire.OP_CLOSE_SHOT: CloseShotReply, wire.OP_SHUTDOWN: ShutdownReply,
}


def decode_reply(frames: Sequence[Buffer]) -> tuple[str | int | None, Reply, list[Buffer]]:
    """Decode a reply into (request id, typed reply, buffers). Used by tests and the benchmark."""
    data = msgpack.unpackb(bytes(frames[0]), raw=False, ext_hook=_no_ext)
    kind = data.get(wire.KEY_KIND)
    cls = {wire.KIND_ERROR: ErrorReply, wire.KIND_PROGRESS: Progress, wire.KIND_ALPHA: AlphaMessage}.get(kind) \
        or REPLIES[data[wire.KEY_OP]]
    fields = {k: v for k, v in data.items() if k not in (*_ENVELOPE, wire.KEY_KIND)}
    return data.get(wire.KEY_ID), _from_map(cls, fields, cls.__name__), list(frames[1:])
