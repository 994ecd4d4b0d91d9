"""Knobs of the `nuke` stand-in, strict where Nuke is (main thread only, types, deleted nodes).

Behaviours modelled on Foundry's Python API reference and dev guide ("Animation"):
* a knob of a deleted node raises ValueError("A PythonObject is not attached to a node");
* numbers can be expressions (setExpression / `{{...}}` in a script), evaluated at the frame
  asked; Array knobs and their animation are in standin_arrays;
* File_Knob.value() is the raw text with #### normalised to %04d; evaluate() expands TCL and
  the frame number (current frame); String_Knob.value() expands TCL, getText() does not;
* Enumeration items can be replaced with setValues(); Link_Knob (type 41) forwards to the
  knob it links.
"""
from __future__ import annotations

import re
import sys

import nkscript
import standin_eval
import standin_state as S

HASHES = re.compile(r"#+")


class Knob:
    def __init__(self, name: str, label: str = "", value=None) -> None:
        self._name, self._label = name, label
        self._owner = None  # the node, set when attached
        self._value = self._default() if value is None else value

    def _default(self):
        return ""

    def _live(self, what: str) -> None:
        S.main_only(f"knob {self._name}.{what}")
        if self._owner is not None and not self._owner._alive:
            raise ValueError(S.NOT_ATTACHED)

    def name(self) -> str:
        self._live("name()")
        return self._name

    def label(self) -> str:
        return self._label

    def node(self):
        self._live("node()")
        return self._owner

    def value(self):
        self._live("value()")
        return self._value

    getValue = value

    def setValue(self, value) -> bool:
        self._live("setValue()")
        self._value = self._convert(value)
        return True

    def _convert(self, value):
        return value

    def fromScript(self, text: str) -> bool:
        self._value = self._convert(text)
        return True


class String_Knob(Knob):
    def _convert(self, value):
        if not isinstance(value, str):
            raise TypeError(f"{self._name}: expected a string, got {type(value).__name__}")
        return value

    def getText(self) -> str:
        self._live("getText()")
        return self._value

    def value(self) -> str:
        self._live("value()")
        return self._tcl(self._value)

    getValue = value

    def _tcl(self, text: str) -> str:
        return standin_eval.tcl(text, lambda name: _resolve_text(self._owner, name))


class EvalString_Knob(String_Knob):
    def evaluate(self) -> str:
        self._live("evaluate()")
        return self._tcl(self._value)


class File_Knob(EvalString_Knob):
    def value(self) -> str:  # raw text, sequences in technical notation
        self._live("value()")
        return HASHES.sub(lambda m: f"%0{len(m.group(0))}d", self._value)

    getValue = value

    def evaluate(self) -> str:  # TCL expanded and the current frame's number
        self._live("evaluate()")
        text = self._tcl(HASHES.sub(lambda m: f"%0{len(m.group(0))}d", self._value))
        return text % S.frame[0] if "%" in text else text


class Text_Knob(String_Knob):
    def value(self) -> str:
        self._live("value()")
        return self._value


class Numeric(Knob):
    """Int, Bool and Double: values that may be an expression ({{...}} in a script)."""

    def __init__(self, name: str, label: str = "", value=None) -> None:
        super().__init__(name, label, value)
        self._expr: dict[int, str] = {}

    def fromScript(self, text: str) -> bool:
        if text.startswith("{") and text.endswith("}"):  # {{expr}} in the script: an expression
            self._expr[0] = " ".join(nkscript.words(nkscript.words(text)[0]))
        else:
            self._value = self._convert(text)
        return True

    def setExpression(self, expr: str, index: int = 0) -> bool:
        self._live("setExpression()")
        self._expr[index] = expr
        return True

    def hasExpression(self, index: int = -1) -> bool:
        self._live("hasExpression()")
        return bool(self._expr) if index == -1 else index in self._expr

    def _at(self, time, index: int = 0):
        if index in self._expr:
            return self._convert(standin_eval.expression(self._expr[index], time, self._resolve))
        return self._value

    def _resolve(self, name: str, field, time):
        return _resolve_number(self._owner, name, field, time)

    def value(self):
        self._live("value()")
        return self._at(S.frame[0])

    getValue = value

    def getValueAt(self, time, index: int = 0):
        self._live("getValueAt()")
        return self._at(time, index)


class Int_Knob(Numeric):
    def _default(self):
        return 0

    def _convert(self, value):
        if isinstance(value, str):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{self._name}: expected a number, got {value!r}")
        return int(value)


class Double_Knob(Int_Knob):
    def _default(self):
        return 0.0

    def _convert(self, value):
        return float(super()._convert(value)) if not isinstance(value, float) else value


class Boolean_Knob(Numeric):
    def _default(self):
        return False

    def _convert(self, value):
        if isinstance(value, str):
            if value not in ("true", "false", "0", "1"):
                raise ValueError(f"{self._name}: not a boolean: {value!r}")
            return value in ("true", "1")
        return bool(value)


class Enumeration_Knob(Knob):
    def __init__(self, name: str, label: str = "", items=()) -> None:
        self._items = list(items)
        super().__init__(name, label, self._items[0] if self._items else "")

    def values(self) -> list[str]:
        self._live("values()")
        return list(self._items)

    def setValues(self, items) -> None:
        self._live("setValues()")
        self._items = [str(i) for i in items]
        if self._value not in self._items:
            self._value = self._items[0] if self._items else ""

    def getValue(self) -> float:  # Nuke: the index, as a float
        self._live("getValue()")
        return float(self._items.index(self._value)) if self._value in self._items else 0.0

    def _convert(self, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self._items[int(value)]
        if value not in self._items:
            raise ValueError(f"{self._name}: {value!r} is not one of {self._items}")
        return value


class Channel_Knob(String_Knob):
    """One channel, `layer.channel` (e.g. rgba.alpha, or a new layer such as mam2.matte)."""

    def value(self) -> str:
        self._live("value()")
        return self._value

    def _convert(self, value):
        value = super()._convert(value)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"{self._name}: {value!r} is not a channel (layer.channel)")
        return value


class Tab_Knob(Knob):
    pass


class PyScript_Knob(Knob):
    def execute(self) -> None:
        """Run the button's script as Nuke does: `nuke` in scope, thisNode() = the owner."""
        self._live("execute()")
        S.this.append(self._owner)
        try:
            exec(compile(self._value, f"<{self._name} button>", "exec"), {"nuke": sys.modules["nuke"]})  # noqa: S102
        finally:
            S.this.pop()


class Button(Knob):
    """A built-in button (Read's reload): execute() calls the node's handler."""

    def __init__(self, name: str, action) -> None:
        super().__init__(name, "")
        self._action = action

    def execute(self) -> None:
        self._live("execute()")
        self._action()


class Link_Knob(Knob):
    """Type 41: shows a knob of a node inside the group (`T Node.knob`)."""

    def getLinkedKnob(self):
        self._live("getLinkedKnob()")
        node_name, knob_name = self._value.rsplit(".", 1)
        return self._owner.node(node_name)[knob_name]

    def value(self):
        return self.getLinkedKnob().value()

    def setValue(self, value) -> bool:
        return self.getLinkedKnob().setValue(value)



def _lookup(node, name: str):
    """The knob `name` as seen from `node`: root.k, parent.k, k (this node, then its group), Node.k."""
    import standin_nodes as N
    parts = name.split(".")
    if parts[0] == "root":
        return N.root()._knobs[parts[1]]
    if parts[0] == "parent":
        return node._parent._knobs[parts[1]]
    if len(parts) == 1:
        for holder in (node, node._parent):
            if holder is not None and parts[0] in holder._knobs:
                return holder._knobs[parts[0]]
    else:
        scope = node._parent if node._parent is not None else N.root()
        other = next((n for n in scope._children if n._knobs["name"]._value == parts[0]), None)
        if other is not None and parts[1] in other._knobs:
            return other._knobs[parts[1]]
    raise RuntimeError(f"nuke standin: cannot resolve {name!r} from {node._knobs['name']._value}")


def _resolve_text(node, name: str) -> str:
    knob = _lookup(node, name)
    return knob._value if isinstance(knob._value, str) else str(knob._at(S.frame[0]))


def _resolve_number(node, name: str, field, time) -> float:
    knob = _lookup(node, name)
    return float(knob._at(time, field or 0) if isinstance(knob, Numeric) else knob._value)
