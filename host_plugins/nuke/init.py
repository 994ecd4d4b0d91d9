# MAM2 for Nuke: add this folder to NUKE_PATH, or nuke.pluginAddPath("<mam2>/host_plugins/nuke") in ~/.nuke/init.py.
# Runs in GUI and headless (`nuke -t`) sessions: makes mam2_client, mam2_nuke and the MAM2 gizmo findable.
import os
import sys

import nuke

_here = os.path.dirname(os.path.abspath(__file__))
_host_plugins = os.path.dirname(_here)
if _host_plugins not in sys.path:
    sys.path.append(_host_plugins)  # mam2_client (needs pyzmq + msgpack in Nuke's Python)
nuke.pluginAddPath(os.path.join(os.path.dirname(_host_plugins), "gizmos"))
