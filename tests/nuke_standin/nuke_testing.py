"""Shared set-up of the Nuke adapter tests: the stand-in `nuke`, the plugin loaded as Nuke loads it
(NUKE_PATH -> init.py), a MAM2 server, a fresh script with a MAM2 node, plate Reads."""
from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
import nuke  # noqa: E402
from test_server_support import ROOT, ServerProcess, clip  # noqa: E402

from mam2_server.io import write_image  # noqa: E402

PLUGIN = ROOT / "host_plugins" / "nuke"
GIZMO = ROOT / "gizmos" / "MAM2.gizmo"
W, H = 64, 48
FIRST = 1001
BOX = [4, 28, 30, 46]  # Nuke coords (origin bottom-left): the top rows of the image
nuke.pluginAddPath(str(PLUGIN))  # NUKE_PATH=host_plugins/nuke: Nuke runs its init.py
runpy.run_path(str(PLUGIN / "init.py"))
import mam2_nuke  # noqa: E402
from mam2_nuke import runner  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("nuke") / "cache", delay=0.02) as proc:
        yield proc


@pytest.fixture
def node(tmp_path, server):
    """A MAM2 node in a saved script tmp/comp_v001.nk, talking to the test server, box drawn, at FIRST."""
    nuke.standin_reset(str(tmp_path / "comp_v001.nk").replace(os.sep, "/"))
    mam2 = nuke.createNode("MAM2")
    mam2["address"].setValue(server.address)
    mam2["start_server"].setValue(False)
    mam2["box"].setValue(BOX)
    nuke.frame(FIRST)
    yield mam2
    runner.cancel_all()
    nuke.standin_pump(until=lambda: not runner._jobs, timeout=30)


def write_plates(folder: Path, first: int = FIRST, count: int = 6, name: str = "plate", encode=None) -> list:
    frames = clip(count)
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(frames):
        write_image(folder / f"{name}.{first + i:04d}.exr", encode(img) if encode else img, pixel_type="float")
    return frames


def make_read(pattern: str, first: int, last: int, **knobs):
    read = nuke.nodes.Read(file=pattern)
    read["format"].setValue(nuke.Format(W, H))
    for key, value in (("first", first), ("last", last), ("origfirst", first), ("origlast", last), *knobs.items()):
        read[key].setValue(value)
    return read


@pytest.fixture
def plates(tmp_path):
    """A Read of 6 scene-linear EXR plates, frames 1001-1006."""
    write_plates(tmp_path / "plates")
    return make_read(str(tmp_path / "plates" / "plate.####.exr"), FIRST, FIRST + 5)


def press(node, button: str, wait: bool = True) -> None:
    node[button].execute()
    if wait:
        nuke.standin_pump(until=lambda: not runner._jobs, timeout=30)


def track_range(node, first: int, last: int) -> None:
    """Track `first`..`last` (not the input's range), keying `first`."""
    node["use_input_range"].setValue(False)
    node["range_first"].setValue(first)
    node["range_last"].setValue(last)
    nuke.frame(first)
    press(node, "track")


def status(node) -> str:
    return node["status"].value()


def matte(node, frame: int, channel: str = "rgba.alpha") -> np.ndarray:
    """The matte channel of what the node outputs at `frame` (rows top-down)."""
    return nuke.standin_render(node, frame)[channel]


def square_left(alpha: np.ndarray, row: int = 25) -> int:
    """Left edge of the clip's bright square in a matte row below the box (it moves 2 px a frame)."""
    return int(np.argmax(alpha[row] > 0.35))  # square: alpha > 0.4, noise: < 0.3
