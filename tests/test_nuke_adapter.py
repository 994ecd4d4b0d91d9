"""The Nuke plugin (host_plugins/nuke + gizmos/MAM2.gizmo) against a strict `nuke` stand-in and a real server.

tests/nuke_standin/nuke.py raises where Nuke would misbehave (knobs off the main
thread, unknown knobs, ...), so a worker thread touching Nuke fails these tests.
"""
from __future__ import annotations

import ast
import os
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "nuke_standin"))
import nkscript
import nuke
from test_server_support import ROOT, ServerProcess, clip, free_port

from mam2_server.io import read_image, write_image

pytestmark = pytest.mark.timeout(60)
PLUGIN = ROOT / "host_plugins" / "nuke"
GIZMO = ROOT / "gizmos" / "MAM2.gizmo"
W, H = 64, 48
nuke.pluginAddPath(str(PLUGIN))  # what a user's ~/.nuke/init.py does
runpy.run_path(str(PLUGIN / "init.py"))
import mam2_nuke


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("nuke") / "cache", delay=0.03) as proc:
        yield proc


@pytest.fixture
def plates(tmp_path):
    """A Read node on 6 scene-linear EXR plates (frames 1-6)."""
    for i, img in enumerate(clip(6), start=1):
        write_image(tmp_path / f"plate.{i:04d}.exr", img, pixel_type="float")
    read = nuke.nodes.Read(file=str(tmp_path / "plate.####.exr"))
    read._format, read._range = nuke.Format(W, H), (1, 6)
    return read


@pytest.fixture
def node(tmp_path, server):
    nuke.standin_reset()
    nuke.root()["name"].setValue(str(tmp_path / "comp.nk"))  # a fresh shot id per test
    mam2 = nuke.createNode("MAM2")
    mam2["address"].setValue(server.address)
    mam2["start_server"].setValue(False)
    mam2["output_dir"].setValue(str(tmp_path / "alpha"))
    mam2["box"].setValue([4, 28, 30, 46])  # Nuke coords: the top rows of the image
    yield mam2
    mam2_nuke._jobs.clear()


def press(node, button: str, wait: bool = True) -> None:
    node[button].execute()
    if wait:
        nuke.standin_pump(until=lambda: node.fullName() not in mam2_nuke._jobs, timeout=30)


def status(node) -> str:
    return node["status"].value()


def test_gizmo_declares_the_knobs_and_its_buttons_call_existing_functions():
    blocks = nkscript.parse(GIZMO.read_text())
    group, children = blocks[0], {b.value("name"): b for b in blocks[1:]}
    knobs = {k.name: k for k in group.user_knobs}
    for name in ("address", "start_server", "engine", "prompt_frame", "box", "fg1", "fg1_on", "bg1", "bg1_on",
                 "output_dir", "track", "retrack", "cancel", "status", "use_input_range", "range_first", "shot"):
        assert name in knobs, name
    assert knobs["box"].code == 15 and knobs["fg1"].code == 12 and knobs["status"].code == 26
    assert knobs["engine"].items[0] == "default"
    scripts = {k.name: k.text for k in group.user_knobs if k.code == 22}
    assert set(scripts) == {"track", "retrack", "cancel", "set_prompt_frame"}
    for name, script in scripts.items():
        calls = [n.func.attr for n in ast.walk(ast.parse(script))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                 and getattr(n.func.value, "id", None) == "mam2_nuke"]
        assert calls and all(callable(getattr(mam2_nuke, c)) for c in calls), (name, calls)
    assert {mam2_nuke.READ_NODE, mam2_nuke.COPY_NODE, mam2_nuke.INPUT_NODE} <= set(children)
    copy = children[mam2_nuke.COPY_NODE]
    assert (copy.value("from0"), copy.value("to0"), copy.value("bbox"), copy.value("disable")) == \
        ("rgba.alpha", "rgba.alpha", "B", "true")  # keeps the input's bbox; off until alphas exist
    names = [b.value("name") for b in blocks[1:]]  # nk stack: the Read is pushed first (A), the input last (B)
    assert names.index(mam2_nuke.READ_NODE) < names.index(mam2_nuke.INPUT_NODE) < names.index(mam2_nuke.COPY_NODE)


def test_menu_adds_the_node():
    runpy.run_path(str(PLUGIN / "menu.py"))
    assert ("MAM2/MAM2 matte", "nuke.createNode('MAM2')") in nuke.menus["Nodes"]


def test_track_from_a_read_brings_alphas_back_into_the_graph(node, plates, tmp_path):
    node.setInput(0, plates)
    press(node, "track")
    assert status(node).startswith("Done: 6 frames computed"), status(node)
    pattern = str(tmp_path / "alpha" / f"{node['shot'].value()}.alpha.%04d.exr")
    assert all(os.path.exists(pattern % f) for f in range(1, 7))
    assert not [p for p in (tmp_path / "alpha").iterdir() if p.name.startswith(".")]  # no temp files left
    read = node.node(mam2_nuke.READ_NODE)
    assert read["file"].value() == pattern.replace(os.sep, "/")
    assert [read[k].value() for k in ("first", "last", "origfirst", "origlast")] == [1, 6, 1, 6]
    assert read._reloads == 1 and node.node(mam2_nuke.COPY_NODE)["disable"].value() is False
    alpha = read_image(pattern % 1).pixels[..., 0]
    assert alpha.shape == (H, W)
    assert alpha[2:20, 5:29].mean() > alpha[30:, 5:29].mean() + 0.3  # the box (Nuke y up) is the top rows
    steps = [v for _, kind, v in nuke.progress_log if kind == "progress"]
    assert steps[-1] == 100 and steps == sorted(steps) and len(steps) >= 6
    assert not nuke.messages


def test_retrack_recomputes_only_the_frames_after_the_correction(node, plates):
    node.setInput(0, plates)
    press(node, "track")
    nuke.frame(4)
    node["box"].setValueAt([10, 10, 40, 30], 4)
    press(node, "retrack")
    assert status(node).startswith("Done: 3 frames computed, 3 cached"), status(node)


def test_points_only_prompt(node, plates):
    node.setInput(0, plates)
    node["use_box"].setValue(False)
    node["fg1_on"].setValue(True)
    node["fg1"].setValue([20, 40])
    node["bg1_on"].setValue(True)
    node["bg1"].setValue([50, 5])
    press(node, "track")
    assert status(node).startswith("Done"), status(node)


def test_any_other_input_is_rendered_to_exr_first(node, tmp_path):
    const = nuke.nodes.Constant()
    const._format, const._range = nuke.Format(W, H), (1, 3)
    frames = clip(3)
    const.standin_pixels = lambda f: frames[f - 1]
    node.setInput(0, const)
    press(node, "track")
    assert status(node).startswith("Done: 3 frames computed"), status(node)
    assert nuke.executed == [("Write1", 1, 3)] and node.node("Write1") is None  # temp Write removed
    # rendered per shot: two nodes sharing an alpha folder never read each other's plates
    assert (tmp_path / "alpha" / "plates" / node["shot"].value() / "plate.0003.exr").exists()


def test_cancel_stops_after_the_frame_in_progress(node, tmp_path):
    for i, img in enumerate(clip(40), start=1):
        write_image(tmp_path / f"long.{i:04d}.exr", img, pixel_type="float")
    read = nuke.nodes.Read(file=str(tmp_path / "long.%04d.exr"))
    read._format, read._range = nuke.Format(W, H), (1, 40)
    node.setInput(0, read)
    press(node, "track", wait=False)
    nuke.standin_pump(until=lambda: any(k == "message" and str(v).startswith("frame")
                                        for _, k, v in nuke.progress_log))
    press(node, "cancel")
    assert status(node).startswith("Cancelled:"), status(node)
    done = int(status(node).split()[1])
    assert 0 < done < 40 and node.node(mam2_nuke.READ_NODE)["last"].value() == 40


def test_progress_bar_cancel_button_also_cancels(node, plates):
    node.setInput(0, plates)
    nuke.cancel_progress.set()
    press(node, "track")
    assert status(node).startswith("Cancelled"), status(node)


@pytest.mark.parametrize("setup, expected", [
    (lambda n, r: None, "no input: connect the plate"),
    (lambda n, r: (n.setInput(0, r), n["box"].setValue([10, 10, 10, 30])), "is empty"),
    (lambda n, r: (n.setInput(0, r), n["box"].setValue([100, 60, 200, 90])), "outside the 64x48 frame"),
    (lambda n, r: (n.setInput(0, r), n["use_box"].setValue(False)), "no prompt"),
    (lambda n, r: (n.setInput(0, r), n["prompt_frame"].setValue(9)), "outside the tracked range 1-6"),
    (lambda n, r: (n.setInput(0, r), n["address"].setValue(f"tcp://127.0.0.1:{free_port()}")),
     "no MAM2 server answers at tcp://127.0.0.1:"),
])
def test_errors_show_in_the_status_and_a_message(node, plates, setup, expected):
    setup(node, plates)
    press(node, "track")
    assert status(node).startswith("Error: ") and expected in status(node), status(node)
    assert len(nuke.messages) == 1 and expected in nuke.messages[0]
    assert node.node(mam2_nuke.COPY_NODE)["disable"].value() is True


def test_a_second_track_while_running_is_refused(node, plates):
    node.setInput(0, plates)
    press(node, "track", wait=False)
    press(node, "track", wait=False)
    assert "already going" in nuke.messages[0]
    nuke.standin_pump(until=lambda: node.fullName() not in mam2_nuke._jobs, timeout=30)
    assert status(node).startswith("Done"), status(node)


def test_headless_nuke_runs_inline(node, plates):
    nuke.GUI = False
    node.setInput(0, plates)
    press(node, "track", wait=False)  # no event loop: the result is applied before the button returns
    assert status(node).startswith("Done: 6 frames computed"), status(node)


def test_the_standin_refuses_knob_access_off_the_main_thread(node):
    import threading
    knob, errors = node["status"], []

    def off_main():
        for call in (knob.value, lambda: node["status"], lambda: nuke.message("x"), nuke.frame):
            try:
                call()
            except RuntimeError as exc:
                errors.append(str(exc))
    worker = threading.Thread(target=off_main)
    worker.start()
    worker.join()
    assert len(errors) == 4 and all("main thread" in e for e in errors)
    with pytest.raises(NameError):
        node["no_such_knob"]


def test_set_prompt_frame_button(node):
    nuke.frame(5)
    press(node, "set_prompt_frame", wait=False)
    assert node["prompt_frame"].value() == 5
    assert np.isfinite(node["box"].value(0))
