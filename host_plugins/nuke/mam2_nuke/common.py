"""What the adapter's modules share: the artist-facing refusal, the deleted-node test, the working space."""
from __future__ import annotations

import nuke

NOT_ATTACHED = "A PythonObject is not attached to a node"  # Nuke's ValueError for a deleted node


class Refused(Exception):
    """Something found on the main thread that stops an action; the message is for the artist."""


def deleted(exc: BaseException) -> bool:
    """True for the error Nuke raises when a node (or its knob) was deleted or its script closed."""
    return isinstance(exc, ValueError) and NOT_ATTACHED in str(exc)


def working_space() -> str:
    """The script's working colour space (Project Settings > Color; 'linear' in Nuke's default config)."""
    knob = nuke.root().knob("workingSpaceLUT")
    return knob.value() if knob is not None else "linear"


def fail(node, text: str) -> None:
    """Show a problem: the node's status line (if the node still exists) and a message."""
    try:
        node["status"].setValue(f"Error: {text}")
    except ValueError as exc:
        if not deleted(exc):
            raise
    nuke.message(f"MAM2: {text}")
