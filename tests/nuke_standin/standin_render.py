"""What the stand-in's nodes output: channel dicts {"rgba.red": (H, W) float32, ...}, and Write renders.

Enough of Nuke's image semantics for the MAM2 gizmo to be checked by its pixels: Read (frame
offset, before/after, on_error, colour space, proxy scaling), Copy (one channel pair; the
output has B's format), Merge2 `mask` (B x A's alpha on the output channels), Input/Output/
Group/Dot, disabled nodes (pass input 0), and test sources (standin_pixels / standin_alpha).
In proxy mode every image is scaled by root.proxy_scale (Nuke: Reads scale, the rest follows).
"""
from __future__ import annotations

import os

import numpy as np

import standin_nodes as N
from standin_arrays import Format
from standin_knobs import HASHES

RGBA = ("rgba.red", "rgba.green", "rgba.blue", "rgba.alpha")
FILE_CHANNELS = {"R": "rgba.red", "G": "rgba.green", "B": "rgba.blue", "A": "rgba.alpha"}
SETS = {"rgb": RGBA[:3], "rgba": RGBA, "alpha": RGBA[3:], "none": ()}


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((np.maximum(v, 0) + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.maximum(v, 0) ** (1 / 2.4) - 0.055).astype(np.float32)


def _black(fmt: Format) -> dict:
    return {c: np.zeros((fmt.height(), fmt.width()), np.float32) for c in RGBA}


def _proxy(img: dict) -> dict:
    step = int(round(1 / N.proxy_scale()))
    return {c: a[::step, ::step] for c, a in img.items()} if step > 1 else img


def file_path(node, knob: str, frame: int) -> str:
    """A Read/Write file knob expanded for one frame (TCL, ####/%0Nd)."""
    k = node._knobs[knob]
    text = k._tcl(HASHES.sub(lambda m: f"%0{len(m.group(0))}d", k._value))
    return text % frame if "%" in text else text


def render(node, t: int) -> dict:
    """The node's output at frame t (channel dict)."""
    if node is None:
        return _black(N.root()._knobs["format"]._value)
    k = node._knobs
    if node._class in ("Input", "Output", "Group", "Dot", "Write") or (
            "disable" in k and k["disable"]._at(t)):
        if node._class == "Read" or (node._class == "Input" and node._parent is None):
            return _black(node._format())
        return render(node._input_node(0), t)
    if node.standin_pixels is not None:
        pixels = np.asarray(node.standin_pixels(t), np.float32)
        img = {c: pixels[..., i] for i, c in enumerate(RGBA[:pixels.shape[2]])}
        img.setdefault("rgba.alpha", np.zeros(pixels.shape[:2], np.float32))
        return _proxy(img)
    if node.standin_alpha is not None:
        alpha = np.asarray(node.standin_alpha(t), np.float32)
        return _proxy({**{c: np.zeros_like(alpha) for c in RGBA[:3]}, "rgba.alpha": alpha})
    if node._class == "Read":
        return _read(node, t)
    if node._class == "Copy":
        b, a = render(node._inputs.get(0), t), render(node._inputs.get(1), t)
        out = dict(b)
        src = a.get(k["from0"]._value)
        shape = b["rgba.alpha"].shape
        out[k["to0"]._value] = _fit(src, shape) if src is not None else np.zeros(shape, np.float32)
        return out
    if node._class == "Merge2":
        if k["operation"]._value != "mask":
            raise RuntimeError(f"nuke standin: Merge2 operation {k['operation']._value!r} not modelled")
        b, a = render(node._inputs.get(0), t), render(node._inputs.get(1), t)
        out = dict(b)
        for c in SETS[k["output"]._value]:
            out[c] = b[c] * a["rgba.alpha"]
        return out
    raise RuntimeError(f"nuke standin: cannot render a {node._class} node")


def _fit(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A plane placed in another format: same bottom-left origin (Nuke's), cropped or padded with 0."""
    out = np.zeros(shape, np.float32)
    h, w = min(shape[0], plane.shape[0]), min(shape[1], plane.shape[1])
    out[shape[0] - h:, :w] = plane[plane.shape[0] - h:, :w]
    return out


def _read(node, t: int) -> dict:
    from mam2_server.io import read_image
    k = node._knobs
    first, last = k["first"]._value, k["last"]._value
    f = node.file_frame(t)
    if f < first or f > last:
        mode = k["before"]._value if f < first else k["after"]._value
        span = last - first + 1
        if mode == "black":
            return _proxy(_black(k["format"]._value))
        if mode == "hold":
            f = min(max(f, first), last)
        elif mode == "loop":
            f = first + (f - first) % span
        else:  # bounce
            period = (f - first) % (2 * span)
            f = first + (period if period < span else 2 * span - 1 - period)
    path = file_path(node, "proxy" if N.proxy_scale() != 1 and k["proxy"]._value else "file", f)
    if not os.path.isfile(path):
        if k["on_error"]._value == "error":
            raise RuntimeError(f"{node.name()}: Read error: {path}: No such file or directory")
        return _proxy(_black(k["format"]._value))
    image = read_image(path)
    pixels = image.pixels
    fmt = k["format"]._value
    if pixels.shape[:2] != (fmt.height(), fmt.width()):
        raise RuntimeError(f"nuke standin: {node.name()} reads a {pixels.shape[1]}x{pixels.shape[0]} file into its "
                           f"{fmt.width()}x{fmt.height()} format knob (set the Read's format)")
    img = _black(fmt)
    for i, name in enumerate(image.info.channels):
        img[FILE_CHANNELS.get(name, name)] = pixels[..., i]
    space = k["colorspace"]._value
    if not k["raw"]._value and (space == "sRGB" or (space == "default" and not path.endswith(".exr"))):
        for c in RGBA[:3]:
            img[c] = srgb_to_linear(img[c])
    return _proxy(img)


def execute(write, start: int, end: int, incr: int = 1) -> None:
    """Render a Write over start..end: EXR files of its channels, at proxy size in proxy mode."""
    from mam2_server.io import write_image
    k = write._knobs
    if k["file_type"]._value != "exr":
        raise RuntimeError(f"nuke standin: Write file_type {k['file_type']._value!r} not modelled (use exr)")
    channels = SETS.get(k["channels"]._value)
    if not channels:
        raise RuntimeError(f"{write.name()}: no channels to write")
    pixel_type = "float" if "datatype" in k and k["datatype"]._value == "32 bit float" else "half"
    for frame in range(start, end + 1, incr):
        img = render(write._inputs.get(0), frame)
        planes = [img[c] for c in channels]
        if not k["raw"]._value and k["colorspace"]._value == "sRGB":
            planes = [linear_to_srgb(p) if c in RGBA[:3] else p for c, p in zip(channels, planes)]
        path = file_path(write, "proxy" if N.proxy_scale() != 1 and k["proxy"]._value else "file", frame)
        names = [name for name, c in FILE_CHANNELS.items() if c in channels]
        if k["create_directories"]._value:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        write_image(path, np.stack(planes, axis=-1), channels=names, pixel_type=pixel_type)
