"""Array knobs (XY, BBox) and formats of the `nuke` stand-in.

Modelled on Foundry's dev guide "Animation" and the Array_Knob reference, per channel (index):
keys only after setAnimated(channel) (-1, the default: every channel); once a channel is
animated, setValue() keys it at the current frame; getValueAt(t, i) evaluates keys (step-held
between keys here, Nuke interpolates) and expressions (setExpression / `{{...}}` in a script)
at t; isAnimated(channel) is true for a channel with keys or an expression (-1: any channel).
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
        self._curves: dict[int, dict[float, float]] = {}  # animated channel -> {time: key value}

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

    def _channels(self, index: int) -> list[int]:
        return list(range(self.SIZE)) if index == -1 else [self._index(index)]

    def setAnimated(self, index: int = -1) -> bool:
        """Keys can be set on the channel (-1: every channel) from now on; its current value becomes a key at
        the current frame. An already animated channel keeps its keys."""
        self._live("setAnimated()")
        for i in self._channels(index):
            if i not in self._curves:
                self._curves[i] = {float(S.frame[0]): self._at(S.frame[0], i)}
        return True

    def isAnimated(self, index: int = -1) -> bool:
        """The channel has keys or an expression; -1: any channel has."""
        self._live("isAnimated()")
        if index == -1:
            return bool(self._curves) or bool(self._expr)
        return self._index(index) in self._curves or index in self._expr

    def isKeyAt(self, time, index: int = -1) -> bool:
        self._live("isKeyAt()")
        return any(float(time) in self._curves.get(i, {}) for i in self._channels(index))

    def removeKeyAt(self, time, index: int = -1) -> bool:
        self._live("removeKeyAt()")
        removed = False
        for i in self._channels(index):
            curve = self._curves.get(i, {})
            if float(time) in curve and len(curve) > 1:
                del curve[float(time)]
                removed = True
        return removed

    def value(self, index: int = 0):
        self._live("value()")
        return self._at(S.frame[0], self._index(index))

    def getValue(self, index: int = 0):
        return self.value(index)

    def setValue(self, value, index: int = -1) -> bool:
        """Sets the channel (-1: every channel); an animated channel is keyed at the current frame."""
        self._live("setValue()")
        values = self._convert(value) if index == -1 else None
        for i in self._channels(index):
            v = values[i] if values is not None else float(value)
            if i in self._curves:
                self._curves[i][float(S.frame[0])] = v
            else:
                self._value[i] = v
        return True

    def setValueAt(self, value, time, index: int = -1) -> bool:
        self._live("setValueAt()")
        channels = self._channels(index)
        still = [i for i in channels if i not in self._curves]
        if still:
            raise RuntimeError(f"nuke standin: {self._name}.setValueAt() on channel(s) {still} before setAnimated() "
                               "(Nuke's dev guide: a knob must be set to accept animation)")
        if index == -1:
            values = self._convert(value)
        else:
            if not isinstance(value, (int, float)):
                raise TypeError(f"{self._name}: setValueAt with an index takes one number")
            values = {channels[0]: float(value)}
        for i in channels:
            self._curves[i][float(time)] = values[i]
        return True

    def _at(self, time, index: int = 0):
        if index in self._expr:
            return standin_eval.expression(self._expr[index], time, self._resolve)
        curve = self._curves.get(index)
        if not curve:
            return self._value[index]
        before = [t for t in curve if t <= float(time)] or [min(curve)]
        return curve[max(before)]

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
