"""MAM2 for Blender: mattes from box, point and Mask prompts with a MAM2 server (Compositor and Image Editor
sidebars, tab "MAM2").

An extension (Blender 4.2-5.0): `mam2 package blender DIR` builds the zips, with the MAM2
client vendored as `./mam2_client` and the pyzmq + msgpack wheels. The bpy modules are
imported in `register`, so the bpy-free ones (jobspec) load in any Python.
"""

_MODULES = ("props", "background", "ops", "server", "plate", "keys", "viewport", "ui")


def _modules():
    import importlib
    return [importlib.import_module(f".{name}", __package__) for name in _MODULES]


def register():
    for module in _modules():
        module.register()


def unregister():
    for module in reversed(_modules()):
        module.unregister()
