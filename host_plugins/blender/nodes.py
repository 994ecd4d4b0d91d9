"""The compositor side: find the scene's compositor tree (4.x or 5.x API) and wire the alphas in.

Main thread only. Blender 4.x: `scene.use_nodes` + `scene.node_tree`; 5.0+: the tree is a
reusable `CompositorNodeTree` data-block in `scene.compositing_node_group`.
"""
from __future__ import annotations

import os

import bpy

from .jobspec import image_user_frames

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
        scene.use_nodes = True  # 4.x creates Render Layers + Composite
    return scene.node_tree


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


def _node(tree, name: str, kind: str, location: tuple[int, int]):
    node = tree.nodes.get(name)
    if node is None or node.bl_idname != kind:
        node = tree.nodes.new(kind)
        node.name = node.label = name
        node.location = location
    return node


def _set_frames(node, first: int, last: int) -> None:
    node.frame_start, node.frame_offset, node.frame_duration = image_user_frames(first, last)
    node.use_auto_refresh = True


def alpha_image(pattern: str, first: int, name: str):
    """The alpha sequence as a Non-Color SEQUENCE Image (reloaded when it already exists)."""
    path = pattern % first
    for image in bpy.data.images:
        if os.path.normpath(bpy.path.abspath(image.filepath)) == os.path.normpath(path):
            image.reload()
            return image
    image = bpy.data.images.load(path, check_existing=False)
    image.name = name
    image.source = "SEQUENCE"
    image.colorspace_settings.name = "Non-Color"
    return image


def wire_alpha(scene, plate, pattern: str, first: int, last: int, shot: str):
    """Plate Image node + alpha Image node -> Set Alpha (-> the output if free). Returns the alpha node."""
    tree = compositor_tree(scene)
    plate_node = next((n for n in tree.nodes if n.bl_idname == "CompositorNodeImage" and n.image == plate
                       and n.name != ALPHA_NODE), None) or _node(tree, PLATE_NODE, "CompositorNodeImage", (-300, 200))
    plate_node.image = plate
    if plate.source == "SEQUENCE":
        _set_frames(plate_node, first, last)
    alpha_node = _node(tree, ALPHA_NODE, "CompositorNodeImage", (-300, -150))
    alpha_node.image = alpha_image(pattern, first, f"{shot}.alpha")
    _set_frames(alpha_node, first, last)
    set_alpha = _node(tree, SET_ALPHA_NODE, "CompositorNodeSetAlpha", (50, 100))
    tree.links.new(plate_node.outputs["Image"], set_alpha.inputs["Image"])
    tree.links.new(alpha_node.outputs["Image"], set_alpha.inputs["Alpha"])
    out = _output_socket(tree)
    default = out is not None and all(_source(l).bl_idname == "CompositorNodeRLayers" for l in out.links)
    if default:  # free, or 4.x's untouched Render Layers -> Composite: show the plate with its alpha
        tree.links.new(set_alpha.outputs[0], out)
    return alpha_node
