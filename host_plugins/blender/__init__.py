"""MAM2 for Blender: track a matte with a MAM2 server from the Compositor's sidebar (tab "MAM2").

Install as an extension (blender_manifest.toml, Blender 4.2+) or as a legacy add-on folder;
needs `mam2_client` (beside this folder in the repo, in ./vendor when packaged) and pyzmq + msgpack.
"""
import os
import sys

bl_info = {  # legacy add-on installs (Blender < 4.2, or a plain folder in scripts/addons)
    "name": "MAM2 Matte",
    "author": "MAM2",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "Compositor > Sidebar > MAM2",
    "description": "Video matting with a MAM2 server: box/point prompts in, an alpha sequence back",
    "category": "Compositing",
}

_here = os.path.dirname(os.path.abspath(__file__))
for _path in (os.path.join(_here, "vendor"), os.path.dirname(_here)):  # packaged / repo checkout
    if os.path.isdir(os.path.join(_path, "mam2_client")) and _path not in sys.path:
        sys.path.append(_path)

from . import ops, ui


def register():
    ui.register()
    ops.register()


def unregister():
    ops.unregister()
    ui.unregister()
