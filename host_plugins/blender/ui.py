"""The MAM2 sidebar (N panel, tab "MAM2") in the Compositor and the Image Editor: server, plate, keys, Track."""
from __future__ import annotations

import bpy

from . import nodes, server
from .background import tasks
from .keys import active_key


class MAM2_UL_keys(bpy.types.UIList):
    """One row per key: its scene frame (what the timeline shows), its file frame and what it holds."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        timing = nodes.scene_timing(context.scene)
        scene_frame = timing.scene_frame(item.frame) if timing is not None else "?"
        row = layout.row(align=True)
        row.label(text=f"{scene_frame}", icon="KEYFRAME_HLT" if item.frame == _shown(context) else "KEYFRAME")
        row.label(text=f"file {item.frame}")
        row.label(text=item.summary())


class MAM2_UL_points(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.prop(item, "label", text="")
        row.prop(item, "co", text="")


def _shown(context) -> int | None:
    timing = nodes.scene_timing(context.scene)
    return timing.file_frame(context.scene.frame_current) if timing is not None else None


class _Sidebar:
    bl_region_type = "UI"
    bl_category = "MAM2"


class _Main(_Sidebar):
    bl_label = "MAM2 Matte"

    def draw(self, context):
        s, layout = context.scene.mam2, self.layout
        layout.template_ID(s, "image", open="mam2.open_plate")
        timing = nodes.scene_timing(context.scene)
        if timing is not None:
            node = nodes.plate_node(nodes.compositor_tree(context.scene, create=False), s.image, s.plate_node)
            layout.label(text=f"{node.name if node else 'Image > Open'}: scene {timing.start}-"
                              f"{timing.start + timing.duration - 1} = files {timing.first}-{timing.last}",
                         icon="SEQUENCE")
        col = layout.column(align=True)
        col.prop(s, "use_image_range")
        row = col.row(align=True)
        row.enabled = not s.use_image_range
        row.prop(s, "frame_first")
        row.prop(s, "frame_last")

        layout.label(text="Keys")
        row = layout.row()
        row.template_list("MAM2_UL_keys", "", s, "keys", s, "active_key", rows=3)
        col = row.column(align=True)
        col.operator("mam2.key_add", text="", icon="ADD")
        col.operator("mam2.key_remove", text="", icon="REMOVE")
        col.operator("mam2.key_jump", text="", icon="TIME")
        key = active_key(s)
        if key is not None:
            box = layout.box()
            box.prop(key, "use_box")
            sub = box.column(align=True)
            sub.enabled = key.use_box
            sub.prop(key, "box_min")
            sub.prop(key, "box_max")
            row = box.row()
            row.template_list("MAM2_UL_points", "", key, "points", key, "active_point", rows=2)
            col = row.column(align=True)
            col.operator("mam2.point_add", text="", icon="ADD").label = "FG"
            col.operator("mam2.point_add", text="", icon="PANEL_CLOSE").label = "BG"
            col.operator("mam2.point_remove", text="", icon="REMOVE")
            box.template_ID(key, "mask", new="mask.new")
        if context.space_data.type == "IMAGE_EDITOR":
            layout.operator("mam2.draw_prompt", icon="GREASEPENCIL")
        else:
            layout.label(text="Draw prompts over the plate in the Image Editor's MAM2 tab", icon="INFO")

        layout.prop(s, "output_dir")
        row = layout.row(align=True)
        row.operator("mam2.track", icon="PLAY")
        row.operator("mam2.cancel", icon="CANCEL")
        if s.running and s.shot_uuid in tasks and hasattr(layout, "progress"):
            layout.progress(factor=s.progress, text=s.status)
        else:
            layout.label(text=s.status)


class _Server(_Sidebar):
    bl_label = "Server"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        s, layout = context.scene.mam2, self.layout
        layout.prop(s, "address")
        row = layout.row(align=True)
        row.prop(s, "start_server")
        row.prop(s, "engine", text="")
        layout.label(text=server.state(s.address))
        row = layout.row(align=True)
        for action, icon in (("CHECK", "FILE_REFRESH"), ("STOP", "X"), ("RESTART", "RECOVER_LAST")):
            row.operator("mam2.server", text=action.title(), icon=icon).action = action


class MAM2_PT_compositor(_Main, bpy.types.Panel):
    bl_idname = "MAM2_PT_compositor"
    bl_space_type = "NODE_EDITOR"

    @classmethod
    def poll(cls, context):
        return getattr(context.space_data, "tree_type", "") == "CompositorNodeTree"


class MAM2_PT_compositor_server(_Server, bpy.types.Panel):
    bl_idname = "MAM2_PT_compositor_server"
    bl_space_type = "NODE_EDITOR"
    bl_parent_id = "MAM2_PT_compositor"


class MAM2_PT_image(_Main, bpy.types.Panel):
    bl_idname = "MAM2_PT_image"
    bl_space_type = "IMAGE_EDITOR"


class MAM2_PT_image_server(_Server, bpy.types.Panel):
    bl_idname = "MAM2_PT_image_server"
    bl_space_type = "IMAGE_EDITOR"
    bl_parent_id = "MAM2_PT_image"


CLASSES = (MAM2_UL_keys, MAM2_UL_points, MAM2_PT_compositor, MAM2_PT_compositor_server, MAM2_PT_image,
           MAM2_PT_image_server)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
