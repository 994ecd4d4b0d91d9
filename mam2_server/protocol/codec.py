"""The MAM2 wire codec: the one place that turns ZeroMQ frames into typed messages and back.

A message is ``[header, *buffers]`` (ZeroMQ multipart; the ROUTER socket adds the
client identity in front). ``header`` is a msgpack map with ``v`` (protocol
version), ``id`` (request id), ``op`` and, in replies, ``kind``; the remaining keys
are the fields of the op's dataclass (`messages`). Pixels travel in ``buffers`` and are
referred to by index. Only msgpack is ever decoded: no pickle, no msgpack
extension types. Every limit is checked here, before anything is decoded that the
limit protects.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, Sequence, Union

import msgpack

from host_plugins.mam2_client import wire
from mam2_server.protocol.messages import (REPLIES, REQUESTS, AlphaMessage, ErrorReply, Pixels, ProtocolError,
                                           Progress, Reply, Request)

__all__ = ["Buffer", "Envelope", "check_pixels", "decode_reply", "decode_request", "encode_reply", "encode_request",
           "error_reply", "images", "peek_request"]

Buffer = Union[bytes, memoryview]


def check_pixels(ref: Pixels, buffers: Sequence[Buffer]) -> None:
    """Raise bad_frame unless `ref` is a well-formed reference whose buffer (if any) holds its pixels."""
    if ref.encoding not in wire.ENCODINGS:
        raise ProtocolError(wire.E_BAD_FRAME, f"encoding must be one of {wire.ENCODINGS}, got {ref.encoding!r}")
    if ref.encoding == wire.ENC_PATH:
        if not ref.path:
            raise ProtocolError(wire.E_BAD_FRAME, "encoding 'path' needs a 'path'")
        if "\0" in ref.path or not os.path.isabs(ref.path):
            raise ProtocolError(wire.E_BAD_FRAME, f"path {ref.path!r:.200} must be absolute and free of NUL "
                                                  "characters")
        return
    if ref.buffer is None or not 1 <= ref.buffer <= len(buffers):
        raise ProtocolError(wire.E_BAD_FRAME, f"buffer index {ref.buffer} does not name one of the "
                                              f"{len(buffers)} buffers (1-based)")
    if ref.encoding == wire.ENC_RAW:
        if ref.dtype not in wire.DTYPES:
            raise ProtocolError(wire.E_BAD_FRAME, f"dtype must be one of {wire.DTYPES}, got {ref.dtype!r}")
        shape = ref.shape or []
        if len(shape) not in (2, 3) or not all(0 < s <= wire.MAX_SIDE for s in shape[:2]) or \
                (len(shape) == 3 and shape[2] not in (1, 3, 4)):
            raise ProtocolError(wire.E_BAD_FRAME, f"shape must be [H, W] or [H, W, 1|3|4] with sides "
                                                  f"<= {wire.MAX_SIDE}, got {ref.shape!r}")
        expected = math.prod(shape) * wire.DTYPE_SIZES[ref.dtype]
        got = memoryview(buffers[ref.buffer - 1]).nbytes
        if got != expected:
            raise ProtocolError(wire.E_BAD_FRAME, f"buffer {ref.buffer} holds {got} bytes, "
                                                  f"shape {shape} {ref.dtype} needs {expected}")


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


_ENVELOPE = (wire.KEY_VERSION, wire.KEY_ID, wire.KEY_OP)


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
                   max_message_bytes: int = wire.MAX_MESSAGE_BYTES) -> Envelope:
    """Decode ``[header, *buffers]`` into an Envelope; raise ProtocolError on anything malformed.

    Sizes are checked before anything is decoded. Who sent it was settled before it arrived
    (the socket's PLAIN or CURVE handshake: `mam2_server.server.security`).
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
        check_pixels(ref, buffers)
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


def decode_reply(frames: Sequence[Buffer]) -> tuple[str | int | None, Reply, list[Buffer]]:
    """Decode a reply into (request id, typed reply, buffers), checking its fields as requests' are."""
    data = msgpack.unpackb(bytes(frames[0]), raw=False, ext_hook=_no_ext)
    kind = data.get(wire.KEY_KIND)
    cls = {wire.KIND_ERROR: ErrorReply, wire.KIND_PROGRESS: Progress, wire.KIND_ALPHA: AlphaMessage}.get(kind) \
        or REPLIES[data[wire.KEY_OP]]
    fields = {k: v for k, v in data.items() if k not in (*_ENVELOPE, wire.KEY_KIND)}
    return data.get(wire.KEY_ID), _from_map(cls, fields, cls.__name__), list(frames[1:])
