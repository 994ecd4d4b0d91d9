"""The `nuke` stand-in itself: the Nuke behaviours the adapter relies on (or must not rely on) hold in it.

Each check names the Foundry documentation it follows (learn.foundry.com/nuke/developers/...):
the Python API reference (nuke.filename, File_Knob, EvalString_Knob, pluginAddPath,
executeInMainThreadWithResult), the dev guide's "Animation" and "Threading" pages, and the user
guide's Read node (frame offset, before/after).
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "nuke_standin"))
from nuke_testing import H, W, make_read, nuke, write_plates  # noqa: E402


@pytest.fixture(autouse=True)
def fresh(tmp_path):
    nuke.standin_reset(str(tmp_path / "comp.nk"))


def test_a_deleted_node_and_its_knobs_raise_nukes_error():
    node = nuke.nodes.Read()
    knob = node["file"]
    nuke.delete(node)
    for call in (node.name, lambda: node["file"], knob.value, lambda: node.setInput(0, None)):
        with pytest.raises(ValueError, match="^A PythonObject is not attached to a node$"):
            call()


def test_script_close_detaches_every_node_and_runs_the_callbacks():
    closed = []
    nuke.addOnScriptClose(lambda: closed.append(True))
    node = nuke.nodes.Constant()
    nuke.scriptClose()
    assert closed and nuke.root()["name"].value() == ""
    with pytest.raises(ValueError):
        node.Class()


def test_read_frame_offset_and_before_after(tmp_path):
    write_plates(tmp_path, first=1, count=3)
    read = make_read(str(tmp_path / "plate.%04d.exr"), 1, 3, frame_mode="offset", frame="1000")
    assert (read.firstFrame(), read.lastFrame()) == (1001, 1003)
    first = nuke.standin_render(read, 1001)["rgba.red"]
    assert np.array_equal(nuke.standin_render(read, 990)["rgba.red"], first)  # default before: hold
    read["before"].setValue("black")
    assert nuke.standin_render(read, 990)["rgba.red"].max() == 0
    read["frame_mode"].setValue("start at")
    read["frame"].setValue("2001")
    assert (read.firstFrame(), read.lastFrame()) == (2001, 2003)
    assert np.array_equal(nuke.standin_render(read, 2001)["rgba.red"], first)


def test_filename_expands_tcl_and_frames_and_gives_the_proxy_file_in_proxy_mode(tmp_path):
    nuke.root()["project_directory"].setValue("/shots")
    read = nuke.nodes.Read(file="[value root.project_directory]/p.####.exr", proxy="/proxy/p.%04d.exr")
    nuke.frame(12)
    assert read["file"].value() == "[value root.project_directory]/p.%04d.exr"  # the raw text
    assert nuke.filename(read) == "/shots/p.%04d.exr"
    assert nuke.filename(read, nuke.REPLACE) == read["file"].evaluate() == "/shots/p.0012.exr"
    nuke.root()["proxy"].setValue(True)
    assert nuke.filename(read) == "/proxy/p.%04d.exr"


def test_execute_renders_at_proxy_size_in_proxy_mode(tmp_path):
    const = nuke.nodes.Constant()
    const["format"].setValue(nuke.Format(W, H))
    const.standin_pixels = lambda f: np.ones((H, W, 3), np.float32)
    write = nuke.nodes.Write(file=str(tmp_path / "o.%04d.exr"), file_type="exr")
    write.setInput(0, const)
    nuke.root()["proxy"].setValue(True)
    nuke.execute(write, 1, 1)
    from mam2_server.io import read_image
    assert read_image(tmp_path / "o.0001.exr").pixels.shape == (H // 2, W // 2, 3)
    assert (const.width(), const.format().width()) == (W // 2, W)  # width(): proxy size, format(): full


def test_animation_needs_set_animated_and_get_value_at_follows_keys_and_expressions():
    t = nuke.nodes.Transform()
    with pytest.raises(RuntimeError, match="setAnimated"):
        t["translate"].setValueAt(1, 5, 0)
    t["translate"].setAnimated()
    t["translate"].setValueAt(10, 5, 0)
    nuke.frame(20)
    t["translate"].setValue(30, 0)  # animated: keys the current frame
    assert [t["translate"].getValueAt(f, 0) for f in (5, 20)] == [10, 30] and t["translate"].isKeyAt(20)
    other = nuke.nodes.Transform()
    other["center"].setExpression(f"{t.name()}.translate.x * 2", 0)
    assert other["center"].isAnimated() and other["center"].getValueAt(5, 0) == 20
    # per channel, as Array_Knob.isAnimated(channel) / setAnimated(channel): an expression on x animates x only
    center = other["center"]
    assert center.isAnimated(0) and not center.isAnimated(1)
    with pytest.raises(RuntimeError, match="setAnimated"):
        center.setValueAt(3, 5, 1)
    center.setValue(7, 1)  # not animated: a plain value, at every frame
    center.setAnimated(1)
    center.setValueAt(9, 5, 1)
    assert [center.getValueAt(f, 1) for f in (5, 20)] == [9, 7] and center.isKeyAt(5, 1) and not center.isKeyAt(5, 0)


def test_plugin_add_path_puts_the_folder_on_sys_path(tmp_path):
    nuke.pluginAddPath(str(tmp_path))
    assert sys.path[0] == str(tmp_path) and nuke.pluginPath()[0] == str(tmp_path)


def test_a_group_bodied_gizmo_is_created_as_a_group(tmp_path):
    (tmp_path / "Thing.gizmo").write_text("Group {\n inputs 1\n addUserKnob {20 t}\n}\n Input {\n  inputs 0\n"
                                          "  name Input1\n }\n Output {\n  name Output1\n }\nend_group\n")
    nuke.pluginAddPath(str(tmp_path))
    assert nuke.createNode("Thing").Class() == "Group"


def test_execute_in_main_thread_with_result_from_the_main_thread_is_refused_and_errors_stay_there():
    with pytest.raises(RuntimeError, match="deadlocks"):
        nuke.executeInMainThreadWithResult(lambda: 1)
    out = {}

    def worker():
        out["ok"] = nuke.executeInMainThreadWithResult(lambda x: x + 1, args=(1,))
        out["failed"] = nuke.executeInMainThreadWithResult(lambda: 1 / 0)  # not documented to reach the caller
    thread = threading.Thread(target=worker)
    thread.start()
    nuke.standin_pump(until=lambda: not thread.is_alive())
    assert out == {"ok": 2, "failed": None}


def test_string_knobs_evaluate_tcl_and_file_knobs_keep_the_text():
    node = nuke.nodes.Read(file="[file dirname [value root.name]]/x.exr")
    assert node["file"].evaluate().endswith("/x.exr") and node["file"].value().startswith("[file dirname")
    node["file"].setValue("[no_such_command]")
    with pytest.raises(RuntimeError, match="invalid command name"):
        node["file"].evaluate()
