"""The MAM2 properties (`scene.mam2`) and the Compositor sidebar panel (N panel, tab "MAM2")."""
from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    FloatVectorProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)
from mam2_client import track as core
from mam2_client import wire

ENGINES = (core.ENGINE_DEFAULT, "classic", "hybrid", "mam2")
FG_POINTS = ("fg1", "fg2", "fg3")
BG_POINTS = ("bg1", "bg2")


def _point(label: str):
    return FloatVectorProperty(name=label, size=2, subtype="XYZ", description="pixels, origin bottom-left")


class MAM2Settings(bpy.types.PropertyGroup):
    address: StringProperty(name="Server", default=wire.DEFAULT_ADDRESS,
                            description="ZeroMQ address of the MAM2 server")
    start_server: BoolProperty(name="Start server", default=True,
                               description="start `mam2 serve` locally when nothing answers (local address only)")
    engine: EnumProperty(name="Engine", items=[(e, e, "") for e in ENGINES],
                         description="engine for a server started from here; a running server keeps its own")
    image: PointerProperty(name="Plate", type=bpy.types.Image,
                           description="the plate: a scene-linear EXR image sequence on disk")
    use_image_range: BoolProperty(name="Whole sequence", default=True,
                                  description="track every frame of the plate sequence found on disk")
    frame_first: IntProperty(name="First", default=1)
    frame_last: IntProperty(name="Last", default=100)
    prompt_frame: IntProperty(name="Prompt frame", default=1, description="the frame the box and points are on")
    use_box: BoolProperty(name="Box", default=True)
    box_min: FloatVectorProperty(name="Box min", size=2, subtype="XYZ", description="pixels, origin bottom-left")
    box_max: FloatVectorProperty(name="Box max", size=2, subtype="XYZ", default=(100.0, 100.0),
                                 description="pixels, origin bottom-left")
    fg1: _point("FG 1")
    fg2: _point("FG 2")
    fg3: _point("FG 3")
    bg1: _point("BG 1")
    bg2: _point("BG 2")
    fg1_on: BoolProperty(name="")
    fg2_on: BoolProperty(name="")
    fg3_on: BoolProperty(name="")
    bg1_on: BoolProperty(name="")
    bg2_on: BoolProperty(name="")
    output_dir: StringProperty(name="Output", subtype="DIR_PATH",
                               description="folder for the alpha EXRs (empty: a temporary folder)")
    shot: StringProperty(name="Shot", description="the server's shot id of the last run")
    status: StringProperty(name="Status", default="Idle")
    progress: FloatProperty(name="Progress", min=0.0, max=1.0)
    running: BoolProperty(name="Running")


class MAM2_PT_panel(bpy.types.Panel):
    bl_label = "MAM2 Matte"
    bl_idname = "MAM2_PT_panel"
    bl_space_type = "NODE_EDITOR"
    bl_region_type = "UI"
    bl_category = "MAM2"

    @classmethod
    def poll(cls, context):
        return getattr(context.space_data, "tree_type", "") == "CompositorNodeTree"

    def draw(self, context):
        s, layout = context.scene.mam2, self.layout
        col = layout.column(align=True)
        col.prop(s, "address")
        row = col.row(align=True)
        row.prop(s, "start_server")
        row.prop(s, "engine", text="")
        layout.template_ID(s, "image", open="image.open")
        col = layout.column(align=True)
        col.prop(s, "use_image_range")
        row = col.row(align=True)
        row.enabled = not s.use_image_range
        row.prop(s, "frame_first")
        row.prop(s, "frame_last")
        row = layout.row(align=True)
        row.prop(s, "prompt_frame")
        row.operator("mam2.set_prompt_frame", text="", icon="TIME")
        col = layout.column(align=True)
        col.prop(s, "use_box")
        sub = col.column(align=True)
        sub.enabled = s.use_box
        sub.prop(s, "box_min")
        sub.prop(s, "box_max")
        for name in FG_POINTS + BG_POINTS:
            row = layout.row(align=True)
            row.prop(s, f"{name}_on")
            sub = row.row(align=True)
            sub.enabled = getattr(s, f"{name}_on")
            sub.prop(s, name)
        layout.prop(s, "output_dir")
        col = layout.column(align=True)
        col.operator("mam2.track", icon="PLAY")
        col.operator("mam2.retrack", icon="FRAME_NEXT")
        col.operator("mam2.cancel", icon="CANCEL")
        if s.running and hasattr(layout, "progress"):
            layout.progress(factor=s.progress, text=s.status)
        else:
            layout.label(text=s.status)


CLASSES = (MAM2Settings, MAM2_PT_panel)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.mam2 = PointerProperty(type=MAM2Settings)


def unregister() -> None:
    del bpy.types.Scene.mam2
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
