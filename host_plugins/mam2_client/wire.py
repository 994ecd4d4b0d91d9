"""Wire-format constants shared by the MAM2 server and its clients: the one source of truth.

Pure Python, no third-party imports, so that Nuke's and Blender's interpreters can
load it; `mam2_server.protocol` imports it from here. See docs/protocol.md.

A message is a ZeroMQ multipart message ``[header, *buffers]``: ``header`` is a
msgpack map, ``buffers`` are raw byte frames (pixels, EXR files) that header
fields refer to by index (1 = the first frame after the header).
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

PROTOCOL_VERSION = 1

# --- header keys -----------------------------------------------------------
KEY_VERSION = "v"  # int, PROTOCOL_VERSION, in every request and reply
KEY_ID = "id"  # request id: str (<= 64 chars) or int, chosen by the client, echoed in replies
KEY_OP = "op"  # request: the operation name; reply: the op it answers
KEY_KIND = "kind"  # replies only, one of KINDS

# --- operations --------------------------------------------------------------
OP_HELLO = "hello"
OP_STATUS = "status"
OP_OPEN_SHOT = "open_shot"
OP_PUT_FRAMES = "put_frames"
OP_ADD_PROMPT = "add_prompt"
OP_REMOVE_PROMPT = "remove_prompt"
OP_PROPAGATE = "propagate"
OP_GET_ALPHA = "get_alpha"
OP_CANCEL = "cancel"
OP_CLOSE_SHOT = "close_shot"
OP_SHUTDOWN = "shutdown"
OPS = (OP_HELLO, OP_STATUS, OP_OPEN_SHOT, OP_PUT_FRAMES, OP_ADD_PROMPT, OP_REMOVE_PROMPT,
       OP_PROPAGATE, OP_GET_ALPHA, OP_CANCEL, OP_CLOSE_SHOT, OP_SHUTDOWN)
# Ops that are safe to resend after a timeout (the lazy-pirate client retries only these).
IDEMPOTENT_OPS = (OP_HELLO, OP_STATUS, OP_OPEN_SHOT, OP_PUT_FRAMES, OP_ADD_PROMPT, OP_REMOVE_PROMPT,
                  OP_GET_ALPHA, OP_CANCEL, OP_CLOSE_SHOT)

# --- reply kinds ---------------------------------------------------------------
KIND_REPLY = "reply"  # final, success
KIND_ERROR = "error"  # final, failure: fields `code`, `message`
KIND_PROGRESS = "progress"  # intermediate (propagate): `done`, `total`, `frame`
KIND_ALPHA = "alpha"  # intermediate (propagate): one finished frame + 1 buffer
KINDS = (KIND_REPLY, KIND_ERROR, KIND_PROGRESS, KIND_ALPHA)
FINAL_KINDS = (KIND_REPLY, KIND_ERROR)

# --- error codes -----------------------------------------------------------------
E_BAD_MESSAGE = "bad_message"  # not msgpack / not a map / wrong field types / missing field
E_BAD_VERSION = "bad_version"  # KEY_VERSION missing or not PROTOCOL_VERSION
E_UNKNOWN_OP = "unknown_op"
E_TOO_LARGE = "too_large"  # over a size limit (header, buffers, frame size)
E_NO_SHOT = "no_shot"  # the shot id is not open (and not on disk)
E_BAD_SHOT = "bad_shot"  # bad shot id / parameters, or reopened with a different size
E_BAD_FRAME = "bad_frame"  # pixels wrong shape / dtype / outside the shot's range / undecodable
E_BAD_PROMPT = "bad_prompt"
E_MISSING_FRAMES = "missing_frames"  # propagate needs frames the server has not received
E_BUSY = "busy"  # e.g. close_shot while the shot is propagating, or too much of the client's work queued
E_ENGINE = "engine_error"  # the engine failed on a frame
E_SHUTTING_DOWN = "shutting_down"
E_INTERNAL = "internal"  # a server bug; the server stays up
ERROR_CODES = (E_BAD_MESSAGE, E_BAD_VERSION, E_UNKNOWN_OP, E_TOO_LARGE, E_NO_SHOT, E_BAD_SHOT,
               E_BAD_FRAME, E_BAD_PROMPT, E_MISSING_FRAMES, E_BUSY, E_ENGINE, E_SHUTTING_DOWN,
               E_INTERNAL)  # what the server sends
# The client's code for a server that refused its login in the ZeroMQ handshake (see auth.py):
# the server never answers such a peer, so this never travels on the wire.
E_UNAUTHORIZED = "unauthorized"

# --- pixels ----------------------------------------------------------------------
ENC_RAW = "raw"  # little-endian buffer, `dtype` + `shape` in the header, row-major (H, W[, C])
ENC_EXR = "exr"  # the bytes of an OpenEXR file
ENC_PATH = "path"  # a file path readable by the server (shared disk), no buffer
ENCODINGS = (ENC_RAW, ENC_EXR, ENC_PATH)
DTYPE_HALF = "<f2"
DTYPE_FLOAT = "<f4"
DTYPES = (DTYPE_HALF, DTYPE_FLOAT)
DTYPE_SIZES = {DTYPE_HALF: 2, DTYPE_FLOAT: 4}

# propagate directions, relative to `from_frame`
DIR_BOTH = "both"
DIR_FORWARD = "forward"
DIR_BACKWARD = "backward"
DIRECTIONS = (DIR_BOTH, DIR_FORWARD, DIR_BACKWARD)

# --- limits (the server may be configured lower, never higher) ---------------------
MAX_HEADER_BYTES = 1 << 20  # 1 MiB of msgpack per header
MAX_BUFFERS = 64  # buffers per message
MAX_MESSAGE_BYTES = 1 << 30  # 1 GiB per message, header and buffers together (also zmq.MAXMSGSIZE per frame)
MAX_SIDE = 16384  # pixels per image side
MAX_FRAMES_PER_SHOT = 100000
MAX_LIST_ITEMS = MAX_FRAMES_PER_SHOT  # items of any list field
MAX_STRING_CHARS = 4096  # characters of any string field
MAX_ID_CHARS = 64
MAX_ALPHAS_PER_REPLY = 64  # frames per get_alpha
SHOT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"  # and no ".." anywhere

DEFAULT_ADDRESS = "tcp://127.0.0.1:5557"


def is_ipv6(address: str) -> bool:
    """True for tcp://[v6-address]:port (ZeroMQ sockets then need the IPV6 option)."""
    return address.startswith("tcp://[")


def is_loopback(address: str) -> bool:
    """True for addresses only this machine can reach: ipc://, inproc://, tcp:// on 127.0.0.0/8, ::1, localhost."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    if not address.startswith("tcp://"):
        return False
    host = urlsplit(address).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: treat as public
