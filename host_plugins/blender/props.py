"""The MAM2 data kept in the .blend (`scene.mam2`: keys, plate, output, shot UUID) and the add-on preferences."""
from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    FloatVectorProperty,
    IntProperty,
    IntVectorProperty,
    PointerProperty,
    StringProperty,
)

from .mam2_client import track as core
from .mam2_client import wire

ADDON = __package__  # "bl_ext.<repo>.mam2_matte" when installed as an extension
ENGINES = (core.ENGINE_DEFAULT, "classic", "hybrid", "mam2")
PIXELS = "pixels of the plate, origin bottom-left"


class MAM2Point(bpy.types.PropertyGroup):
    co: FloatVectorProperty(name="Position", size=2, subtype="XYZ", description=PIXELS)
    label: EnumProperty(name="Label", items=[("FG", "Foreground", "part of the subject"),
                                             ("BG", "Background", "not part of the subject")])


class MAM2Key(bpy.types.PropertyGroup):
    """A keyframe prompt: box, points and/or a Mask, on one frame of the plate's files."""

    frame: IntProperty(name="File frame", description="the plate file's frame number this key is on")
    use_box: BoolProperty(name="Box", default=True)
    box_min: FloatVectorProperty(name="Box min", size=2, subtype="XYZ", description=PIXELS)
    box_max: FloatVectorProperty(name="Box max", size=2, subtype="XYZ", description=PIXELS)
    points: CollectionProperty(type=MAM2Point)
    active_point: IntProperty()
    mask: PointerProperty(name="Mask", type=bpy.types.Mask,
                          description="a Mask (roto) drawn over the plate: evaluated and rasterised on this "
                                      "key's frame, sent as a mask prompt")

    def summary(self) -> str:
        parts = []
        if self.use_box:
            parts.append("box")
        if len(self.points):
            parts.append(f"{len(self.points)} pt")
        if self.mask is not None:
            parts.append(f"mask {self.mask.name}")
        return ", ".join(parts) or "empty"


class MAM2Settings(bpy.types.PropertyGroup):
    shot_uuid: StringProperty(name="Shot UUID", description="this scene's MAM2 shot (kept across Save As and "
                                                            "renames; the server's shot id starts with it)")
    shot_owner: StringProperty(name="Shot owner", description="the name of the scene the shot UUID was made or "
                                                              "last used for: of two scenes with one UUID (a copied "
                                                              "scene), the other one gets a new UUID")
    shot_span: IntVectorProperty(name="Shot span", size=2, default=(0, -1),
                                 description="the file frames the shot was opened with on the server at the last "
                                             "Track (first > last: never): a tracked range inside it keeps the shot "
                                             "and its cache")
    address: StringProperty(name="Server", default=wire.DEFAULT_ADDRESS,
                            description="ZeroMQ address of the MAM2 server")
    start_server: BoolProperty(name="Start server", default=True,
                               description="start `mam2 serve` locally when nothing answers (local address only)")
    engine: EnumProperty(name="Engine", items=[(e, e, "") for e in ENGINES],
                         description="engine for a server started from here (Restart the server to switch)")
    image: PointerProperty(name="Plate", type=bpy.types.Image,
                           description="the plate: a scene-linear EXR image sequence on disk")
    plate_node: StringProperty(name="Plate node", description="the compositor Image node of the last run")
    use_image_range: BoolProperty(name="Whole plate", default=True,
                                  description="track every frame the plate node plays")
    frame_first: IntProperty(name="First", default=1, description="first scene frame to track")
    frame_last: IntProperty(name="Last", default=100, description="last scene frame to track")
    keys: CollectionProperty(type=MAM2Key)
    active_key: IntProperty(name="Key")
    output_dir: StringProperty(name="Output", subtype="DIR_PATH",
                               description="folder for the alpha EXRs, one subfolder per shot (empty: //mam2/ "
                                           "next to the .blend)")
    shot: StringProperty(name="Shot", description="the server's shot id of the last run")
    status: StringProperty(name="Status", default="Idle")
    progress: FloatProperty(name="Progress", min=0.0, max=1.0)
    running: BoolProperty(name="Running")

    def ensure_uuid(self, scene) -> str:
        """This scene's shot UUID. A scene copied from another shares its UUID: the one not named as the
        UUID's owner (the copy, "Scene.001") gets a fresh one, whichever of the two acts first, so the
        original keeps its shot. A renamed scene with no twin keeps its UUID and becomes its owner."""
        def has_twin(value: str) -> bool:
            return any(other != scene and other.mam2.shot_uuid == value
                       for other in bpy.data.scenes if hasattr(other, "mam2"))
        chosen = core.owned_uuid(self.shot_uuid, self.shot_owner, scene.name, has_twin)
        if chosen != self.shot_uuid:
            self.shot_uuid = chosen
        if self.shot_owner != scene.name:
            self.shot_owner = scene.name
        return self.shot_uuid


class MAM2Preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON

    server_command: StringProperty(
        name="Server command", subtype="FILE_PATH",
        description="the `mam2` program of your MAM2 install (e.g. /opt/mam2/.venv/bin/mam2), used to start a "
                    "local server; empty: $MAM2_SERVER_COMMAND, `mam2` on PATH or $MAM2_PYTHON")

    def draw(self, context):
        self.layout.prop(self, "server_command")


def preferences():
    """The add-on preferences (None when the add-on was loaded without Blender's add-on system)."""
    addon = bpy.context.preferences.addons.get(ADDON)
    return addon.preferences if addon is not None else None


CLASSES = (MAM2Point, MAM2Key, MAM2Settings, MAM2Preferences)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.mam2 = PointerProperty(type=MAM2Settings)


def unregister() -> None:
    del bpy.types.Scene.mam2
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
