"""bpy-side helpers for tests/blender_check.py: load the add-on, set up a shot as an artist would, render.

Runs in a bpy venv's Python only.
"""
import hashlib
import importlib.machinery
import os
import sys
import time


class HideVenvModules:
    """Hide the venv's pyzmq and msgpack, so the installed extension must bring its own (its wheels)."""

    names = ("zmq", "msgpack")

    def __init__(self) -> None:
        self.hidden = {os.path.realpath(p) for p in sys.path if p.endswith("site-packages")}

    def find_spec(self, name, path=None, target=None):
        if path is not None or name not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(
            name, [p for p in sys.path if os.path.realpath(p) not in self.hidden])
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} (the venv's copy is hidden)", name=name)
        return spec


import bpy  # noqa: E402  (bpy never imports zmq: the finder above may still go in first)

NEW_API = bpy.app.version >= (5, 0, 0)
cfg: dict = {}  # the test's CONFIG.json, filled by blender_check.py
report: dict = {"version": list(bpy.app.version)}  # written to REPORT.json


def load_addon():
    """Enable the staged add-on through Blender's add-on system (preferences work, and quitting
    disables it, as Blender does)."""
    import addon_utils
    if cfg["addons"] not in sys.path:
        sys.path.insert(0, cfg["addons"])
    addon_utils.enable("mam2_matte", default_set=True, handle_error=_raise)
    return sys.modules["mam2_matte"]


def disable_addon() -> None:
    import addon_utils
    addon_utils.disable("mam2_matte", default_set=True, handle_error=_raise)


def _raise(exc):
    raise exc


def run(op, **kw):
    """Call an operator: [result, error text] (ERROR reports raise RuntimeError in background Blender)."""
    try:
        return [sorted(op(**kw)), ""]
    except RuntimeError as exc:
        return [["RAISED"], str(exc)]


def set_up_shot(addon, blend: str, first: int = 1001, count: int = 6, node_name: str = "Plate"):
    """A saved .blend, the plate sequence opened, and the artist's Image node with the mapping
    Image > Open gives a sequence (first file on scene frame 1)."""
    os.makedirs(os.path.dirname(blend), exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = cfg["width"], cfg["height"]
    scene.render.resolution_percentage = 100
    scene.render.engine = "CYCLES"  # 4.x keeps its Render Layers node: render the empty scene fast, on the CPU
    scene.cycles.device, scene.cycles.samples = "CPU", 1
    plate = bpy.data.images.load(os.path.join(cfg["plates"], f"plate.{first:04d}.exr"))
    plate.source = "SEQUENCE"
    tree = addon.nodes.compositor_tree(scene)
    node = tree.nodes.new("CompositorNodeImage")
    node.name = node.label = node_name
    node.image = plate
    node.frame_start, node.frame_offset, node.frame_duration = 1, first - 1, count
    s = scene.mam2
    s.address, s.start_server, s.image = cfg.get("address", ""), False, plate
    return scene, tree, node


def add_key(scene_frame: int, box=None, points=(), mask=None):
    bpy.context.scene.frame_set(scene_frame)
    result = run(bpy.ops.mam2.key_add)
    s = bpy.context.scene.mam2
    key = s.keys[s.active_key]
    if box is not None:
        key.use_box, key.box_min, key.box_max = True, box[:2], box[2:]
    else:
        key.use_box = False
    key.points.clear()
    for x, y, label in points:
        p = key.points.add()
        p.co, p.label = (x, y), label
    key.mask = mask
    return result, key


def node_state(node) -> dict:
    return {"name": node.name, "timing": [node.frame_start, node.frame_offset, node.frame_duration,
                                          node.use_cyclic], "image": node.image.name if node.image else None}


def links_into(tree, node_name: str) -> dict:
    node = tree.nodes.get(node_name)
    if node is None:
        return {}
    return {i.name: [(l.from_node.name, l.from_socket.name) for l in i.links] for i in node.inputs if i.is_linked}


def render(scene, frames, folder: str, tag: str = "render") -> dict:
    """Render the compositor on scene `frames` to 32-bit RGBA EXRs; {scene frame: path}."""
    settings = scene.render.image_settings
    if NEW_API:
        settings.media_type = "IMAGE"
        scene.render.compositor_device = "CPU"
    settings.file_format, settings.color_depth, settings.color_mode = "OPEN_EXR", "32", "RGBA"
    out = {}
    for frame in frames:
        scene.frame_set(frame)
        scene.render.filepath = os.path.join(folder, f"{tag}.{frame:04d}.exr")
        bpy.ops.render.render(write_still=True)
        out[frame] = scene.render.filepath
    return out


def pump_until(ops, done, seconds: float = 60.0, seen=None) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ops.pump()
        if seen is not None:
            seen.add(bpy.context.scene.mam2.status.split(" (")[0])
        if done():
            return True
        time.sleep(0.02)
    return False


def alpha_folder(s) -> str:
    return os.path.join(os.path.dirname(bpy.data.filepath), "mam2", s.shot)


def alpha_files(s) -> list:
    folder = alpha_folder(s)
    return sorted(os.listdir(folder)) if s.shot and os.path.isdir(folder) else []


def file_digests(s) -> dict:
    folder = alpha_folder(s)
    return {name: hashlib.sha1(open(os.path.join(folder, name), "rb").read()).hexdigest()
            for name in alpha_files(s)}




class FakeLayout:
    """Stands in for bpy's UILayout (none exists without a window) so a panel's draw() can run: every
    property, operator, operator property and icon it names must exist; what it shows is logged."""

    ICONS = set(bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys())

    def __init__(self, log: list) -> None:
        self.log = log

    def _sub(self, *args, **kw):
        return FakeLayout(self.log)

    row = column = box = split = _sub

    def _icon(self, icon):
        assert icon in self.ICONS, f"no icon {icon!r}"

    def prop(self, data, name, text=None, icon="NONE", **kw):
        assert name in data.bl_rna.properties, f"{data!r} has no property {name!r}"
        self._icon(icon)
        self.log.append(("prop", name))

    def label(self, text="", icon="NONE", **kw):
        self._icon(icon)
        self.log.append(("label", text))

    def operator(self, idname, text=None, icon="NONE", **kw):
        module, name = idname.split(".")
        properties = getattr(getattr(bpy.ops, module), name).get_rna_type().properties
        self._icon(icon)
        self.log.append(("operator", idname))
        log = self.log

        class Props:
            def __setattr__(self, key, value):
                assert key in properties, f"{idname} has no property {key!r}"
                log.append(("set", key, value))
        return Props()

    def template_ID(self, data, name, new="", open="", **kw):
        assert name in data.bl_rna.properties, name
        for op in filter(None, (new, open)):
            module, op_name = op.split(".")
            assert hasattr(getattr(bpy.ops, module), op_name), op
        self.log.append(("template_ID", name))

    def template_list(self, list_type, list_id, data, name, active_data, active_name, **kw):
        assert hasattr(bpy.types, list_type), list_type
        assert name in data.bl_rna.properties and active_name in active_data.bl_rna.properties
        for index, item in enumerate(getattr(data, name)):  # what the list draws for each row
            getattr(bpy.types, list_type).draw_item(None, bpy.context, FakeLayout(self.log), data, item, 0,
                                                    active_data, active_name, index)
        self.log.append(("template_list", name))

    def progress(self, factor=0.0, text=""):
        self.log.append(("progress", text))


def draw_panel(panel_type: str, space_type: str) -> list:
    """Run a panel's draw() with a FakeLayout as the editor would; what it showed."""
    from types import SimpleNamespace
    log: list = []
    panel = SimpleNamespace(layout=FakeLayout(log))
    context = SimpleNamespace(scene=bpy.context.scene, space_data=SimpleNamespace(
        type=space_type, tree_type="CompositorNodeTree"))
    getattr(bpy.types, panel_type).draw(panel, context)
    return log


def play_draw_prompt(op_type, file_frame: int, strokes) -> list:
    """Drive the Draw Prompt modal operator with stand-in events, as the Image Editor would send them.

    The image region sits at (100, 50), 200x120 pixels, showing the whole image; `strokes` are
    (press, release, ctrl) in image-region 0..1 coordinates. Returns the modal's return values."""
    from types import SimpleNamespace as NS
    region = NS(type="WINDOW", x=100, y=50, width=200, height=120,
                view2d=NS(region_to_view=lambda x, y: (x / 200, y / 120)))
    sidebar = NS(type="UI", x=300, y=50, width=80, height=120, view2d=NS(region_to_view=lambda x, y: (0.0, 0.0)))
    scene = bpy.context.scene
    context = NS(scene=scene, region=sidebar, area=NS(regions=[sidebar, region], tag_redraw=lambda: None),
                 space_data=NS(type="IMAGE_EDITOR", image=scene.mam2.image, image_user=NS(frame_current=file_frame)),
                 window_manager=NS(modal_handler_add=lambda op: None), workspace=NS(status_text_set=lambda t: None))

    class Op:  # the operator's own functions on a plain object (bpy makes operator instances itself)
        invoke, modal, _inside, _pixel = op_type.invoke, op_type.modal, op_type._inside, op_type._pixel

    def event(kind, value, u, v, ctrl=False):
        return NS(type=kind, value=value, mouse_x=100 + u * 200, mouse_y=50 + v * 120, ctrl=ctrl)

    op = Op()
    out = [op.invoke(context, event("LEFTMOUSE", "PRESS", 0.5, 0.5))]
    for (u0, v0), (u1, v1), ctrl in strokes:
        out.append(op.modal(context, event("LEFTMOUSE", "PRESS", u0, v0, ctrl)))
        out.append(op.modal(context, event("MOUSEMOVE", "NOTHING", (u0 + u1) / 2, (v0 + v1) / 2, ctrl)))
        out.append(op.modal(context, event("LEFTMOUSE", "RELEASE", u1, v1, ctrl)))
    out.append(op.modal(context, event("WHEELUPMOUSE", "PRESS", 0.5, 0.5)))
    out.append(op.modal(context, event("RET", "PRESS", 0.5, 0.5)))
    return [sorted(o) for o in out]
