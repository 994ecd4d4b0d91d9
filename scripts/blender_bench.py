"""Blender add-on figures for docs/benchmarks.md: extension install time and Mask rasterisation cost.

    .venv/bin/mam2 package blender /tmp/mam2-dist --platform linux-x64
    .venv-bpy/bin/python scripts/blender_bench.py /tmp/mam2-dist/mam2_matte-0.1.0-linux_x64.zip

Runs in a bpy venv; installs into a temporary Blender user folder, never the real one.
"""
import os
import shutil
import sys
import tempfile
import time

user = tempfile.mkdtemp(prefix="mam2-blender-user-")
os.environ["BLENDER_USER_RESOURCES"] = user  # before bpy starts

import bpy  # noqa: E402

t0 = time.perf_counter()
bpy.ops.extensions.package_install_files(filepath=sys.argv[1], repo="user_default", enable_on_install=True)
print(f"bpy {bpy.app.version_string}: install + enable the extension: {time.perf_counter() - t0:.2f} s")
masks = sys.modules["bl_ext.user_default.mam2_matte.masks"]

mask = bpy.data.masks.new("Roto")
spline = mask.layers.new(name="Layer").splines.new()
spline.points.add(3)
for point, co in zip(spline.points, ((0.2, 0.3), (0.7, 0.3), (0.7, 0.7), (0.2, 0.7))):
    point.co, point.handle_type = co, "VECTOR"
spline.use_cyclic = True
scene = bpy.context.scene
for width, height, keys in ((1920, 1080, 1), (1920, 1080, 4), (3840, 2160, 1)):
    t0 = time.perf_counter()
    masks.rasterise(scene, [(mask, frame) for frame in range(1, keys + 1)], width, height)
    seconds = time.perf_counter() - t0
    print(f"bpy {bpy.app.version_string}: rasterise {keys} Mask key(s) at {width}x{height}: {seconds:.2f} s "
          f"({seconds / keys:.2f} s per key)")
shutil.rmtree(user, ignore_errors=True)
