"""Keyframe editing: add a key on the current frame, delete, jump to it; add and remove points.

Keys live in the .blend (`scene.mam2.keys`), on plate file frames, sorted. Track sends them
all and removes the server's other keyframes (`remove_prompt`), so a key Track did not
change keeps its cached frames, and a deleted key is gone from the server at the next Track.
"""
from __future__ import annotations

import bpy

from . import nodes
from .jobspec import Refused, exr_size, sequence_pattern
from .mam2_client.track import frame_path


def key_at(s, frame: int):
    """(index, key) of the key on file frame `frame`, or (-1, None)."""
    for i, key in enumerate(s.keys):
        if key.frame == frame:
            return i, key
    return -1, None


def plate_size(image) -> tuple[int, int]:
    frames = nodes.plate_frames(image)
    if frames:
        path = frame_path(sequence_pattern(bpy.path.abspath(image.filepath, library=image.library)), frames[0])
        try:
            return exr_size(path)
        except (Refused, OSError, ValueError):  # not an EXR: Track says why; the key still gets a box
            pass
    return tuple(image.size) if image is not None and image.size[0] else (100, 100)


def add_key(scene, frame: int):
    """The key on file frame `frame`, made if needed: a copy of the nearest key's prompt, or a box over
    the middle of the plate for the first one. Keeps the keys sorted; makes it the active key."""
    s = scene.mam2
    s.ensure_uuid(scene)
    index, key = key_at(s, frame)
    if key is None:
        nearest = min(s.keys, key=lambda k: abs(k.frame - frame), default=None)
        # copied into plain values first: add() may reallocate the collection, and a reference to one of
        # its items (nearest) then points at freed memory (Blender's "Troubleshooting Errors & Crashes")
        prompt = None if nearest is None else (
            nearest.use_box, tuple(nearest.box_min), tuple(nearest.box_max), nearest.mask,
            [(tuple(p.co), p.label) for p in nearest.points])
        nearest = None
        key = s.keys.add()
        key.frame = frame
        if prompt is not None:
            key.use_box, key.box_min, key.box_max, key.mask, points = prompt
            for co, label in points:
                q = key.points.add()
                q.co, q.label = co, label
        else:
            width, height = plate_size(s.image)
            key.box_min, key.box_max = (width / 4, height / 4), (3 * width / 4, 3 * height / 4)
        index = len(s.keys) - 1
        target = sum(1 for k in s.keys if k.frame < frame)
        s.keys.move(index, target)
        index = target
    s.active_key = index
    return s.keys[index]


def active_key(s):
    return s.keys[s.active_key] if 0 <= s.active_key < len(s.keys) else None


class _OnActiveKey:
    @classmethod
    def poll(cls, context):
        return active_key(context.scene.mam2) is not None


class MAM2_OT_key_add(bpy.types.Operator):
    """Add a key on the current frame (a copy of the nearest key's box, points and Mask)"""
    bl_idname = "mam2.key_add"
    bl_label = "Add Key"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        scene = context.scene
        timing = nodes.scene_timing(scene)
        if timing is None:
            self.report({"ERROR"}, "MAM2: choose the plate (an EXR image sequence) first")
            return {"CANCELLED"}
        frame = timing.file_frame(scene.frame_current)
        if frame is None:
            self.report({"ERROR"}, f"MAM2: scene frame {scene.frame_current} shows no plate frame (the plate plays "
                                   f"scene frames {timing.start}-{timing.start + timing.duration - 1})")
            return {"CANCELLED"}
        add_key(scene, frame)
        return {"FINISHED"}


class MAM2_OT_key_remove(_OnActiveKey, bpy.types.Operator):
    """Delete the selected key (Track then removes it on the server and recomputes its frames)"""
    bl_idname = "mam2.key_remove"
    bl_label = "Delete Key"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        s = context.scene.mam2
        s.keys.remove(s.active_key)
        s.active_key = min(s.active_key, len(s.keys) - 1)
        return {"FINISHED"}


class MAM2_OT_key_jump(_OnActiveKey, bpy.types.Operator):
    """Go to the selected key's frame"""
    bl_idname = "mam2.key_jump"
    bl_label = "Go to Key"

    def execute(self, context):
        scene = context.scene
        timing = nodes.scene_timing(scene)
        if timing is None:
            return {"CANCELLED"}
        scene.frame_set(timing.scene_frame(active_key(scene.mam2).frame))
        return {"FINISHED"}


class MAM2_OT_point_add(_OnActiveKey, bpy.types.Operator):
    """Add a point to the selected key (at the middle of its box; move it or draw it in the Image Editor)"""
    bl_idname = "mam2.point_add"
    bl_label = "Add Point"
    bl_options = {"REGISTER", "UNDO"}

    label: bpy.props.EnumProperty(items=[("FG", "Foreground", ""), ("BG", "Background", "")])

    def execute(self, context):
        key = active_key(context.scene.mam2)
        point = key.points.add()
        point.label = self.label
        point.co = ((key.box_min[0] + key.box_max[0]) / 2, (key.box_min[1] + key.box_max[1]) / 2)
        key.active_point = len(key.points) - 1
        return {"FINISHED"}


class MAM2_OT_point_remove(bpy.types.Operator):
    """Remove the selected point of the selected key"""
    bl_idname = "mam2.point_remove"
    bl_label = "Remove Point"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        key = active_key(context.scene.mam2)
        return key is not None and 0 <= key.active_point < len(key.points)

    def execute(self, context):
        key = active_key(context.scene.mam2)
        key.points.remove(key.active_point)
        key.active_point = min(key.active_point, len(key.points) - 1)
        return {"FINISHED"}


CLASSES = (MAM2_OT_key_add, MAM2_OT_key_remove, MAM2_OT_key_jump, MAM2_OT_point_add, MAM2_OT_point_remove)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
