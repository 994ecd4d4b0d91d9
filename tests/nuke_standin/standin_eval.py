"""The two small languages the stand-in evaluates: TCL in string knobs, Nuke expressions in numbers.

TCL: `[value root.name]`, `[value knob]`, `[file dirname ...]`, `[file tail ...]`, `[python {expr}]`
(a Python expression with `nuke` in scope: what Nuke's "Script Directory" button writes into the
project directory), nested; any other command raises as Nuke does (an error on the knob).
Expressions (Nuke's own language, not Python): numbers, `frame`/`t`, `+ - * / ( )`, comparisons,
`!`, `&&`, `||`, and knob references `knob`, `parent.knob`, `root.knob`, `Node.knob`, each with
an optional `.x/.y/.r/.t` or index field, evaluated at the asked frame.
"""
from __future__ import annotations

import ast
import operator
import posixpath
import re

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
FIELDS = {"x": 0, "y": 1, "r": 2, "t": 3, "w": 0, "h": 1}


# --- TCL -------------------------------------------------------------------------------------------
def tcl(text: str, resolve) -> str:
    """Expand [commands] in `text`; resolve(name) -> the value of knob `name` as a string."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "[":
            depth, j = 1, i + 1
            while depth:
                if j >= len(text):
                    raise RuntimeError(f"TCL: missing close-bracket in {text!r}")
                depth += {"[": 1, "]": -1}.get(text[j], 0)
                j += 1
            out.append(_command(tcl(text[i + 1:j - 1], resolve), resolve))
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _command(line: str, resolve) -> str:
    words = line.split()
    if words[:1] == ["value"] and len(words) == 2:
        return resolve(words[1])
    if words[:2] == ["file", "dirname"] and len(words) <= 3:
        path = words[2] if len(words) == 3 else ""
        return posixpath.dirname(path) or "."  # Tcl: "." for a name without a folder
    if words[:2] == ["file", "tail"] and len(words) == 3:
        return posixpath.basename(words[2])
    if words[:1] == ["python"] and len(words) > 1:
        import nuke  # the stand-in module, as the expression sees Nuke's
        source = line.split(None, 1)[1].strip()
        if source.startswith("{") and source.endswith("}"):
            source = source[1:-1]
        return str(eval(source, {"nuke": nuke}))  # noqa: S307 - the stand-in runs the test's own script
    raise RuntimeError(f'invalid command name "{words[0] if words else ""}"')


# --- expressions ------------------------------------------------------------------------------------
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_CMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne}


def expression(text: str, time: float, resolve) -> float:
    """Evaluate a Nuke expression; resolve(name, field_index, time) -> float for knob references."""
    names: dict[str, float] = {}

    def ref(m: re.Match) -> str:
        word = m.group(0)
        if word in ("frame", "t"):
            value = float(time)
        else:
            parts = word.split(".")
            field = None
            if len(parts) > 1 and (parts[-1] in FIELDS or parts[-1].isdigit()):
                field = FIELDS.get(parts[-1], None if not parts[-1].isdigit() else int(parts[-1]))
                parts = parts[:-1]
            value = float(resolve(".".join(parts), field, time))
        key = f"_v{len(names)}"
        names[key] = value
        return key

    py = IDENT.sub(ref, text).replace("&&", " and ").replace("||", " or ")
    py = re.sub(r"!(?!=)", " not ", py)
    return float(_eval(ast.parse(py.strip(), mode="eval").body, names))


def _eval(node, names):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.Name):
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        return _BIN[type(node.op)](_eval(node.left, names), _eval(node.right, names))
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, names)
        return {ast.Not: lambda v: float(not v), ast.USub: operator.neg, ast.UAdd: operator.pos}[type(node.op)](value)
    if isinstance(node, ast.BoolOp):
        values = [_eval(v, names) for v in node.values]
        return float(all(values) if isinstance(node.op, ast.And) else any(values))
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMP:
        return float(_CMP[type(node.ops[0])](_eval(node.left, names), _eval(node.comparators[0], names)))
    raise RuntimeError(f"nuke standin: expression construct {ast.dump(node)} not supported")
