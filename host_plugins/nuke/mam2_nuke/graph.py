"""Reading the MAM2 node into a job (main thread) and bringing the alphas back into its graph.

Where alphas go: `<alpha folder>/<shot>/<shot>.alpha.%04d.exr`. The alpha folder knob keeps its
TCL (default `[file dirname [value root.name]]/mam2`, next to the script) and AlphaRead gets the
unexpanded text, so the script finds its mattes on another workstation or a farm node. An unsaved
script has no folder: a temp folder is used, with a warning.
"""
from __future__ import annotations

import os
import tempfile

import nuke
from mam2_client import track as core

from .common import Refused, working_space

READ_NODE = "AlphaRead"  # inside the gizmo: Read of the alpha sequence
COPY_NODE = "AlphaCopy"  # copies READ_NODE's alpha into the matte channel (disabled until alphas exist)
# Nuke working-space names -> the names of the server's OCIO config (OpenImageIO's built-in one by default)
SERVER_SPACES = {"linear": None, "ACES - ACEScg": "ACEScg"}
DEFAULT_FOLDER = "[file dirname [value root.name]]/mam2"  # next to the script


def frame_range(node, plate) -> tuple[int, int]:
    if node["use_input_range"].value():
        first, last = int(plate.firstFrame()), int(plate.lastFrame())
        node["range_first"].setValue(first)  # shows the range used; kept when the box is unticked
        node["range_last"].setValue(last)
    else:
        first, last = int(node["range_first"].value()), int(node["range_last"].value())
    if last < first:
        raise Refused(f"the frame range {first}-{last} is empty")
    return first, last


def colorspace(node) -> str | None:
    """The plates' colour space for the server: the node's knob, else Nuke's working space."""
    chosen = node["plate_colorspace"].value().strip()
    if chosen:
        return chosen
    space = working_space()
    return SERVER_SPACES.get(space, space)


def shot_uuid(node) -> str:
    """The node's stable shot id (a UUID kept in the script; `core.owned_uuid`). A copy-pasted duplicate
    shares it, and the node it was pasted from keeps it: the UUID's owner (the node's full name, in
    `shot_owner`) is pasted along, so of two nodes with one UUID the one not named as its owner gets a
    new UUID. A renamed node with no twin keeps its UUID and becomes its owner."""
    current = node["shot_uuid"].value()
    me = node.fullName()
    owner_knob = node.knob("shot_owner")  # absent on a node saved before it existed
    owner = owner_knob.value() if owner_knob is not None else ""

    def has_twin(value: str) -> bool:
        return any(n.fullName() != me and n.knob("shot_uuid") is not None and n["shot_uuid"].value() == value
                   for n in nuke.allNodes(group=nuke.root(), recurseGroups=True))
    chosen = core.owned_uuid(current, owner, me, has_twin)
    if chosen != current:
        node["shot_uuid"].setValue(chosen)
    if owner_knob is not None and owner != me:
        owner_knob.setValue(me)
    return chosen


def shot_span(node, first: int, last: int) -> tuple[int, int]:
    """The frame range the node's shot is opened with on the server (mam2_client.track.shot_span), kept
    on the node: changing the tracked range inside it keeps the shot, its plates and finished alphas."""
    knob = node.knob("shot_span")  # absent on a node saved before it existed
    previous = None
    if knob is not None:
        try:
            low, high = (int(v) for v in knob.value().split())
            previous = (low, high)
        except ValueError:  # empty (never tracked) or edited by hand
            pass
    span = core.shot_span(first, last, previous)
    if knob is not None:
        knob.setValue(f"{span[0]} {span[1]}")
    return span


def alpha_folder(node, shot: str) -> tuple[str, str, str]:
    """(folder to write into, the same as AlphaRead should spell it, warning)."""
    text = node["output_dir"].value().strip()
    if not text:
        node["output_dir"].setValue(DEFAULT_FOLDER)
        text = DEFAULT_FOLDER
    try:
        path = node["output_dir"].evaluate().strip()
    except RuntimeError as exc:  # a TCL error in the knob
        raise Refused(f"the alpha folder '{text}' cannot be evaluated: {exc}") from None
    if not os.path.isabs(path):  # an unsaved script ("[file dirname ...]" is "."), or a relative folder
        script = nuke.root()["name"].value()
        if not script:
            folder = os.path.join(tempfile.gettempdir(), "mam2", shot).replace(os.sep, "/")
            return folder, folder, (f"the script is not saved, so the alphas are in {folder}: save the script and "
                                    "Track again to keep them next to it")
        path = text = os.path.join(os.path.dirname(script), path).replace(os.sep, "/")
    return os.path.join(path, shot), f"{text}/{shot}", ""


def show_alphas(node, pattern: str, read_pattern: str, fmt, first: int, last: int) -> bool:
    """Point AlphaRead at the alphas on disk and enable the Copy; False if there are none yet.

    Outside first..last (and the frames written) AlphaRead gives black, never a held matte; a
    missing file inside is an error, not a silent black frame.
    """
    present = [f for f in range(first, last + 1) if os.path.exists(core.frame_path(pattern, f))]
    if not present:
        return False
    read = node.node(READ_NODE)
    read["file"].setValue(read_pattern)
    read["format"].setValue(fmt)
    for name, value in (("first", present[0]), ("last", present[-1]), ("origfirst", present[0]),
                        ("origlast", present[-1])):
        read[name].setValue(value)
    for name, value in (("before", "black"), ("after", "black"), ("on_error", "error"), ("raw", True)):
        read[name].setValue(value)
    read["reload"].execute()
    node.node(COPY_NODE)["disable"].setValue(False)
    return True
