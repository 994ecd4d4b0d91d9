"""Things that come and go under the Nuke node: the node itself (deleted, script closed mid-run) and the
server it starts (clean environment, stopped from the node, gone when Nuke quits or crashes)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "nuke_standin"))
from nuke_testing import (BOX, FIRST, ROOT, make_read, node, nuke, plates, press, runner, server,  # noqa: F401
                          status, write_plates)
from test_server_support import free_port

from mam2_server.server.watchdog import process_alive

pytestmark = pytest.mark.timeout(180)


def new_node(address: str, plate):
    mam2 = nuke.createNode("MAM2")
    mam2["address"].setValue(address)
    mam2["start_server"].setValue(False)
    mam2["box"].setValue(BOX)
    mam2.setInput(0, plate)
    return mam2


def test_deleting_the_node_while_it_tracks(node, plates, server):
    node.setInput(0, plates)
    name = node.name()
    press(node, "track", wait=False)
    nuke.delete(node)
    with pytest.raises(ValueError, match="A PythonObject is not attached to a node"):
        node["status"].value()  # what Nuke does with the old object
    nuke.standin_pump(until=lambda: not runner._jobs, timeout=30)  # the job ends without an exception
    assert not nuke.messages
    again = new_node(server.address, plates)
    again["name"].setValue(name)  # a new node of the same name is not refused
    press(again, "track")
    assert status(again).startswith("Done"), status(again)


def test_deleting_the_node_before_its_input_is_rendered(node):
    from test_server_support import clip
    frames = clip(6)
    const = nuke.nodes.Constant()
    const["format"].setValue(nuke.Format(64, 48))
    const["first"].setValue(FIRST)
    const["last"].setValue(FIRST + 5)
    const.standin_pixels = lambda f: frames[f - FIRST]
    node.setInput(0, const)
    press(node, "track", wait=False)  # the worker will ask the main thread to render...
    nuke.delete(node)  # ... a node that is gone by then
    nuke.standin_pump(until=lambda: not runner._jobs, timeout=30)
    assert not nuke.messages and nuke.executed == []


def test_closing_the_script_while_it_tracks_stops_the_job(node, tmp_path):
    write_plates(tmp_path / "long", count=40, name="long")
    node.setInput(0, make_read(str(tmp_path / "long" / "long.%04d.exr"), FIRST, FIRST + 39))
    press(node, "track", wait=False)
    nuke.standin_pump(until=lambda: any(k == "message" and str(v).startswith("frame") for _, k, v in nuke.progress_log))
    nuke.scriptClose()
    nuke.standin_pump(until=lambda: not runner._jobs, timeout=30)
    written = list((tmp_path / "mam2").rglob("*.exr"))
    assert 0 < len(written) < 40  # cancelled after the frame in progress, nothing applied to dead nodes
    assert not nuke.messages


def test_a_server_the_node_starts_has_a_clean_environment_and_the_node_stops_it(node, tmp_path, monkeypatch):
    from mam2_client import launcher
    address = f"tcp://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HOME", str(tmp_path))  # the server's default cache folder
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "nuke" / "python"))  # what Nuke sets for its own Python
    monkeypatch.setenv("PYTHONHOME", str(tmp_path / "nuke"))  # would break any other Python that inherits it
    monkeypatch.setenv("MAM2_SERVER_COMMAND", f"{sys.executable} -m mam2_server.cli")
    node["address"].setValue(address)
    node["start_server"].setValue(True)
    try:
        press(node, "restart_server", wait=False)
        nuke.standin_pump(until=lambda: not node["server_info"].value().startswith("restart:"), timeout=90)
        info = node["server_info"].value()
        assert "engine classic" in info and "started by this Nuke" in info and "stops with it" in info, info
        process = launcher.started_server(address).process
        environ = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
        assert not [v for v in environ if v.startswith((b"PYTHONPATH=", b"PYTHONHOME="))]
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[cmdline.index(b"--exit-with") + 1] == str(os.getpid()).encode()
        press(node, "stop_server", wait=False)
        nuke.standin_pump(until=lambda: not node["server_info"].value().startswith("stop:"), timeout=60)
        assert "stopped the server this Nuke started" in node["server_info"].value()
        assert process.poll() is not None
    finally:
        launcher.stop_started_servers()


def test_a_server_that_cannot_start_is_a_message_not_a_traceback(node, plates, tmp_path, monkeypatch):
    command = tmp_path / "mam2-broken"
    command.write_text("not a program")  # exists but cannot run: OSError in Popen
    monkeypatch.setenv("MAM2_SERVER_COMMAND", str(command))
    node["address"].setValue(f"tcp://127.0.0.1:{free_port()}")
    node["start_server"].setValue(True)
    node.setInput(0, plates)
    press(node, "track")
    assert status(node).startswith("Error: cannot start a MAM2 server with") and "Permission denied" in status(node)
    assert len(nuke.messages) == 1
    press(node, "restart_server", wait=False)
    nuke.standin_pump(until=lambda: not node["server_info"].value().startswith("restart:"), timeout=30)
    assert "cannot start a MAM2 server" in node["server_info"].value()


_NUKE = r"""
import os, runpy, sys
sys.path[:0] = [sys.argv[1]]
import nuke_testing
from nuke_testing import nuke
nuke.standin_reset()
nuke.GUI = False  # `nuke -t`: everything runs inline
node = nuke.createNode("MAM2")
node["address"].setValue(sys.argv[2])
node["restart_server"].execute()
from mam2_client import launcher
print(launcher.started_server(sys.argv[2]).process.pid, node["server_info"].value(), flush=True)
if sys.argv[3] == "crash":
    os._exit(1)  # no atexit, no cleanup: the server must notice on its own
"""


@pytest.mark.parametrize("how", ["quit", "crash"])
def test_the_server_goes_when_nuke_goes(tmp_path, how):
    address = f"tcp://127.0.0.1:{free_port()}"
    env = dict(os.environ, HOME=str(tmp_path), MAM2_SERVER_COMMAND=f"{sys.executable} -m mam2_server.cli")
    host = subprocess.run([sys.executable, "-c", _NUKE, str(Path(__file__).parent / "nuke_standin"), address, how],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    pid, info = host.stdout.split(" ", 1)
    assert "started by this Nuke" in info, host.stdout + host.stderr
    deadline = time.monotonic() + 20
    while process_alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not process_alive(int(pid)), f"the server outlived Nuke ({how})"
