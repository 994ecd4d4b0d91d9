"""The Image Editor side: the key on the shown frame drawn over the plate, and drawing prompts with the mouse.

`MAM2_OT_draw_prompt` (Image Editor, plate shown): drag a box, click a foreground point,
Ctrl+click a background point, Enter/Esc/right-click to finish. It edits the key on the
plate frame the editor shows (made if there is none). Coordinates: the Image Editor's view
space spans the image 0..1 on both axes; prompts are plate pixels, origin bottom-left.
"""
from __future__ import annotations

import bpy

from .keys import add_key, key_at

FG_COLOUR, BG_COLOUR, BOX_COLOUR = (0.2, 1.0, 0.3, 1.0), (1.0, 0.25, 0.2, 1.0), (1.0, 0.8, 0.1, 1.0)
CLICK_PX = 4  # a press and release closer than this (region pixels) is a click, not a box
_handle = None


def view_to_pixel(u: float, v: float, width: int, height: int) -> tuple[float, float]:
    """Image Editor view coordinates (0..1 over the image) -> plate pixels, clamped to the frame."""
    return min(max(u * width, 0.0), float(width)), min(max(v * height, 0.0), float(height))


def set_box(key, a: tuple[float, float], b: tuple[float, float]) -> None:
    key.use_box = True
    key.box_min = (min(a[0], b[0]), min(a[1], b[1]))
    key.box_max = (max(a[0], b[0]), max(a[1], b[1]))


def add_point(key, at: tuple[float, float], foreground: bool) -> None:
    point = key.points.add()
    point.co, point.label = at, "FG" if foreground else "BG"
    key.active_point = len(key.points) - 1


def _dragged(press, event) -> bool:
    return max(abs(event.mouse_x - press[0]), abs(event.mouse_y - press[1])) >= CLICK_PX


def shown_file_frame(space) -> int:
    """The plate file frame the Image Editor shows (its own image user maps scene -> file frames)."""
    return space.image_user.frame_current


def _editor_shows_plate(context) -> bool:
    space = context.space_data
    return (space is not None and space.type == "IMAGE_EDITOR" and space.image is not None
            and hasattr(context.scene, "mam2") and space.image == context.scene.mam2.image)


def _draw() -> None:
    """POST_PIXEL draw handler of every Image Editor: the shown frame's key over the plate."""
    context = bpy.context
    if not _editor_shows_plate(context):
        return
    s, space, region = context.scene.mam2, context.space_data, context.region
    _, key = key_at(s, shown_file_frame(space))
    if key is None:
        return
    import gpu
    from gpu_extras.batch import batch_for_shader
    width, height = space.image.size
    if not width or not height:
        return

    def to_region(x: float, y: float) -> tuple[float, float]:
        return region.view2d.view_to_region(x / width, y / height, clip=False)

    shader = gpu.shader.from_builtin("UNIFORM_COLOR")
    gpu.state.blend_set("ALPHA")
    if key.use_box:
        (x0, y0), (x1, y1) = key.box_min, key.box_max
        corners = [to_region(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
        shader.uniform_float("color", BOX_COLOUR)
        batch_for_shader(shader, "LINE_LOOP", {"pos": corners}).draw(shader)
    gpu.state.point_size_set(8.0)
    for label, colour in (("FG", FG_COLOUR), ("BG", BG_COLOUR)):
        spots = [to_region(*p.co) for p in key.points if p.label == label]
        if spots:
            shader.uniform_float("color", colour)
            batch_for_shader(shader, "POINTS", {"pos": spots}).draw(shader)
    gpu.state.point_size_set(1.0)
    gpu.state.blend_set("NONE")


class MAM2_OT_draw_prompt(bpy.types.Operator):
    """Drag a box, click foreground points, Ctrl+click background points on the plate; Enter or Esc to finish"""
    bl_idname = "mam2.draw_prompt"
    bl_label = "Draw Prompt"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _editor_shows_plate(context)

    def _inside(self, event) -> bool:
        r = self.region
        return 0 <= event.mouse_x - r.x < r.width and 0 <= event.mouse_y - r.y < r.height

    def _pixel(self, context, event) -> tuple[float, float]:
        r = self.region  # the image's region: the button that started this sits in the sidebar's
        u, v = r.view2d.region_to_view(event.mouse_x - r.x, event.mouse_y - r.y)
        return view_to_pixel(u, v, *context.space_data.image.size)

    def invoke(self, context, event):
        self.region = next(r for r in context.area.regions if r.type == "WINDOW")
        self.frame = shown_file_frame(context.space_data)
        add_key(context.scene, self.frame)
        self.press = None
        context.window_manager.modal_handler_add(self)
        context.workspace.status_text_set("MAM2: drag a box, click a foreground point, Ctrl+click a background "
                                          "point; Enter/Esc to finish")
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        _, key = key_at(context.scene.mam2, self.frame)
        if key is None or event.type in {"ESC", "RET", "NUMPAD_ENTER", "RIGHTMOUSE"}:
            context.workspace.status_text_set(None)
            context.area.tag_redraw()
            return {"FINISHED"}
        if event.type == "LEFTMOUSE" and event.value == "PRESS" and self._inside(event):
            self.press = (event.mouse_x, event.mouse_y, self._pixel(context, event))
        elif event.type == "MOUSEMOVE" and self.press is not None:
            if _dragged(self.press, event):
                set_box(key, self.press[2], self._pixel(context, event))
        elif event.type == "LEFTMOUSE" and event.value == "RELEASE" and self.press is not None:
            press, self.press = self.press, None
            if _dragged(press, event):
                set_box(key, press[2], self._pixel(context, event))
            else:
                add_point(key, press[2], foreground=not event.ctrl)
        else:
            return {"PASS_THROUGH"}  # zoom, pan, frame changes keep working
        context.area.tag_redraw()
        return {"RUNNING_MODAL"}


def register() -> None:
    global _handle
    bpy.utils.register_class(MAM2_OT_draw_prompt)
    _handle = bpy.types.SpaceImageEditor.draw_handler_add(_draw, (), "WINDOW", "POST_PIXEL")


def unregister() -> None:
    global _handle
    if _handle is not None:
        bpy.types.SpaceImageEditor.draw_handler_remove(_handle, "WINDOW")
        _handle = None
    bpy.utils.unregister_class(MAM2_OT_draw_prompt)
