"""A strict stand-in for Nuke's `nuke` module, for tests only: the API the MAM2 adapter uses.

Faithful where the adapter relies on a behaviour, strict where Nuke punishes misuse; each
behaviour follows Foundry's Python API reference / dev guide (learn.foundry.com/nuke/developers):
* knobs, nodes, nuke.message/execute/frame/thisNode only from the main thread (RuntimeError);
  executeInMainThreadWithResult from the main thread raises (in Nuke it deadlocks);
* a deleted node (nuke.delete, or every node after scriptClose) raises
  ValueError("A PythonObject is not attached to a node") from any method;
* createNode of a gizmo file whose body is `Group {...}` gives a Group (Class() "Group");
* pluginAddPath(path) puts path first on the plugin path and on sys.path (and runs its init.py);
* filename(node[, REPLACE]): the file knob (the proxy one in proxy mode when set) with TCL
  expanded, %04d kept, or replaced by the current frame with REPLACE;
* execute(write, first, last) renders through the graph (standin_render) at proxy size in proxy
  mode, and raises RuntimeError as Nuke does for a failed render;
* Write's `datatype` knob exists only once `file_type` is exr;
* unknown knob names raise NameError, as node['x'] does; Enumeration values are checked.
Calls queued with executeInMainThread run when the test calls `standin_pump()` (Nuke's event
loop). Test hooks are named standin_*.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
import traceback

import nkscript
import standin_nodes as N
import standin_render as R
import standin_state as S
from standin_arrays import BBox_Knob, Format, XY_Knob
from standin_knobs import (Boolean_Knob, Double_Knob, Enumeration_Knob, File_Knob, Int_Knob, Knob, Link_Knob,
                           PyScript_Knob, String_Knob, Tab_Knob, Text_Knob)
from standin_nodes import Group, Node, root  # noqa: F401

GUI = True
REPLACE = 1  # nuke.filename flag: replace %04d with the current frame
_calls: queue.Queue = queue.Queue()
_plugin_paths: list[str] = []
_on_script_close: list = []
messages: list[str] = []
progress_log: list[tuple[str, str, object]] = []  # (task title, "start"|"message"|"progress", value)
executed: list[tuple[str, int, int]] = []
menus: dict[str, list[tuple]] = {}
cancel_progress = threading.Event()  # set: every ProgressTask reports isCancelled()
USER_KNOBS = {1: String_Knob, 2: File_Knob, 3: Int_Knob, 4: Enumeration_Knob, 6: Boolean_Knob, 7: Double_Knob,
              12: XY_Knob, 15: BBox_Knob, 20: Tab_Knob, 22: PyScript_Knob, 26: Text_Knob, 41: Link_Knob}


class _Nodes:
    def __getattr__(self, cls: str):
        def make(**knobs):
            S.main_only(f"nuke.nodes.{cls}()")
            parent = S.context[-1] if S.context else N.root()
            node = parent._add(Node(cls))
            for key, value in knobs.items():
                node[key].setValue(value)
            return node
        return make


nodes = _Nodes()


def pluginAddPath(args, addToSysPath: bool = True) -> None:
    for path in args if isinstance(args, list) else [args]:
        if path in _plugin_paths:
            _plugin_paths.remove(path)
        _plugin_paths.insert(0, path)
        if addToSysPath and path not in sys.path:
            sys.path.insert(0, path)


def pluginPath() -> list[str]:
    return list(_plugin_paths)


def createNode(cls: str, knobs: str = "", inpanel: bool = True):
    """Only gizmos found on the plugin path (the test's concern)."""
    S.main_only("nuke.createNode()")
    for folder in _plugin_paths:
        path = os.path.join(folder, f"{cls}.gizmo")
        if os.path.exists(path):
            return standin_load_gizmo(path, cls)
    raise RuntimeError(f"{cls}: unknown command")


def standin_load_gizmo(path: str, cls: str):
    with open(path) as fh:
        blocks = nkscript.parse(fh.read())
    head = blocks[0]
    if head.cls not in ("Group", "Gizmo"):
        raise RuntimeError(f"{path}: a gizmo file holds a Group or Gizmo, not {head.cls}")
    group = Group(cls, cls="Group" if head.cls == "Group" else cls)
    for uk in head.user_knobs:
        if uk.name in group._knobs:
            raise RuntimeError(f"{cls}: knob {uk.name} defined twice")
        make = USER_KNOBS.get(uk.code)
        if make is None:
            raise RuntimeError(f"{cls}: knob type {uk.code} not in the standin")
        if make is Enumeration_Knob:
            knob = make(uk.name, uk.label, uk.items)
        else:
            knob = make(uk.name, uk.label)
            if uk.text:
                knob._value = uk.text
        group._attach(knob)
    for key, value in head.values:
        if key not in ("inputs", "help", "tile_color", "name"):
            group[key].fromScript(value)
    made = []
    for block in blocks[1:]:
        child = Node(block.cls)
        for key, value in block.values:
            if key != "inputs":
                child[key].fromScript(value)
        made.append(group._add(child))
    for child, block in zip(made, blocks[1:]):
        for i, src in enumerate(block.inputs):
            child._inputs[i] = made[src - 1] if src is not None else None
    parent = S.context[-1] if S.context else N.root()
    return parent._add(group)


def delete(node) -> None:
    S.main_only("nuke.delete()")
    node._live("delete")
    N.kill(node)


def allNodes(filter: str | None = None, group=None, recurseGroups: bool = False) -> list:  # noqa: A002
    S.main_only("nuke.allNodes()")
    found = N.walk(group or (S.context[-1] if S.context else N.root()), recurseGroups)
    return [n for n in found if filter is None or n._class == filter]


def toNode(name: str):
    S.main_only("nuke.toNode()")
    node = N.root()
    for part in name.split("."):
        node = next((n for n in getattr(node, "_children", ()) if n._knobs["name"]._value == part), None)
        if node is None:
            return None
    return node


def addOnScriptClose(call, args=(), kwargs=None, nodeClass: str = "Root") -> None:
    _on_script_close.append((call, args, kwargs or {}))


def scriptClose() -> None:
    """Close the script: the onScriptClose callbacks run, then every node is gone."""
    S.main_only("nuke.scriptClose()")
    for call, args, kwargs in list(_on_script_close):
        call(*args, **kwargs)
    for node in list(N.root()._children):
        N.kill(node)
    N.reset_root()


def filename(node, flags: int = 0):
    S.main_only("nuke.filename()")
    node._live("filename")
    k = node._knobs
    knob = "proxy" if N.proxy_scale() != 1 and k.get("proxy") and k["proxy"]._value else "file"
    if knob not in k or not k[knob]._value:
        return None
    if flags == REPLACE:
        return R.file_path(node, knob, S.frame[0])
    return k[knob]._tcl(R.HASHES.sub(lambda m: f"%0{len(m.group(0))}d", k[knob]._value))


def script_directory() -> str:
    """The saved script's folder ('' for an unsaved script), as Nuke's nuke.script_directory()."""
    name = N.root()._knobs["name"]._value
    return os.path.dirname(name) if name else ""


def execute(node, start: int, end: int, incr: int = 1, views=None, continueOnError: bool = False) -> None:
    """Render a Write (a RuntimeError for any failure, as Nuke raises for a failed render)."""
    S.main_only("nuke.execute()")
    node._live("execute")
    if node._class != "Write":
        raise RuntimeError(f"{node.name()} cannot be executed")
    try:
        R.execute(node, start, end, incr)
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"{node.name()}: {exc}") from None
    executed.append((node.name(), start, end))


def frame(value: int | None = None) -> int:
    S.main_only("nuke.frame()")
    if value is not None:
        S.frame[0] = int(value)
    return S.frame[0]


def thisNode():
    S.main_only("nuke.thisNode()")
    if not S.this:
        raise RuntimeError("nuke.thisNode(): no node context")
    return S.this[-1]


def message(text: str) -> None:
    S.main_only("nuke.message()")
    messages.append(text)


def executeInMainThread(call, args=(), kwargs=None) -> None:
    if not isinstance(args, tuple):
        raise TypeError("executeInMainThread: args must be a tuple")
    _calls.put((call, args, kwargs or {}))


def executeInMainThreadWithResult(call, args=(), kwargs=None):
    if threading.current_thread() is S.MAIN:
        raise RuntimeError("executeInMainThreadWithResult from the main thread deadlocks Nuke")
    done, box = threading.Event(), {}

    def run():
        try:
            box["value"] = call(*args, **(kwargs or {}))
        except Exception:  # not documented to reach the caller: the stand-in prints it and returns None
            traceback.print_exc()
        finally:
            done.set()
    _calls.put((run, (), {}))
    done.wait()
    return box.get("value")


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
    S.main_only("nuke.menu()")
    return _Menu(name)


# --- test control ----------------------------------------------------------------------------------
def standin_pump(until=lambda: False, timeout: float = 10.0) -> None:
    """Run queued main-thread calls (Nuke's event loop) until `until()` or the timeout (TimeoutError)."""
    S.main_only("standin_pump")
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise TimeoutError("standin_pump: condition not met in time")
        try:
            call, args, kwargs = _calls.get(timeout=0.02)
        except queue.Empty:
            continue
        call(*args, **kwargs)


def standin_render(node, frame: int) -> dict:
    """What the node outputs at `frame`: {"rgba.red": (H, W), ...} (rows top-down, as files are)."""
    return R.render(node, frame)


def standin_reset(script: str = "") -> None:
    global GUI
    GUI = True
    messages.clear()
    progress_log.clear()
    executed.clear()
    cancel_progress.clear()
    for node in list(N.root()._children):
        N.kill(node)
    N.reset_root(script)
    S.frame[0] = 1
