"""Mask datablocks (Blender's roto tool) as mask prompts: rasterised by Blender's own compositor.

A key's Mask is rendered through a Mask node in a temporary scene of the plate's size, on the
key's scene frame, so feather, layers, shape keys and animation look exactly as they do in
Blender's compositor. The artist's scene is put on that frame for the render (animation is
evaluated there) and put back afterwards. Main thread only.
"""
from __future__ import annotations

import os
import tempfile

import bpy
import numpy as np

from .nodes import NEW_API

SCENE = "MAM2 mask raster"


def _raster_scene(width: int, height: int):
    scene = bpy.data.scenes.new(SCENE)
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.use_compositing = True
    scene.view_settings.view_transform = "Standard"
    settings = scene.render.image_settings
    if NEW_API:
        tree = bpy.data.node_groups.new(SCENE, "CompositorNodeTree")
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        output = tree.nodes.new("NodeGroupOutput")
        scene.compositing_node_group = tree
        scene.render.compositor_device = "CPU"
        settings.media_type = "IMAGE"
    else:
        scene.use_nodes = True
        tree = scene.node_tree
        for node in list(tree.nodes):
            tree.nodes.remove(node)
        output = tree.nodes.new("CompositorNodeComposite")
    settings.file_format, settings.color_depth, settings.color_mode = "OPEN_EXR", "32", "RGB"
    node = tree.nodes.new("CompositorNodeMask")
    tree.links.new(node.outputs[0], output.inputs[0])
    return scene, tree, node


def rasterise(scene, requests: list[tuple[object, int]], width: int, height: int) -> list[np.ndarray]:
    """[(Mask, scene frame)] -> [(height, width) float32, bottom row first], as the compositor draws it."""
    if not requests:
        return []
    frame, subframe = scene.frame_current, scene.frame_subframe
    raster, tree, node = _raster_scene(width, height)
    out = []
    try:
        with tempfile.TemporaryDirectory(prefix="mam2-mask-") as tmp:
            for i, (mask, at) in enumerate(requests):
                node.mask = mask
                scene.frame_set(at)  # evaluates the mask's animation on the artist's scene
                raster.frame_set(at)  # the frame the Mask node rasterises (shape keys)
                raster.render.filepath = os.path.join(tmp, f"mask{i}.exr")
                bpy.ops.render.render(write_still=True, scene=raster.name)
                image = bpy.data.images.load(raster.render.filepath, check_existing=False)
                try:
                    pixels = np.empty(width * height * image.channels, np.float32)
                    image.pixels.foreach_get(pixels)
                finally:
                    bpy.data.images.remove(image)
                out.append(pixels.reshape(height, width, -1)[:, :, 0].copy())
    finally:
        scene.frame_set(frame, subframe=subframe)
        if NEW_API:
            bpy.data.node_groups.remove(tree)
        bpy.data.scenes.remove(raster)
    return out
