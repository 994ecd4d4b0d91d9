"""The node's keyframes: which frames are prompts, and what each one uses (box, points, mask).

The values live in the knobs: `Set key` puts an animation key on the box and the enabled points
at that frame (Foundry dev guide, "Animation": setAnimated(index), then setValueAt(value, time, index)),
except on indices driven by an expression (e.g. linked to a Tracker), which give their value at
each key's frame through getValueAt. What each key uses, and the list itself, is JSON in the
hidden `keys_data` knob; `key_list` and `keys_info` show it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .common import Refused

POINTS = (("fg1", 1), ("fg2", 1), ("fg3", 1), ("bg1", 0), ("bg2", 0))  # knob, label (1 = fg)
MASK_INPUT = 1


@dataclass(frozen=True)
class Key:
    frame: int
    box: bool
    points: tuple[str, ...]  # enabled point knobs
    mask: bool

    def describe(self) -> str:
        parts = (["box"] if self.box else []) + list(self.points) + (["mask"] if self.mask else [])
        return f"{self.frame}: {', '.join(parts)}"


def load(node) -> dict[int, Key]:
    text = node["keys_data"].getText().strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
        keys = {int(f): Key(int(f), bool(v["box"]), tuple(v["points"]), bool(v["mask"])) for f, v in data.items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise Refused(f"the keys stored on the node are unreadable ({exc}); delete the node's keys_data") from None
    return dict(sorted(keys.items()))


def save(node, keys: dict[int, Key], current: int | None = None) -> None:
    data = {str(k.frame): {"box": k.box, "points": list(k.points), "mask": k.mask} for k in keys.values()}
    node["keys_data"].setValue(json.dumps(data, sort_keys=True) if data else "")
    items = [str(f) for f in sorted(keys)]
    node["key_list"].setValues(items)
    if items:
        node["key_list"].setValue(str(current) if current in keys else items[-1])
    node["keys_info"].setValue(" | ".join(k.describe() for k in keys.values()) or
                               "no keys: Track keys the current frame")


def add(node, frame: int) -> Key:
    """Key the prompt as the knobs show it at `frame` (replaces a key there)."""
    points = tuple(name for name, _ in POINTS if node[f"{name}_on"].value())
    use_mask = bool(node["use_mask"].value()) and node.input(MASK_INPUT) is not None
    key = Key(int(frame), bool(node["use_box"].value()), points, use_mask)
    if not (key.box or key.points or key.mask):
        raise Refused("nothing to key: enable the box, a point, or connect a Roto to the 'mask' input")
    for name in (["box"] if key.box else []) + list(points):
        _key_knob(node[name], key.frame)
    keys = load(node)
    keys[key.frame] = key
    save(node, keys, key.frame)
    return key


def _key_knob(knob, frame: int) -> None:
    size = 4 if knob.name() == "box" else 2
    free = [i for i in range(size) if not knob.hasExpression(i)]  # expression-linked indices stay linked
    if not free:
        return
    values = [knob.getValueAt(frame, i) for i in free]
    for i, value in zip(free, values):
        # per channel: isAnimated() with no channel is also true when another channel only has an
        # expression, and setValueAt keys only a channel set to accept animation (Array_Knob.setAnimated)
        if not knob.isAnimated(i):
            knob.setAnimated(i)
        knob.setValueAt(value, frame, i)


def selected(node) -> int:
    value = node["key_list"].value()
    if not value:
        raise Refused("no keys yet: use 'Set key' on a frame of the shot")
    return int(value)


def delete(node) -> int:
    """Delete the key chosen in the list (its animation keys too); returns its frame."""
    frame = selected(node)
    keys = load(node)
    key = keys.pop(frame, None)
    if key is not None:
        for name in (["box"] if key.box else []) + list(key.points):
            knob = node[name]
            if knob.isAnimated() and knob.isKeyAt(frame):
                knob.removeKeyAt(frame)
    save(node, keys)
    return frame


def values(node, key: Key) -> tuple[tuple[float, float, float, float] | None, tuple[tuple[float, float, int], ...]]:
    """(box, points) at the key's frame, from keys, interpolation or expressions (Nuke's coordinates)."""
    box = tuple(float(node["box"].getValueAt(key.frame, i)) for i in range(4)) if key.box else None
    labels = dict(POINTS)
    points = tuple((float(node[n].getValueAt(key.frame, 0)), float(node[n].getValueAt(key.frame, 1)), labels[n])
                   for n in key.points)
    return box, points
