"""MAM2 client for host plugins (Nuke, Blender): pyzmq + msgpack only, numpy optional.

Never imports mam2_server, nuke or bpy. Protocol: docs/protocol.md.
"""
from . import track, wire
from .client import (
    Alpha,
    Client,
    MAM2Error,
    PropagateResult,
    RawImage,
    ServerError,
    ServerUnavailable,
)
from .launcher import ensure_server

__all__ = ["Alpha", "Client", "MAM2Error", "PropagateResult", "RawImage", "ServerError", "ServerUnavailable",
           "ensure_server", "track", "wire"]
