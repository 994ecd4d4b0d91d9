"""The compositor side: the scene's tree (4.x or 5.x API), the plate node's timing, the alpha wiring.

Main thread only. Blender 4.x: `scene.use_nodes` + `scene.node_tree`; 5.0+: the tree is a
reusable `CompositorNodeTree` data-block in `scene.compositing_node_group`. The artist's
nodes are only read (and their outputs linked from); the add-on changes only the nodes it
made (ALPHA_NODE, SET_ALPHA_NODE, and PLATE_NODE when no node showed the plate).
"""
from __future__ import annotations

import os

import bpy

from .jobspec import PlateTiming, sequence_frames, sequence_pattern

PLATE_NODE = "MAM2 Plate"
ALPHA_NODE = "MAM2 Alpha"
SET_ALPHA_NODE = "MAM2 Set Alpha"
NEW_API = "compositing_node_group" in bpy.types.Scene.bl_rna.properties  # Blender 5.0+


def compositor_tree(scene, create: bool = True):
    """The scene's compositor node tree, created (with an output) when `create` and there is none."""
    if NEW_API:
        tree = scene.compositing_node_group
        if tree is None and create:
            tree = bpy.data.node_groups.new(f"{scene.name} Compositing", "CompositorNodeTree")
            tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
            tree.nodes.new("NodeGroupOutput").location = (600, 0)
            scene.compositing_node_group = tree
        return tree
    if create and not scene.use_nodes:
        new = scene.node_tree is None  # else the artist's own comp, switched off: theirs as it is
        scene.use_nodes = True  # 4.x creates Render Layers -> Reroute -> Composite + Viewer
        if new:  # a comp for the matte only: Render Layers would render the 3D scene under every frame
            for node in [n for n in scene.node_tree.nodes if n.bl_idname in ("CompositorNodeRLayers", "NodeReroute")]:
                scene.node_tree.nodes.remove(node)
    return scene.node_tree


def plate_node(tree, image, name: str = ""):
    """The Image node that shows the plate: the one called `name`, else the active node, else the
    artist's first, else the add-on's own (None when no node shows it)."""
    if tree is None or image is None:
        return None
    shown = [n for n in tree.nodes if n.bl_idname == "CompositorNodeImage" and n.image == image
             and n.name != ALPHA_NODE]
    for pick in ([n for n in shown if n.name == name], [n for n in shown if n == tree.nodes.active],
                 [n for n in shown if n.name != PLATE_NODE], shown):
        if pick:
            return pick[0]
    return None


def timing(node) -> PlateTiming:
    return PlateTiming(start=node.frame_start, offset=node.frame_offset, duration=node.frame_duration,
                       cyclic=node.use_cyclic)


def plate_frames(image) -> list[int]:
    """The file frames of a SEQUENCE image found on disk ([] for anything else)."""
    if image is None or image.source != "SEQUENCE" or not image.filepath:
        return []
    return sequence_frames(sequence_pattern(bpy.path.abspath(image.filepath, library=image.library)))


def scene_timing(scene) -> PlateTiming | None:
    """The plate's frame mapping: its node's, else the one Image > Open would give (None: no plate)."""
    s = scene.mam2
    node = plate_node(compositor_tree(scene, create=False), s.image, s.plate_node)
    if node is not None:
        return timing(node)
    frames = plate_frames(s.image)
    return PlateTiming.opened(frames[0], frames[-1] - frames[0] + 1) if frames else None


def _set_timing(node, t: PlateTiming) -> None:
    node.frame_start, node.frame_offset, node.frame_duration, node.use_cyclic = t.start, t.offset, t.duration, t.cyclic
    node.use_auto_refresh = True


def _node(tree, name: str, kind: str, location: tuple[int, int]):
    node = tree.nodes.get(name)
    if node is None or node.bl_idname != kind:
        node = tree.nodes.new(kind)
        node.name = node.label = name
        node.location = location
    return node


def ensure_plate_node(scene, image, first_file: int, count: int, name: str = ""):
    """The plate's Image node; when none shows the plate, the add-on makes one with the frame mapping
    Image > Open gives (file `first_file` on scene frame 1)."""
    tree = compositor_tree(scene)
    node = plate_node(tree, image, name)
    if node is None:
        node = _node(tree, PLATE_NODE, "CompositorNodeImage", (-300, 200))
        node.image = image
        _set_timing(node, PlateTiming.opened(first_file, count))
    return node


def _output_socket(tree):
    """The Image input of the tree's final output (Group Output in 5.x, Composite in 4.x), or None."""
    for node in tree.nodes:
        if node.bl_idname in ("NodeGroupOutput", "CompositorNodeComposite") and node.inputs:
            return node.inputs[0]
    return None


def _source(link):
    """The node a link really comes from, through reroutes."""
    node = link.from_node
    while node.bl_idname == "NodeReroute" and node.inputs[0].links:
        node = node.inputs[0].links[0].from_node
    return node


def alpha_image(stored_path: str, name: str):
    """The alpha sequence as a Non-Color SEQUENCE Image, `stored_path` kept as given (relative stays
    relative); an Image already reading that sequence is reloaded (the live preview)."""
    wanted = sequence_pattern(os.path.normpath(bpy.path.abspath(stored_path)))
    for image in bpy.data.images:
        if image.source == "SEQUENCE" and image.filepath and \
                sequence_pattern(os.path.normpath(bpy.path.abspath(image.filepath))) == wanted:
            image.reload()
            return image
    image = bpy.data.images.load(bpy.path.abspath(stored_path), check_existing=False)
    image.filepath = stored_path
    image.name = name
    image.source = "SEQUENCE"
    image.colorspace_settings.name = "Non-Color"
    return image


def wire_alpha(scene, plate, plate_timing: PlateTiming, stored_path: str, shot: str, plate_name: str = ""):
    """Plate node + alpha node -> Set Alpha (-> the output if free). The alpha node plays the alpha
    files with the plate node's timing, so scene frame N shows the alpha of the plate shown on N.
    Returns (alpha node, the plate node's name or "" when the plate image is gone)."""
    tree = compositor_tree(scene)
    alpha_node = _node(tree, ALPHA_NODE, "CompositorNodeImage", (-300, -150))
    alpha_node.image = alpha_image(stored_path, f"{shot}.alpha")
    _set_timing(alpha_node, plate_timing)
    if plate is None:
        return alpha_node, ""
    source = plate_node(tree, plate, plate_name)
    if source is None:  # deleted during the run: the add-on's own node, with the timing that was tracked
        source = _node(tree, PLATE_NODE, "CompositorNodeImage", (-300, 200))
        source.image = plate
        _set_timing(source, plate_timing)
    set_alpha = _node(tree, SET_ALPHA_NODE, "CompositorNodeSetAlpha", (50, 100))
    tree.links.new(source.outputs["Image"], set_alpha.inputs["Image"])
    # The Alpha output: an alpha-only EXR loads with RGB = 0 (or garbage) on the Image output.
    tree.links.new(alpha_node.outputs["Alpha"], set_alpha.inputs["Alpha"])
    out = _output_socket(tree)
    if out is not None and all(_source(link).bl_idname == "CompositorNodeRLayers" for link in out.links):
        tree.links.new(set_alpha.outputs[0], out)  # free, or 4.x's untouched Render Layers -> Composite
    return alpha_node, source.name
