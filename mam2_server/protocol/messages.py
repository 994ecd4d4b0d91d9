"""The MAM2 wire protocol's messages: one dataclass per request, reply and image reference.

A request's fields are the keys of its msgpack header next to ``v``, ``id`` and ``op``;
a reply's sit next to ``v``, ``id``, ``op`` and ``kind``. `codec` turns headers into
these types and back, checking every field; nothing here touches bytes.
Reference: docs/protocol.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from host_plugins.mam2_client import wire

__all__ = ["ProtocolError", "Pixels", "FramePixels", "AlphaFrame", "Request", "Hello", "Status", "OpenShot",
           "PutFrames", "AddPrompt", "RemovePrompt", "Propagate", "GetAlpha", "Cancel", "CloseShot", "Shutdown",
           "Reply", "HelloReply", "ShotInfo", "JobInfo", "StatusReply", "OpenShotReply", "PutFramesReply",
           "PromptReply", "Progress", "AlphaMessage", "PropagateReply", "GetAlphaReply", "CancelReply",
           "CloseShotReply", "ShutdownReply", "ErrorReply", "REQUESTS", "REPLIES"]


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


@dataclass
class FramePixels(Pixels):
    frame: int = field(kw_only=True)  # required (keyword-only: Pixels' fields have defaults)


@dataclass
class AlphaFrame(Pixels):
    frame: int = field(kw_only=True)
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



REPLIES: dict[str, type[Reply]] = {
    wire.OP_HELLO: HelloReply, wire.OP_STATUS: StatusReply, wire.OP_OPEN_SHOT: OpenShotReply,
    wire.OP_PUT_FRAMES: PutFramesReply, wire.OP_ADD_PROMPT: PromptReply, wire.OP_REMOVE_PROMPT: PromptReply,
    wire.OP_PROPAGATE: PropagateReply, wire.OP_GET_ALPHA: GetAlphaReply, wire.OP_CANCEL: CancelReply,
    wire.OP_CLOSE_SHOT: CloseShotReply, wire.OP_SHUTDOWN: ShutdownReply,
}
