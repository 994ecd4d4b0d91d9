"""The Nuke node (gizmos/MAM2.gizmo + host_plugins/nuke/mam2_nuke) against the `nuke` stand-in and a real server:
the gizmo, Track, keys, output channel/premultiply, errors, threading rules.

tests/nuke_standin/ raises where Nuke would (knobs off the main thread, deleted nodes, ...) and
renders the node's graph, so these tests check the matte the artist gets out of the node.
"""
from __future__ import annotations

import ast
import runpy
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "nuke_standin"))
from nuke_testing import (BOX, FIRST, GIZMO, PLUGIN, matte, mam2_nuke, node, nuke, plates, press,  # noqa: F401
                          runner, server, square_left, status, track_range)
from test_server_support import free_port

import nkscript

pytestmark = pytest.mark.timeout(120)


def test_gizmo_is_a_group_with_its_knobs_wired_to_the_adapter():
    blocks = nkscript.parse(GIZMO.read_text())
    group, children = blocks[0], blocks[1:]
    assert group.cls == "Group" and group.value("inputs") == "2"  # plate + mask
    knobs = {k.name: k for k in group.user_knobs}
    codes = {"box": 15, "fg1": 12, "use_box": 6, "range_first": 3, "output_dir": 2, "address": 1, "engine": 4,
             "status": 26, "track": 22, "mam2_tab": 20, "output": 41, "key_list": 4, "shot_uuid": 1}
    assert {name: knobs[name].code for name in codes} == codes
    assert knobs["output"].text == "AlphaCopy.to0" and knobs["engine"].items[0] == "default"
    scripts = {k.name: k.text for k in group.user_knobs if k.code == 22}
    for name, script in scripts.items():  # every button calls a function that exists
        calls = [n.func.attr for n in ast.walk(ast.parse(script))
                 if isinstance(n, ast.Call) and getattr(n.func.value, "id", None) == "mam2_nuke"]
        assert calls and all(callable(getattr(mam2_nuke, c)) for c in calls), (name, calls)
    names = [b.value("name") for b in children]
    wiring = {b.value("name"): [names[i - 1] if i else None for i in b.inputs] for b in children}
    assert wiring["AlphaCopy"] == ["Input1", "AlphaRead"]  # B = the plate (its format/bbox kept), A = the alphas
    assert wiring["MaskCopy"] == ["Input1", "mask"]  # the mask in the plate's format
    assert wiring["MattePremult"] == ["AlphaCopy", "AlphaRead"] and wiring["Output1"] == ["MattePremult"]
    read = children[names.index("AlphaRead")]
    assert (read.value("before"), read.value("after"), read.value("on_error")) == ("black", "black", "error")


def test_created_node_is_a_group_and_the_menu_adds_it(node):
    assert node.Class() == "Group"  # a .gizmo with a Group body: Nuke creates a Group, not a "MAM2" class
    runpy.run_path(str(PLUGIN / "menu.py"))
    assert ("MAM2/MAM2 matte", "nuke.createNode('MAM2')") in nuke.menus["Nodes"]


def test_track_brings_the_matte_into_the_node_output(node, plates, tmp_path):
    node.setInput(0, plates)
    press(node, "track")
    assert status(node).startswith("Done: 6 frames computed, 0 cached, 6 alphas written; range 1001-1006"), status(node)
    assert "engine testfast on cpu" in status(node) and "keyed frame 1001" in status(node)
    shot = node["shot"].value()
    folder = tmp_path / "mam2" / shot  # next to the script
    assert sorted(p.name for p in folder.iterdir()) == [f"{shot}.alpha.{f:04d}.exr" for f in range(FIRST, FIRST + 6)]
    assert nuke.executed == []  # EXR plates of a plain Read go by path: nothing rendered
    for frame in (FIRST, FIRST + 3):
        alpha = matte(node, frame)
        assert alpha.shape == (48, 64) and alpha[2:20, 5:29].mean() > alpha[30:, 5:29].mean() + 0.3  # the box
    assert square_left(matte(node, FIRST + 3)) == 8 + 2 * 3  # frame 1004 is plate 1004
    out = nuke.standin_render(node, FIRST)
    plate = nuke.standin_render(plates, FIRST)
    assert all(np.array_equal(out[c], plate[c]) for c in ("rgba.red", "rgba.green", "rgba.blue"))  # rgb untouched
    steps = [v for _, kind, v in nuke.progress_log if kind == "progress"]
    assert steps[-1] == 100 and steps == sorted(steps) and len(steps) >= 6
    assert not nuke.messages


def test_outside_the_tracked_range_the_matte_is_black_not_held(node, plates):
    node.setInput(0, plates)
    track_range(node, FIRST + 1, FIRST + 3)
    assert status(node).startswith("Done: 3 frames computed"), status(node)
    assert matte(node, FIRST + 3).max() > 0.5
    for frame in (FIRST, FIRST + 4, FIRST + 40):  # a held last/first matte here would be a wrong matte
        assert matte(node, frame).max() == 0.0, frame


def test_keys_each_keep_their_own_box_and_the_list_drives_the_server(node, plates, server):
    node.setInput(0, plates)
    press(node, "add_key", wait=False)
    nuke.frame(FIRST + 4)
    node["box"].setValue([10, 4, 40, 24])  # animated now: keys frame 1005
    press(node, "add_key", wait=False)
    assert node["key_list"].values() == ["1001", "1005"] and node["key_list"].value() == "1005"
    assert node["box"].getValueAt(FIRST, 1) == BOX[1] and node["box"].getValueAt(FIRST + 4, 1) == 4
    nuke.frame(FIRST + 2)
    press(node, "add_key", wait=False)  # keys what 1003 shows now ...
    node["box"].setValueAt(0, FIRST, 1)  # ... so editing the key before it does not move it
    assert node["box"].getValueAt(FIRST + 2, 1) == BOX[1]
    node["key_list"].setValue("1003")
    press(node, "delete_key", wait=False)
    node["box"].setValueAt(BOX[1], FIRST, 1)
    press(node, "track")
    assert status(node).startswith("Done"), status(node)
    with server.client() as client:
        shots = {s["shot"]: s for s in client.status()["shots"]}
    assert shots[node["shot"].value()]["keyframes"] == [FIRST, FIRST + 4]
    assert matte(node, FIRST + 4)[30:46, 12:38].mean() > matte(node, FIRST + 4)[2:18, 12:38].mean() + 0.3
    node["key_list"].setValue("1005")
    press(node, "delete_key", wait=False)
    assert node["key_list"].values() == ["1001"] and not node["box"].isKeyAt(FIRST + 4)
    press(node, "track")
    with server.client() as client:
        shots = {s["shot"]: s for s in client.status()["shots"]}
    assert shots[node["shot"].value()]["keyframes"] == [FIRST]  # deleted on the node: removed on the server
    node["key_list"].setValue("1001")
    press(node, "goto_key", wait=False)
    assert nuke.frame() == FIRST


def test_set_key_and_track_recomputes_only_what_the_new_key_affects(node, plates):
    node.setInput(0, plates)
    press(node, "track")
    nuke.frame(FIRST + 3)
    node["box"].setValue([10, 10, 40, 30])  # keyed at 1004 by the Track's key at 1001
    press(node, "retrack")
    assert status(node).startswith("Done: 3 frames computed, 3 cached"), status(node)


def test_points_linked_to_a_tracker_give_each_key_the_tracked_position(node, plates):
    tracker = nuke.nodes.Transform()
    tracker["translate"].setAnimated()
    for frame, (x, y) in ((FIRST, (20, 40)), (FIRST + 4, (44, 30))):
        tracker["translate"].setValueAt(x, frame, 0)
        tracker["translate"].setValueAt(y, frame, 1)
    node["fg1"].setExpression(f"{tracker.name()}.translate.x", 0)
    node["fg1"].setExpression(f"{tracker.name()}.translate.y + 2", 1)
    node["use_box"].setValue(False)
    node["fg1_on"].setValue(True)
    node.setInput(0, plates)
    for frame in (FIRST, FIRST + 4):
        nuke.frame(frame)
        press(node, "add_key", wait=False)
    stored = mam2_nuke.keys.load(node)
    assert [mam2_nuke.keys.values(node, k) for k in stored.values()] == [(None, ((20, 42, 1),)), (None, ((44, 32, 1),))]
    assert node["fg1"].hasExpression(0) and node["fg1"].hasExpression(1)  # still linked, not keyed over
    press(node, "track")
    assert status(node).startswith("Done"), status(node)


def test_a_box_partly_linked_to_a_tracker_keys_its_free_corner(node, plates, server):
    """x/y linked by expression, r/t free: each key keeps its own r/t (the free channels are set to
    accept animation one by one; isAnimated() of the whole knob is true for the expressions alone)."""
    tracker = nuke.nodes.Transform()
    tracker["translate"].setAnimated()
    for frame, (x, y) in ((FIRST, (4, 28)), (FIRST + 4, (12, 20))):
        tracker["translate"].setValueAt(x, frame, 0)
        tracker["translate"].setValueAt(y, frame, 1)
    box = node["box"]
    box.setExpression(f"{tracker.name()}.translate.x", 0)
    box.setExpression(f"{tracker.name()}.translate.y", 1)
    node.setInput(0, plates)
    press(node, "add_key", wait=False)  # frame 1001: r/t = 30, 46 (BOX)
    assert [box.isAnimated(i) for i in range(4)] == [True] * 4 and box.isKeyAt(FIRST, 2) and box.isKeyAt(FIRST, 3)
    nuke.frame(FIRST + 4)
    box.setValue(40, 2)  # the artist moves the free corner on another frame: keys it there
    box.setValue(36, 3)
    press(node, "add_key", wait=False)
    stored = mam2_nuke.keys.load(node)
    assert [mam2_nuke.keys.values(node, k)[0] for k in stored.values()] == [(4, 28, 30, 46), (12, 20, 40, 36)]
    assert box.hasExpression(0) and box.hasExpression(1) and not box.hasExpression(2)  # still linked
    press(node, "track")
    assert status(node).startswith("Done: 6 frames computed"), status(node)
    with server.client() as client:
        shots = {s["shot"]: s for s in client.status()["shots"]}
    assert shots[node["shot"].value()]["keyframes"] == [FIRST, FIRST + 4]


def test_shot_id_survives_a_new_script_version_and_a_pasted_copy_gets_its_own(node, plates):
    node.setInput(0, plates)
    press(node, "track")
    shot, uuid = node["shot"].value(), node["shot_uuid"].value()
    nuke.root()["name"].setValue(nuke.root()["name"].value().replace("_v001", "_v002"))  # File > Save New Version
    press(node, "track")
    assert node["shot"].value() == shot and status(node).startswith("Done: 0 frames computed, 6 cached"), status(node)
    assert node["shot_owner"].value() == node.fullName()
    copy = pasted_copy(node, plates)
    press(copy, "track")
    assert copy["shot_uuid"].value() != uuid and copy["shot"].value() != shot, status(copy)
    assert copy["shot_owner"].value() == copy.fullName() and node["shot_uuid"].value() == uuid


def pasted_copy(node, plates):
    """What Edit > Copy, Paste does: a node of another name with the same knob values."""
    copy = nuke.createNode("MAM2")
    for name in ("shot_uuid", "shot_owner", "address", "start_server"):
        copy[name].setValue(node[name].value())
    copy["box"].setValue(BOX)
    copy.setInput(0, plates)
    return copy


def test_the_node_a_copy_was_pasted_from_keeps_its_shot_when_it_acts_first(node, plates):
    node.setInput(0, plates)
    press(node, "track")
    shot, uuid = node["shot"].value(), node["shot_uuid"].value()
    copy = pasted_copy(node, plates)
    assert copy.fullName() != node.fullName() and copy["shot_uuid"].value() == uuid
    press(node, "retrack")  # the original acts first: it is the UUID's owner, it keeps its shot and cache
    assert node["shot_uuid"].value() == uuid and node["shot"].value() == shot
    assert status(node).startswith("Done: 0 frames computed, 6 cached"), status(node)
    press(copy, "track")  # the copy acts second: its own shot
    assert copy["shot_uuid"].value() != uuid and copy["shot"].value() != shot, status(copy)
    assert status(copy).startswith("Done: 6 frames computed"), status(copy)
    # a node renamed, with no twin: the same shot, and it owns the UUID under its new name
    nuke.delete(copy)
    node["name"].setValue("Hero")
    press(node, "retrack")
    assert node["shot"].value() == shot and node["shot_owner"].value() == "Hero"
    assert status(node).startswith("Done: 0 frames computed, 6 cached"), status(node)


def test_matte_into_another_channel_and_premultiplied(node, plates):
    node.setInput(0, plates)
    node["output"].setValue("mam2.matte")
    press(node, "track")
    out, plate = nuke.standin_render(node, FIRST), nuke.standin_render(plates, FIRST)
    assert out["mam2.matte"].max() > 0.5 and np.array_equal(out["rgba.alpha"], plate["rgba.alpha"])
    node["output"].setValue("rgba.alpha")
    node["premultiply"].setValue(True)
    out = nuke.standin_render(node, FIRST)
    np.testing.assert_allclose(out["rgba.red"], plate["rgba.red"] * out["rgba.alpha"], rtol=1e-6)


def test_cancel_stops_after_the_frame_in_progress(node, tmp_path):
    from nuke_testing import make_read, write_plates
    write_plates(tmp_path / "long", count=40, name="long")
    node.setInput(0, make_read(str(tmp_path / "long" / "long.%04d.exr"), FIRST, FIRST + 39))
    press(node, "track", wait=False)
    nuke.standin_pump(until=lambda: any(k == "message" and str(v).startswith("frame") for _, k, v in nuke.progress_log))
    press(node, "cancel")
    assert status(node).startswith("Cancelled:"), status(node)
    done = int(status(node).split()[1])
    read = node.node("AlphaRead")
    assert 0 < done < 40 and read["last"].value() - read["first"].value() + 1 == done  # only frames on disk


def test_progress_bar_cancel_button_also_cancels(node, plates):
    node.setInput(0, plates)
    nuke.cancel_progress.set()
    press(node, "track")
    assert status(node).startswith("Cancelled"), status(node)


@pytest.mark.parametrize("setup, expected", [
    (lambda n, r: None, "no input: connect the plate"),
    (lambda n, r: (n.setInput(0, r), n["box"].setValue([10, 10, 10, 30])), "is empty"),
    (lambda n, r: (n.setInput(0, r), n["box"].setValue([100, 60, 200, 90])), "outside the 64x48 frame"),
    (lambda n, r: (n.setInput(0, r), n["use_box"].setValue(False)), "nothing to key"),
    (lambda n, r: (n.setInput(0, r), nuke.frame(990)), "outside the tracked range 1001-1006"),
    (lambda n, r: (n.setInput(0, r), n["output_dir"].setValue("[bogus]")), "cannot be evaluated"),
    (lambda n, r: (n.setInput(0, r), n["address"].setValue(f"tcp://127.0.0.1:{free_port()}")),
     "no MAM2 server answers at tcp://127.0.0.1:"),
])
def test_problems_show_in_the_status_and_a_message(node, plates, setup, expected):
    setup(node, plates)
    press(node, "track")
    assert status(node).startswith("Error: ") and expected in status(node), status(node)
    assert "internal error" not in status(node)
    assert len(nuke.messages) == 1 and expected in nuke.messages[0]
    assert node.node("AlphaCopy")["disable"].value() is True


def test_a_second_track_while_running_is_refused(node, plates):
    node.setInput(0, plates)
    press(node, "track", wait=False)
    press(node, "track", wait=False)
    assert "already going" in nuke.messages[0]
    nuke.standin_pump(until=lambda: not runner._jobs, timeout=30)
    assert status(node).startswith("Done"), status(node)


def test_headless_nuke_runs_inline(node, plates):
    nuke.GUI = False
    node.setInput(0, plates)
    press(node, "track", wait=False)  # no event loop: the result is applied before the button returns
    assert status(node).startswith("Done: 6 frames computed"), status(node)


def test_the_adapter_never_touches_nuke_off_the_main_thread(node, plates, monkeypatch):
    """The worker only talks to the server: every knob access of the job happens on the main thread."""
    seen = []
    real = nuke.Knob._live

    def spy(knob, what):
        seen.append(threading.current_thread() is threading.main_thread())
        return real(knob, what)
    monkeypatch.setattr(nuke.Knob, "_live", spy)
    node.setInput(0, plates)
    press(node, "track")
    assert status(node).startswith("Done") and seen and all(seen)


def test_the_standin_refuses_knob_access_off_the_main_thread(node):
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


def test_server_tab_shows_engine_device_and_the_shot(node, plates):
    def check() -> str:
        press(node, "check_server", wait=False)
        nuke.standin_pump(until=lambda: not node["server_info"].value().startswith("status:"))
        return node["server_info"].value()
    assert "not tracked yet" in check()
    node.setInput(0, plates)
    press(node, "track")
    text = check()
    assert "engine testfast on cpu" in text and "not started by this Nuke" in text, text
    assert "shot: 6 frames received, keys 1001" in text, text
    for action in ("stop", "restart"):  # a server someone else started is left alone
        press(node, f"{action}_server", wait=False)
        nuke.standin_pump(until=lambda: not node["server_info"].value().startswith(f"{action}:"))
        assert f"not started by this Nuke, so not {action}" in node["server_info"].value()
