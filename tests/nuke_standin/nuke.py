"""A strict stand-in for Nuke's `nuke` module, for tests only: just the API mam2_nuke uses.

Strict on purpose, so that tests catch misuse that Nuke would punish:
* knobs, nodes, nuke.message/execute/frame/thisNode only from the main thread (RuntimeError);
* unknown knob names raise NameError, as `node['x']` does in Nuke; unknown Enumeration items ValueError;
* executeInMainThreadWithResult from the main thread raises (in Nuke it deadlocks);
* Write's `datatype` knob exists only once `file_type` is exr.
Calls queued with executeInMainThread run when the test calls `standin_pump()`
(Nuke's event loop). Array-knob animation is a step function (Nuke interpolates).
Test hooks are named standin_*; `Node.standin_pixels` (frame -> (H, W, 3) array) feeds Write renders.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
from typing import Self

import nkscript

GUI = True
_MAIN = threading.main_thread()
_calls: queue.Queue = queue.Queue()
_plugin_paths: list[str] = []
_context: list[Group] = []
_this: list[Node] = []
_frame = [1]
messages: list[str] = []
progress_log: list[tuple[str, str, object]] = []  # (task title, "message"|"progress", value)
executed: list[tuple[str, int, int]] = []
menus: dict[str, list[tuple]] = {}
cancel_progress = threading.Event()  # set: every ProgressTask reports isCancelled()


def _main_only(what: str) -> None:
    if threading.current_thread() is not _MAIN:
        raise RuntimeError(f"nuke standin: {what} called from thread {threading.current_thread().name!r}; "
                           "Nuke requires the main thread (use nuke.executeInMainThread)")


# --- knobs -----------------------------------------------------------------------------
class Knob:
    def __init__(self, name: str, label: str = "", value=None) -> None:
        self._name, self._label = name, label
        self._value = self._default() if value is None else value

    def _default(self):
        return ""

    def name(self) -> str:
        return self._name

    def label(self) -> str:
        return self._label

    def value(self):
        _main_only(f"knob {self._name}.value()")
        return self._value

    def setValue(self, value) -> bool:
        _main_only(f"knob {self._name}.setValue()")
        self._value = self._convert(value)
        return True

    def _convert(self, value):
        return value

    def fromScript(self, text: str) -> None:
        self._value = self._convert(text)


class String_Knob(Knob):
    def _convert(self, value):
        if not isinstance(value, str):
            raise TypeError(f"{self._name}: expected a string, got {type(value).__name__}")
        return value


class File_Knob(String_Knob):
    pass


class Text_Knob(String_Knob):
    pass


class Int_Knob(Knob):
    def _default(self):
        return 0

    def _convert(self, value):
        if isinstance(value, str):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{self._name}: expected a number, got {value!r}")
        return int(value)


class Boolean_Knob(Knob):
    def _default(self):
        return False

    def _convert(self, value):
        if isinstance(value, str):
            if value not in ("true", "false", "0", "1"):
                raise ValueError(f"{self._name}: not a boolean: {value!r}")
            return value in ("true", "1")
        return bool(value)


class Enumeration_Knob(Knob):
    def __init__(self, name: str, label: str, items: list[str]) -> None:
        self._items = list(items)
        super().__init__(name, label, items[0] if items else "")

    def values(self) -> list[str]:
        return list(self._items)

    def _convert(self, value):
        if isinstance(value, int) and not isinstance(value, bool):
            return self._items[value]
        if value not in self._items:
            raise ValueError(f"{self._name}: {value!r} is not one of {self._items}")
        return value


class Array_Knob(Knob):
    SIZE = 1

    def _default(self):
        return [0.0] * self.SIZE

    def _convert(self, value):
        if isinstance(value, str):
            value = [float(v) for v in nkscript.words(value)]
        if isinstance(value, (int, float)):
            value = [float(value)] * self.SIZE
        value = [float(v) for v in value]
        if len(value) != self.SIZE:
            raise ValueError(f"{self._name}: needs {self.SIZE} values, got {value}")
        return value

    def __init__(self, name: str, label: str = "") -> None:
        super().__init__(name, label)
        self._keys: dict[float, list[float]] = {}

    def value(self, index: int = 0):
        _main_only(f"knob {self._name}.value()")
        return self.getValueAt(_frame[0], index)

    def setValue(self, value, index: int = -1) -> bool:
        _main_only(f"knob {self._name}.setValue()")
        if index == -1:
            self._value = self._convert(value)
        else:
            self._value[self._index(index)] = float(value)
        return True

    def setValueAt(self, value, time, index: int = -1) -> bool:
        _main_only(f"knob {self._name}.setValueAt()")
        values = list(self._keys.get(float(time), self._value))
        if index == -1:
            values = self._convert(value)
        else:
            values[self._index(index)] = float(value)
        self._keys[float(time)] = values
        return True

    def isAnimated(self, index: int = -1) -> bool:
        return bool(self._keys)

    def getValueAt(self, time, index: int = -1):
        _main_only(f"knob {self._name}.getValueAt()")
        values = self._value
        if self._keys:
            before = [t for t in self._keys if t <= time] or [min(self._keys)]
            values = self._keys[max(before)]
        return list(values) if index == -1 else values[self._index(index)]

    def _index(self, index: int) -> int:
        if not 0 <= index < self.SIZE:
            raise IndexError(f"{self._name}: index {index} out of range 0..{self.SIZE - 1}")
        return index


class XY_Knob(Array_Knob):
    SIZE = 2


class BBox_Knob(Array_Knob):
    SIZE = 4

    def x(self):
        return self.value(0)

    def y(self):
        return self.value(1)

    def r(self):
        return self.value(2)

    def t(self):
        return self.value(3)


class Tab_Knob(Knob):
    pass


class PyScript_Knob(Knob):
    def __init__(self, name: str, label: str = "", script: str = "", node: Node | None = None) -> None:
        super().__init__(name, label, script)
        self._node = node

    def execute(self) -> None:
        """Run the button's script as Nuke does: `nuke` in scope, thisNode() = the owner."""
        _main_only(f"button {self._name}.execute()")
        _this.append(self._node)
        try:
            script = compile(self._value, f"<{self._name} button>", "exec")
            exec(script, {"nuke": sys.modules[__name__]})  # noqa: S102 - what Nuke does with a button's script
        finally:
            _this.pop()


class _Button(Knob):
    """A built-in button (Read's reload): execute() calls the node's handler."""

    def __init__(self, name: str, action) -> None:
        super().__init__(name, "")
        self._action = action

    def execute(self) -> None:
        _main_only(f"button {self._name}.execute()")
        self._action()


USER_KNOBS = {1: String_Knob, 2: File_Knob, 3: Int_Knob, 4: Enumeration_Knob, 6: Boolean_Knob, 12: XY_Knob,
              15: BBox_Knob, 20: Tab_Knob, 22: PyScript_Knob, 26: Text_Knob}


# --- nodes -------------------------------------------------------------------------------
class Format:
    def __init__(self, width: int, height: int) -> None:
        self._w, self._h = width, height

    def width(self) -> int:
        return self._w

    def height(self) -> int:
        return self._h


def _builtin(cls: str) -> dict:
    common = {"name": String_Knob, "disable": Boolean_Knob, "xpos": Int_Knob, "ypos": Int_Knob}
    extra = {
        "Read": {"file": File_Knob, "first": Int_Knob, "last": Int_Knob, "origfirst": Int_Knob,
                 "origlast": Int_Knob, "raw": Boolean_Knob, "on_error": lambda n: Enumeration_Knob(
                     n, "", ["error", "black", "checkerboard", "nearest frame"])},
        "Write": {"file": File_Knob, "channels": lambda n: Enumeration_Knob(n, "", ["rgb", "rgba", "alpha"]),
                  "file_type": lambda n: Enumeration_Knob(n, "", [" ", "exr", "png", "jpeg", "dpx", "tiff"])},
        "Copy": {"from0": String_Knob, "to0": String_Knob,
                 "bbox": lambda n: Enumeration_Knob(n, "", ["union", "intersection", "A", "B"])},
        "Input": {"number": Int_Knob}, "Output": {}, "Root": {"first_frame": Int_Knob, "last_frame": Int_Knob},
        "Group": {}, "Constant": {}, "Dot": {},
    }
    if cls not in extra:
        raise RuntimeError(f"nuke standin: unknown node class {cls!r}")
    return {**common, **extra[cls]}


class Node:
    def __init__(self, cls: str, name: str = "") -> None:
        self._class = cls
        self._knobs: dict[str, Knob] = {}
        for key, make in _builtin(cls).items():
            self._knobs[key] = make(key)
        self._knobs["name"]._value = name or cls + "1"
        self._inputs: dict[int, Node | None] = {}
        self._parent: Group | None = None
        self._format = Format(64, 48)
        self._range = (1, 1)
        self._reloads = 0
        self.standin_pixels = None  # test hook: frame -> (H, W, 3) float array
        if cls == "Read":
            self._knobs["reload"] = _Button("reload", self._reload)

    def _reload(self) -> None:
        self._reloads += 1

    def __getitem__(self, name: str) -> Knob:
        _main_only(f"node[{name!r}]")
        if name == "datatype" and self._class == "Write" and self._knobs["file_type"]._value == "exr":
            self._knobs.setdefault("datatype", Enumeration_Knob("datatype", "", ["16 bit half", "32 bit float"]))
        try:
            return self._knobs[name]
        except KeyError:
            raise NameError(f"knob {name} does not exist on {self.name()} ({self._class})") from None

    def knobs(self) -> dict:
        _main_only("node.knobs()")
        return dict(self._knobs)

    def Class(self) -> str:
        return self._class

    def name(self) -> str:
        return self._knobs["name"]._value

    def fullName(self) -> str:
        return f"{self._parent.fullName()}.{self.name()}" if self._parent and self._parent._parent else self.name()

    def input(self, i: int):
        _main_only("node.input()")
        return self._inputs.get(i)

    def setInput(self, i: int, node) -> bool:
        _main_only("node.setInput()")
        self._inputs[i] = node
        return True

    def format(self) -> Format:
        _main_only("node.format()")
        return self._format

    def firstFrame(self) -> int:
        _main_only("node.firstFrame()")
        return self._range[0]

    def lastFrame(self) -> int:
        _main_only("node.lastFrame()")
        return self._range[1]

    def standin_source(self):
        """The node whose standin_pixels feed this one (Input nodes pass through)."""
        node = self
        while node is not None and node.standin_pixels is None:
            if node._class == "Input" and node._parent is not None:  # a group's Input: the group's input
                node = node._parent.input(node._knobs["number"]._value)
            else:
                node = node.input(0)
        return node


class Group(Node):
    def __init__(self, name: str = "") -> None:
        super().__init__("Group", name)
        self._children: list[Node] = []

    def node(self, name: str):
        _main_only("group.node()")
        return next((n for n in self._children if n.name() == name), None)

    def nodes(self) -> list:
        _main_only("group.nodes()")
        return list(self._children)

    def begin(self) -> Group:
        _main_only("group.begin()")
        _context.append(self)
        return self

    def end(self) -> None:
        _context.pop()

    def __enter__(self) -> Self:
        return self.begin()

    def __exit__(self, *exc) -> None:
        self.end()

    def _add(self, node: Node) -> Node:
        node._parent = self
        self._children.append(node)
        return node


_root = Group("Root")
_root._class = "Root"
_root._knobs.update(first_frame=Int_Knob("first_frame"), last_frame=Int_Knob("last_frame"))
_root._knobs["name"]._value = "/shots/sh010/comp_v001.nk"


def root() -> Group:
    return _root


class _Nodes:
    def __getattr__(self, cls: str):
        def make(**knobs):
            _main_only(f"nuke.nodes.{cls}()")
            node = Node(cls)
            parent = _context[-1] if _context else _root
            taken = {n.name() for n in parent._children}
            k = 1
            while f"{cls}{k}" in taken:
                k += 1
            node._knobs["name"]._value = f"{cls}{k}"
            for key, value in knobs.items():
                node[key].setValue(value)
            return parent._add(node)
        return make


nodes = _Nodes()


def pluginAddPath(path: str) -> None:
    _plugin_paths.insert(0, path)
    if path not in sys.path:
        sys.path.insert(0, path)


def createNode(cls: str, knobs: str = "", inpanel: bool = True):
    """Only gizmos found on the plugin path (the test's concern)."""
    _main_only("nuke.createNode()")
    for folder in _plugin_paths:
        path = os.path.join(folder, f"{cls}.gizmo")
        if os.path.exists(path):
            return standin_load_gizmo(path, cls)
    raise RuntimeError(f"{cls}: unknown command")


def standin_load_gizmo(path: str, cls: str):
    with open(path) as fh:
        blocks = nkscript.parse(fh.read())
    head, children = blocks[0], blocks[1:]
    group = Group()
    group._class = cls
    for uk in head.user_knobs:
        if uk.name in group._knobs:
            raise RuntimeError(f"{cls}: knob {uk.name} defined twice")
        make = USER_KNOBS.get(uk.code)
        if make is None:
            raise RuntimeError(f"{cls}: knob type {uk.code} not in the standin")
        if make is Enumeration_Knob:
            knob = make(uk.name, uk.label, uk.items)
        elif make is PyScript_Knob:
            knob = make(uk.name, uk.label, uk.text, group)
        else:
            knob = make(uk.name, uk.label)
            if make is Text_Knob:
                knob._value = uk.text
        group._knobs[uk.name] = knob
    for key, value in head.values:
        if key in ("inputs", "help", "tile_color"):
            continue
        group[key].fromScript(value)
    taken = {n.name() for n in _root._children}
    k = 1
    while f"{cls}{k}" in taken:
        k += 1
    group._knobs["name"]._value = f"{cls}{k}"
    for block in children:
        child = Node(block.cls)
        for key, value in block.values:
            if key != "inputs":
                child[key].fromScript(value)
        group._add(child)
    return _root._add(group)


def delete(node) -> None:
    _main_only("nuke.delete()")
    node._parent._children.remove(node)


def execute(node, start: int, end: int, incr: int = 1, views=None) -> None:
    """Render a Write: writes EXRs from the upstream node's standin_pixels."""
    _main_only("nuke.execute()")
    if node._class != "Write":
        raise RuntimeError(f"{node.name()} cannot be executed")
    source = node.input(0).standin_source() if node.input(0) is not None else None
    if source is None:
        raise RuntimeError(f"{node.name()}: nothing to render (no pixels upstream)")
    from mam2_server.io import write_image
    pattern = node._knobs["file"]._value
    for frame in range(start, end + 1, incr):
        write_image(pattern % frame if "%" in pattern else pattern, source.standin_pixels(frame), pixel_type="float")
    executed.append((node.name(), start, end))


def frame(value: int | None = None) -> int:
    _main_only("nuke.frame()")
    if value is not None:
        _frame[0] = int(value)
    return _frame[0]


def thisNode():
    _main_only("nuke.thisNode()")
    if not _this:
        raise RuntimeError("nuke.thisNode(): no node context")
    return _this[-1]


def message(text: str) -> None:
    _main_only("nuke.message()")
    messages.append(text)


def executeInMainThread(call, args=(), kwargs=None) -> None:
    if not isinstance(args, tuple):
        raise TypeError("executeInMainThread: args must be a tuple")
    _calls.put((call, args, kwargs or {}))


def executeInMainThreadWithResult(call, args=(), kwargs=None):
    if threading.current_thread() is _MAIN:
        raise RuntimeError("executeInMainThreadWithResult from the main thread deadlocks Nuke")
    done = threading.Event()
    box = {}

    def run():
        box["value"] = call(*args, **(kwargs or {}))
        done.set()
    _calls.put((run, (), {}))
    done.wait()
    return box["value"]


class ProgressTask:
    def __init__(self, message: str) -> None:
        self._title = message
        progress_log.append((message, "start", None))

    def setMessage(self, message: str) -> None:
        if not isinstance(message, str):
            raise TypeError("ProgressTask.setMessage takes a str")
        progress_log.append((self._title, "message", message))

    def setProgress(self, value: int) -> None:
        if not isinstance(value, int) or not 0 <= value <= 100:
            raise ValueError(f"ProgressTask.setProgress takes an int 0..100, got {value!r}")
        progress_log.append((self._title, "progress", value))

    def isCancelled(self) -> bool:
        return cancel_progress.is_set()


class _Menu:
    def __init__(self, name: str) -> None:
        self._name = name

    def addCommand(self, name: str, command, shortcut: str = "", icon: str = "", **kwargs):
        menus.setdefault(self._name, []).append((name, command))


def menu(name: str) -> _Menu:
    _main_only("nuke.menu()")
    return _Menu(name)


# --- test control ----------------------------------------------------------------------------
def standin_pump(until=lambda: False, timeout: float = 10.0) -> None:
    """Run queued main-thread calls (Nuke's event loop) until `until()` or the timeout (TimeoutError)."""
    _main_only("standin_pump")
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise TimeoutError("standin_pump: condition not met in time")
        try:
            call, args, kwargs = _calls.get(timeout=0.02)
        except queue.Empty:
            continue
        call(*args, **kwargs)


def standin_reset() -> None:
    global GUI
    GUI = True
    messages.clear()
    progress_log.clear()
    executed.clear()
    cancel_progress.clear()
    _root._children.clear()
    _frame[0] = 1
