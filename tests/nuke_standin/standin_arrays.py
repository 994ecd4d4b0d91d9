"""Array knobs (XY, BBox) and formats of the `nuke` stand-in.

Modelled on Foundry's dev guide "Animation": keys only after setAnimated(); once animated,
setValue() keys the current frame; getValueAt(t, i) evaluates keys (step-held between keys
here, Nuke interpolates) and expressions (setExpression / `{{...}}` in a script) at t;
isAnimated() is also true for expressions.
"""
from __future__ import annotations

import re

import nkscript
import standin_eval
import standin_state as S
from standin_knobs import Knob, Numeric


class Format:
    def __init__(self, width: int, height: int, name: str = "") -> None:
        self._w, self._h, self._name = int(width), int(height), name

    def width(self) -> int:
        return self._w

    def height(self) -> int:
        return self._h

    def name(self) -> str:
        return self._name

    def __eq__(self, other) -> bool:
        return isinstance(other, Format) and (self._w, self._h) == (other._w, other._h)

    def __repr__(self) -> str:
        return f"Format({self._w}, {self._h})"


class Format_Knob(Knob):
    def _default(self):
        return Format(64, 48)

    def _convert(self, value):
        if isinstance(value, Format):
            return value
        if isinstance(value, str):
            w = nkscript.words(value)
            if len(w) >= 2 and w[0].isdigit():
                return Format(int(w[0]), int(w[1]))
        raise TypeError(f"{self._name}: expected a nuke.Format, got {value!r}")


class Array_Knob(Numeric):
    SIZE = 1

    def __init__(self, name: str, label: str = "") -> None:
        super().__init__(name, label)
        self._keys: dict[float, list[float]] | None = None  # None: not animated

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

    def fromScript(self, text: str) -> bool:
        parts = re.findall(r"\{[^{}]*\}|\S+", text)
        if any(p.startswith("{") for p in parts):  # {expr} per index
            for i, p in enumerate(parts):
                if p.startswith("{"):
                    self._expr[i] = " ".join(nkscript.words(p[1:-1]))
                else:
                    self._value[i] = float(p)
        else:
            self._value = self._convert(text)
        return True

    def setAnimated(self, index: int = -1) -> bool:
        """Keys can be set from now on; the current value becomes a key at the current frame."""
        self._live("setAnimated()")
        if self._keys is None:
            self._keys = {float(S.frame[0]): list(self._value)}
        return True

    def isAnimated(self, index: int = -1) -> bool:
        self._live("isAnimated()")
        return self._keys is not None or bool(self._expr)

    def isKeyAt(self, time, index: int = -1) -> bool:
        self._live("isKeyAt()")
        return self._keys is not None and float(time) in self._keys

    def removeKeyAt(self, time, index: int = -1) -> bool:
        self._live("removeKeyAt()")
        if self._keys is None or float(time) not in self._keys or len(self._keys) == 1:
            return False
        del self._keys[float(time)]
        return True

    def value(self, index: int = 0):
        self._live("value()")
        return self._at(S.frame[0], self._index(index))

    def getValue(self, index: int = 0):
        return self.value(index)

    def setValue(self, value, index: int = -1) -> bool:
        self._live("setValue()")
        if self._keys is not None:  # animated: keys the current frame
            return self.setValueAt(value, S.frame[0], index)
        if index == -1:
            self._value = self._convert(value)
        else:
            self._value[self._index(index)] = float(value)
        return True

    def setValueAt(self, value, time, index: int = -1) -> bool:
        self._live("setValueAt()")
        if self._keys is None:
            raise RuntimeError(f"nuke standin: {self._name}.setValueAt() before setAnimated() "
                               "(Nuke's dev guide: a knob must be set to accept animation)")
        values = self._held(float(time))
        if index == -1:
            values = self._convert(value)
        else:
            if not isinstance(value, (int, float)):
                raise TypeError(f"{self._name}: setValueAt with an index takes one number")
            values[self._index(index)] = float(value)
        self._keys[float(time)] = values
        return True

    def _held(self, time: float) -> list[float]:
        if not self._keys:
            return list(self._value)
        before = [t for t in self._keys if t <= time] or [min(self._keys)]
        return list(self._keys[max(before)])

    def _at(self, time, index: int = 0):
        if index in self._expr:
            return standin_eval.expression(self._expr[index], time, self._resolve)
        return self._held(float(time))[index]

    def getValueAt(self, time, index: int = 0):
        self._live("getValueAt()")
        return self._at(time, self._index(index))

    def _index(self, index: int) -> int:
        if not 0 <= index < self.SIZE:
            raise IndexError(f"{self._name}: index {index} out of range 0..{self.SIZE - 1}")
        return index


class XY_Knob(Array_Knob):
    SIZE = 2


class BBox_Knob(Array_Knob):
    SIZE = 4
