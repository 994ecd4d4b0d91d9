"""The MAM2 wire protocol: typed messages (`messages`) and the one codec that (de)serialises them (`codec`).

``from mam2_server import protocol as P`` gives everything: the wire constants
(`host_plugins.mam2_client.wire`, shared with the client without importing the
server), the message dataclasses and the codec. Reference: docs/protocol.md.
"""
from host_plugins.mam2_client.wire import *  # noqa: F401,F403  (re-exported constants)
from mam2_server.protocol.codec import *  # noqa: F401,F403
from mam2_server.protocol.messages import *  # noqa: F401,F403
