"""Nodes of the `nuke` stand-in: the classes the MAM2 gizmo and its tests use, with their real knobs.

* Every method of a deleted node (or of any node after scriptClose) raises
  ValueError("A PythonObject is not attached to a node"), as Nuke does.
* A gizmo whose file body is `Group {...}` is created as a Group: Class() == "Group".
* Read has Nuke's knobs: file/proxy, format, first/last/origfirst/origlast, before/after
  (hold, loop, bounce, black; default hold), frame_mode/frame (expression, start at, offset),
  colorspace, raw, on_error; firstFrame()/lastFrame() give the output range after the
  frame offset.
* width()/height() are the proxy-scaled size in proxy mode; format() is the full format.
"""
from __future__ import annotations

import standin_state as S
from standin_arrays import Format, Format_Knob, XY_Knob
from standin_knobs import (Boolean_Knob, Button, Channel_Knob, Double_Knob, Enumeration_Knob, File_Knob, Int_Knob,
                           String_Knob)

COLORSPACES = ["default", "linear", "sRGB", "rec709", "Cineon", "Gamma2.2", "AlexaV3LogC"]
WORKING_SPACES = ["linear", "scene_linear", "ACES - ACEScg", "sRGB"]
CHANNEL_SETS = ["rgba", "rgb", "alpha", "all", "none"]  # Merge defaults to rgba


def _enum(*items):
    return lambda name: Enumeration_Knob(name, "", list(items))


def _builtin(cls: str) -> dict:
    common = {"name": String_Knob, "disable": Boolean_Knob, "xpos": Int_Knob, "ypos": Int_Knob, "label": String_Knob}
    frame_range = {"first": Int_Knob, "last": Int_Knob}
    extra = {
        "Read": {"file": File_Knob, "proxy": File_Knob, "format": Format_Knob, **frame_range, "origfirst": Int_Knob,
                 "origlast": Int_Knob, "origset": Boolean_Knob, "before": _enum("hold", "loop", "bounce", "black"),
                 "after": _enum("hold", "loop", "bounce", "black"),
                 "frame_mode": _enum("expression", "start at", "offset"), "frame": String_Knob,
                 "colorspace": _enum(*COLORSPACES), "raw": Boolean_Knob, "premultiplied": Boolean_Knob,
                 "on_error": _enum("error", "black", "checkerboard", "nearest frame")},
        "Write": {"file": File_Knob, "proxy": File_Knob, "channels": _enum("rgb", "rgba", "alpha", "all", "none"),
                  "file_type": _enum(" ", "exr", "png", "jpeg", "tiff", "dpx"), "colorspace": _enum(*COLORSPACES),
                  "raw": Boolean_Knob, "create_directories": Boolean_Knob},
        "Copy": {"from0": Channel_Knob, "to0": Channel_Knob, "bbox": _enum("union", "intersection", "A", "B")},
        "Merge2": {"operation": _enum("over", "mask", "stencil", "multiply", "plus"), "Achannels": _enum(*CHANNEL_SETS),
                   "Bchannels": _enum(*CHANNEL_SETS), "output": _enum(*CHANNEL_SETS),
                   "bbox": _enum("union", "intersection", "A", "B"), "mix": Double_Knob},
        "Input": {"number": Int_Knob}, "Output": {}, "Dot": {}, "Group": {},
        "Constant": {"format": Format_Knob, **frame_range},
        "Roto": {"format": Format_Knob, "output": _enum("alpha", "rgba")},
        "Transform": {"translate": XY_Knob, "center": XY_Knob, "rotate": Double_Knob, "scale": Double_Knob},
        "Root": {"project_directory": File_Knob, "first_frame": Int_Knob, "last_frame": Int_Knob,
                 "format": Format_Knob, "proxy": Boolean_Knob, "proxy_type": _enum("scale", "format"),
                 "proxy_scale": Double_Knob, "colorManagement": _enum("Nuke", "OCIO"),
                 "workingSpaceLUT": _enum(*WORKING_SPACES)},
    }
    if cls not in extra:
        raise RuntimeError(f"nuke standin: unknown node class {cls!r}")
    return {**common, **extra[cls]}


class Node:
    def __init__(self, cls: str, name: str = "") -> None:
        self._class, self._alive = cls, True
        self._knobs: dict = {}
        for key, make in _builtin(cls).items():
            self._attach(make(key))
        self._knobs["name"]._value = name or cls + "1"
        self._inputs: dict[int, Node | None] = {}
        self._parent: Group | None = None
        self._reloads = 0
        self.standin_pixels = None  # test hook: frame -> (H, W, 3|4) scene-linear array
        self.standin_alpha = None  # test hook (Roto): frame -> (H, W) alpha
        if cls == "Read":
            self._attach(Button("reload", self._reload))
            for key in ("last", "origlast"):
                self._knobs[key]._value = 1
        if cls == "Merge2":
            self._knobs["mix"]._value = 1.0

    def _attach(self, knob):
        knob._owner = self
        self._knobs[knob._name] = knob
        return knob

    def _live(self, what: str) -> None:
        S.main_only(f"node.{what}")
        if not self._alive:
            raise ValueError(S.NOT_ATTACHED)

    def _reload(self) -> None:
        self._reloads += 1

    def __getitem__(self, name: str):
        self._live(f"[{name!r}]")
        if name == "datatype" and self._class == "Write" and self._knobs["file_type"]._value == "exr":
            if "datatype" not in self._knobs:
                self._attach(Enumeration_Knob("datatype", "", ["16 bit half", "32 bit float"]))
        try:
            return self._knobs[name]
        except KeyError:
            raise NameError(f"knob {name} does not exist") from None

    def knob(self, name: str):
        self._live("knob()")
        return self._knobs.get(name)

    def knobs(self) -> dict:
        self._live("knobs()")
        return dict(self._knobs)

    def Class(self) -> str:
        self._live("Class()")
        return self._class

    def name(self) -> str:
        self._live("name()")
        return self._knobs["name"]._value

    def fullName(self) -> str:
        self._live("fullName()")
        inner = self._parent is not None and self._parent._class != "Root"
        return f"{self._parent.fullName()}.{self.name()}" if inner else self.name()

    def input(self, i: int):
        self._live("input()")
        return self._inputs.get(i)

    def inputs(self) -> int:
        self._live("inputs()")
        return max((i + 1 for i, n in self._inputs.items() if n is not None), default=0)

    def setInput(self, i: int, node) -> bool:
        self._live("setInput()")
        self._inputs[i] = node
        return True

    def format(self) -> Format:
        self._live("format()")
        return self._format()

    def _format(self) -> Format:
        if "format" in self._knobs:
            return self._knobs["format"]._value
        source = self._input_node(0)
        return source._format() if source is not None else root()._knobs["format"]._value

    def _input_node(self, i: int):
        if self._class == "Input" and self._parent is not None:  # a group's Input: the group's input
            return self._parent._inputs.get(self._knobs["number"]._value)
        if self._class == "Group":
            return next((n for n in self._children if n._class == "Output"), None)
        return self._inputs.get(i)

    def width(self) -> int:
        self._live("width()")
        return int(self._format().width() * proxy_scale())

    def height(self) -> int:
        self._live("height()")
        return int(self._format().height() * proxy_scale())

    def firstFrame(self) -> int:
        self._live("firstFrame()")
        return self._range()[0]

    def lastFrame(self) -> int:
        self._live("lastFrame()")
        return self._range()[1]

    def _range(self) -> tuple[int, int]:
        k = self._knobs
        if self._class == "Read":
            first, last = k["first"]._value, k["last"]._value
            mode, value = k["frame_mode"]._value, k["frame"]._value.strip()
            if value and mode == "offset":
                return first + int(value), last + int(value)
            if value and mode == "start at":
                return int(value), int(value) + last - first
            return first, last
        if "first" in k:
            return k["first"]._value, k["last"]._value
        source = self._input_node(0)
        if source is not None:
            return source._range()
        return root()._knobs["first_frame"]._value, root()._knobs["last_frame"]._value

    def file_frame(self, t: int) -> int:
        """Read: the file frame shown at output frame t (frame_mode/frame), before before/after."""
        import standin_eval
        k = self._knobs
        mode, value = k["frame_mode"]._value, k["frame"]._value.strip()
        if not value:
            return t
        if mode == "offset":
            return t - int(value)
        if mode == "start at":
            return t - int(value) + k["first"]._value
        return int(round(standin_eval.expression(value, t, lambda *a: 0)))


class Group(Node):
    def __init__(self, name: str = "", cls: str = "Group") -> None:
        super().__init__("Group", name)
        self._class = cls
        self._children: list[Node] = []

    def node(self, name: str):
        self._live("node()")
        return next((n for n in self._children if n._knobs["name"]._value == name), None)

    def nodes(self) -> list:
        self._live("nodes()")
        return list(self._children)

    def begin(self):
        self._live("begin()")
        S.context.append(self)
        return self

    def end(self) -> None:
        S.context.pop()

    def __enter__(self):
        return self.begin()

    def __exit__(self, *exc) -> None:
        self.end()

    def _add(self, node: Node) -> Node:
        taken = {n._knobs["name"]._value for n in self._children}
        name = node._knobs["name"]._value
        if name in taken:
            base, k = name.rstrip("0123456789"), 1
            while f"{base}{k}" in taken:
                k += 1
            node._knobs["name"]._value = f"{base}{k}"
        node._parent = self
        self._children.append(node)
        return node


_root = Group("Root", cls="Root")
for _key, _make in _builtin("Root").items():
    _root._attach(_make(_key))


def root() -> Group:
    return _root


def proxy_scale() -> float:
    k = _root._knobs
    return k["proxy_scale"]._value if k["proxy"]._value else 1.0


def reset_root(name: str = "") -> None:
    k = _root._knobs
    k["name"]._value, k["project_directory"]._value = name, ""
    k["first_frame"]._value, k["last_frame"]._value = 1, 100
    k["format"]._value = Format(64, 48)
    k["proxy"]._value, k["proxy_scale"]._value = False, 0.5
    k["colorManagement"]._value, k["workingSpaceLUT"]._value = "Nuke", "linear"


def kill(node: Node) -> None:
    """Delete: the node (and a group's insides) stop being attached; links to it are cut."""
    node._alive = False
    for child in getattr(node, "_children", ()):
        kill(child)
    if node._parent is not None:
        for other in node._parent._children:
            for i, src in list(other._inputs.items()):
                if src is node:
                    other._inputs[i] = None
        if node in node._parent._children:
            node._parent._children.remove(node)


def walk(group: Group, recurse: bool):
    for node in group._children:
        yield node
        if recurse and isinstance(node, Group):
            yield from walk(node, True)


reset_root()
