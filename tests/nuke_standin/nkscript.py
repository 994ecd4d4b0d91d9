"""A small reader of Nuke's .nk/.gizmo text (TCL-like words): enough for gizmos/MAM2.gizmo.

parse(text) -> [NodeBlock]: the first block is the Group (its `user_knobs` from
addUserKnob), the following ones its children up to `end_group`. Children are wired
as Nuke's script stack does: a node with `inputs N` (default 1; 0 for Read/Input/
Constant) pops input 0 from the top of the stack, then input 1, ...; `set V [stack 0]`
names the top, `push $V` pushes it again, `push 0` pushes "no input".
"""
from __future__ import annotations

from dataclasses import dataclass, field

FLAG_ARGS = {"l", "t", "T", "M", "n"}


@dataclass
class UserKnob:
    code: int
    name: str
    label: str = ""
    tooltip: str = ""
    text: str = ""  # T: a Python button's script, a Text knob's text
    items: list[str] = field(default_factory=list)  # M: Enumeration items
    flags: list[str] = field(default_factory=list)


@dataclass
class NodeBlock:
    cls: str
    values: list[tuple[str, str]]  # (knob, raw value) in file order
    user_knobs: list[UserKnob] = field(default_factory=list)
    inputs: list[int | None] = field(default_factory=list)  # input i: index of the source block (or None)

    def value(self, name: str) -> str | None:
        return dict(self.values).get(name)


def words(text: str) -> list[str]:
    """Split into words: {braced} (outer braces removed), "quoted" (escapes applied) or bare."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#" and (i == 0 or text[i - 1] == "\n"):
            i = text.find("\n", i) if "\n" in text[i:] else n
        elif c == "{":
            depth, j = 1, i + 1
            while depth:
                if j >= n:
                    raise ValueError("unbalanced {")
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            out.append(text[i + 1:j - 1])
            i = j
        elif c == '"':
            j, buf = i + 1, []
            while text[j] != '"':
                if text[j] == "\\":
                    j += 1
                    buf.append({"n": "\n", "t": "\t"}.get(text[j], text[j]))
                else:
                    buf.append(text[j])
                j += 1
            out.append("".join(buf))
            i = j + 1
        elif c == "}":
            raise ValueError(f"unexpected }} at {i}")
        else:
            j = i
            while j < n and not text[j].isspace():
                j += 1
            out.append(text[i:j])
            i = j
    return out


def user_knob(body: str) -> UserKnob:
    w = words(body)
    knob = UserKnob(code=int(w[0]), name=w[1])
    i = 2
    while i < len(w):
        if w[i] in FLAG_ARGS:
            arg = w[i + 1]
            if w[i] == "l":
                knob.label = arg
            elif w[i] == "t":
                knob.tooltip = arg
            elif w[i] == "T":
                knob.text = arg
            elif w[i] == "M":
                knob.items = words(arg)
            i += 2
        else:
            knob.flags.append(w[i])
            i += 1
    return knob


NO_INPUT_CLASSES = {"Read", "Input", "Constant", "Roto"}


def parse(text: str) -> list[NodeBlock]:
    w = words(text)
    blocks: list[NodeBlock] = []
    stack: list[int | None] = []
    names: dict[str, int | None] = {}
    i = 0
    while i < len(w):
        if w[i] == "version":
            i += 2
        elif w[i] == "set":  # set NAME [stack 0]
            names[w[i + 1]] = stack[-1]
            i += 2
            while not w[i].endswith("]"):
                i += 1
            i += 1
        elif w[i] == "push":
            stack.append(None if w[i + 1] == "0" else names[w[i + 1].lstrip("$")])
            i += 2
        elif w[i] == "end_group":
            break
        else:
            cls, body = w[i], w[i + 1]
            pairs = words(body)
            if len(pairs) % 2:
                raise ValueError(f"{cls}: odd number of words in its body")
            block = NodeBlock(cls, [])
            for key, value in zip(pairs[::2], pairs[1::2]):
                if key == "addUserKnob":
                    block.user_knobs.append(user_knob(value))
                else:
                    block.values.append((key, value))
            if blocks:  # the group itself is not on its own stack
                count = int(block.value("inputs") or (0 if cls in NO_INPUT_CLASSES else 1))
                block.inputs = [stack.pop() if stack else None for _ in range(count)]
                stack.append(len(blocks))
            blocks.append(block)
            i += 2
    return blocks
