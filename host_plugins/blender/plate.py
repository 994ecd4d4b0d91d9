"""Open Plate: an EXR sequence as an Image Sequence, shown by a compositor Image node, and the
scene's render size made the plate's (the compositor renders at the scene's size: a 1920x1080
default would put a smaller plate's matte in the middle of an empty frame).

Blender's own Image > Open turns files numbered 1001-1010 into UDIM tiles unless "UDIM Tiles"
is unchecked; this opens any frame of the plate as the whole sequence on disk, with the frame
mapping Image > Open gives a sequence (its first file on scene frame 1).
"""
from __future__ import annotations

import os
import struct

import bpy

from . import nodes
from .jobspec import Refused, exr_size, sequence_frames, sequence_pattern
from .mam2_client.track import frame_path


class MAM2_OT_open_plate(bpy.types.Operator):
    """Open the plate: any frame of a scene-linear EXR sequence"""
    bl_idname = "mam2.open_plate"
    bl_label = "Open Plate"
    bl_options = {"REGISTER", "UNDO"}

    filepath: bpy.props.StringProperty(subtype="FILE_PATH")
    filter_glob: bpy.props.StringProperty(default="*.exr", options={"HIDDEN"})

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        path = bpy.path.abspath(self.filepath)
        frames = sequence_frames(sequence_pattern(path))
        if not frames:
            self.report({"ERROR"}, f"MAM2: no EXR sequence at {path} (the frame number is the last digits of "
                                   "the file name, e.g. plate.1001.exr)")
            return {"CANCELLED"}
        first = frame_path(sequence_pattern(path), frames[0])
        image = next((i for i in bpy.data.images if i.source == "SEQUENCE" and i.filepath
                      and os.path.normpath(bpy.path.abspath(i.filepath)) == os.path.normpath(first)), None)
        if image is None:
            image = bpy.data.images.load(first, check_existing=False)
            image.source = "SEQUENCE"
        scene = context.scene
        scene.mam2.image = image
        node = nodes.ensure_plate_node(scene, image, frames[0], frames[-1] - frames[0] + 1)
        scene.mam2.plate_node = node.name
        try:
            width, height = exr_size(first)
        except (Refused, OSError, ValueError, struct.error):
            return {"FINISHED"}  # Track says what is wrong with the file
        render = scene.render
        if (render.resolution_x, render.resolution_y) != (width, height):
            was = f"{render.resolution_x}x{render.resolution_y}"
            render.resolution_x, render.resolution_y = width, height
            scale = render.resolution_percentage
            at = f"; renders at {scale} % of it" if scale != 100 else ""
            self.report({"INFO"}, f"MAM2: the render size is now the plate's {width}x{height} (was {was}){at}")
        return {"FINISHED"}


def register() -> None:
    bpy.utils.register_class(MAM2_OT_open_plate)


def unregister() -> None:
    bpy.utils.unregister_class(MAM2_OT_open_plate)
