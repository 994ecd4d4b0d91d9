"""Run by tests/test_blender_adapter.py with .venv-bpy's Python (bpy cannot load in the main venv).

    .venv-bpy/bin/python tests/blender_check.py CONFIG.json REPORT.json

Registers the add-on from host_plugins/blender, drives its operators against the server
named in CONFIG and writes what it saw to REPORT (the test asserts on that).
"""
import importlib.util
import json
import os
import sys
import time

import bpy

ADDON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "host_plugins", "blender")
with open(sys.argv[1]) as fh:
    cfg = json.load(fh)
report = {"version": list(bpy.app.version)}

spec = importlib.util.spec_from_file_location("mam2_matte", os.path.join(ADDON, "__init__.py"),
                                              submodule_search_locations=[ADDON])
addon = importlib.util.module_from_spec(spec)
sys.modules["mam2_matte"] = addon
spec.loader.exec_module(addon)
addon.register()
ops, nodes = addon.ops, addon.nodes
report["operators"] = [hasattr(bpy.ops.mam2, n) for n in ("track", "retrack", "cancel")]

scene = bpy.context.scene
tree = nodes.compositor_tree(scene)
report["new_api"] = nodes.NEW_API
s = scene.mam2
s.address, s.start_server, s.output_dir = cfg["address"], False, cfg["output_dir"]
s.box_min, s.box_max = (4, 28), (30, 46)  # bottom-left origin: the top rows of the 64x48 plate
s.prompt_frame = 1


def run(op, **kw):
    """Call an operator; ERROR reports raise RuntimeError in background Blender."""
    try:
        return [sorted(op(**kw)), ""]
    except RuntimeError as exc:
        return [["RAISED"], str(exc)]


# no image -> clear error, before any network I/O
report["no_image"] = run(bpy.ops.mam2.track) + [s.status]

plate = bpy.data.images.load(os.path.join(cfg["plates"], "plate.0001.exr"))
plate.source = "SEQUENCE"
s.image = plate

# Track, inline (background Blender has no event loop for timers)
t0 = time.monotonic()
report["track"] = run(bpy.ops.mam2.track) + [s.status, s.shot, round(time.monotonic() - t0, 2)]
alpha = tree.nodes.get(nodes.ALPHA_NODE)
set_alpha = tree.nodes.get(nodes.SET_ALPHA_NODE)
report["alpha_node"] = alpha and {
    "filepath": bpy.path.abspath(alpha.image.filepath), "source": alpha.image.source,
    "colorspace": alpha.image.colorspace_settings.name,
    "frames": [alpha.frame_start, alpha.frame_offset, alpha.frame_duration],
    "set_alpha_inputs": {i.name: [l.from_node.name for l in i.links] for i in set_alpha.inputs if i.is_linked},
    "output_linked": any(l.from_node == set_alpha for l in tree.links),
    "plate_frames": [n.frame_duration for n in tree.nodes if n.bl_idname == "CompositorNodeImage" and n.image == plate],
}
report["files"] = sorted(os.listdir(cfg["output_dir"]))

# Re-track from frame 4 on the worker thread, pumping the timer callback by hand
ops.INLINE_IN_BACKGROUND = False
scene.frame_set(4)
s.box_min, s.box_max = (10, 10), (40, 30)
res = run(bpy.ops.mam2.retrack)
run_obj = ops._runs.get(scene.name)
report["retrack_async"] = {"ret": res,
                           "timer_registered": bool(run_obj and bpy.app.timers.is_registered(run_obj.timer)),
                           "thread_alive": bool(run_obj and run_obj.thread.is_alive())}
report["second_start"] = run(bpy.ops.mam2.track)
statuses = set()
deadline = time.monotonic() + 30
while ops._runs and time.monotonic() < deadline:
    ops.pump()
    statuses.add(s.status.split(" (")[0])
    time.sleep(0.02)
report["retrack_async"].update(status=s.status, seen=sorted(statuses), running=s.running,
                               timer_left=bool(run_obj and bpy.app.timers.is_registered(run_obj.timer)))

# Cancel right after starting
res = run(bpy.ops.mam2.track)
report["cancel"] = [res, run(bpy.ops.mam2.cancel)[0]]
while ops._runs and time.monotonic() < deadline + 30:
    ops.pump()
    time.sleep(0.02)
report["cancel"].append(s.status)
report["cancel_nothing"] = run(bpy.ops.mam2.cancel)[0]

# Errors
s.box_min, s.box_max = (10, 10), (10, 30)
report["empty_box"] = run(bpy.ops.mam2.track)
s.box_min, s.box_max = (4, 28), (30, 46)
s.prompt_frame = 9
report["prompt_outside"] = run(bpy.ops.mam2.track)
s.prompt_frame = 1
s.address = cfg["dead_address"]
report["dead_async"] = [run(bpy.ops.mam2.track)]
while ops._runs and time.monotonic() < deadline + 60:
    ops.pump()
    time.sleep(0.02)
report["dead_async"].append(s.status)
ops.INLINE_IN_BACKGROUND = True
report["dead_inline"] = run(bpy.ops.mam2.track) + [s.status]
addon.unregister()
report["unregistered"] = not hasattr(bpy.types.Scene, "mam2")
with open(sys.argv[2], "w") as fh:
    json.dump(report, fh, indent=1)
