"""Things that come and go under the Nuke node: the node itself (deleted, script closed mid-run) and the
server it starts (clean environment, stopped from the node, gone when Nuke quits or crashes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "nuke_standin"))
from nuke_testing import (BOX, FIRST, ROOT, make_read, node, nuke, plates, press, runner, server,  # noqa: F401
                          status, write_plates)
from test_server_support import ServerProcess, free_port

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


_QUIT = r"""
import atexit, json, os, sys, threading, time
from pathlib import Path
sys.path[:0] = [sys.argv[1]]
report = {}


def last():  # registered first, so it runs after every other atexit callback: what is left at the very end
    report["exited_at"] = time.time()
    report["workers"] = [t.name for t in threading.enumerate() if t.name.startswith("mam2-")]
    report["contexts_closed"] = [job.context.closed for job in jobs]
    report["scratch_left"] = [os.path.exists(job.scratch) for job in jobs]
    print(json.dumps(report), flush=True)


atexit.register(last)
from nuke_testing import BOX, FIRST, make_read, nuke, write_plates
from mam2_nuke import runner
folder, when = Path(sys.argv[3]), sys.argv[4]
nuke.standin_reset(str(folder / "comp_v001.nk"))
write_plates(folder / "p")
node = nuke.createNode("MAM2")
node["address"].setValue(sys.argv[2])
node["start_server"].setValue(False)
node["box"].setValue(BOX)
read = make_read(str(folder / "p" / "plate.####.exr"), FIRST, FIRST + 5)
if when == "rendering":
    read["frame_mode"].setValue("offset")  # Nuke must render it: the worker waits for the main thread
    read["frame"].setValue("0")
node.setInput(0, read)
nuke.frame(FIRST)
node["track"].execute()
jobs = list(runner._jobs.values())
message = "tracking" if when == "computing" else "rendering input frames 1001-1006 (0/6 sent)"
deadline = time.monotonic() + 60
while not any(v == message for _, kind, v in nuke.progress_log) and time.monotonic() < deadline:
    time.sleep(0.05)  # the main thread is busy elsewhere: nothing queued for it runs
time.sleep(1.0)  # computing: the propagate is on the server; rendering: the render waits for the main thread
report["quit_at"] = time.time()
nuke.scriptClose()  # Nuke quits: the script closes, then its Python finalises (atexit)
"""


@pytest.mark.parametrize("when", ["computing", "rendering"])
def test_quitting_nuke_mid_run_cancels_it_and_leaves_no_worker_holding_a_socket(tmp_path, when):
    """Quitting while a slow frame computes, or while the worker waits for the main thread to render: Nuke exits
    within seconds, no worker holds a socket of a live context (that hangs an embedded Python's exit), and the
    server stops the job."""
    with ServerProcess(tmp_path / "cache", delay=8.0) as slow:  # every frame takes 8 s
        host = subprocess.run([sys.executable, "-c", _QUIT, str(Path(__file__).parent / "nuke_standin"), slow.address,
                               str(tmp_path), when], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert host.returncode == 0, host.stderr
        report = json.loads(host.stdout.strip().splitlines()[-1])
        assert report["exited_at"] - report["quit_at"] < 10, report
        assert report["contexts_closed"] == [True] and report["scratch_left"] == [False], report
        if when == "computing":
            assert report["workers"] == [], report  # it was let go of its socket and ended
        with slow.client() as client:
            deadline = time.monotonic() + 20
            jobs = client.status()["jobs"]
            while jobs and time.monotonic() < deadline:  # the frame in progress finishes, then the job stops
                time.sleep(0.2)
                jobs = client.status()["jobs"]
            assert jobs == [], "the server kept computing the job of a Nuke that quit"
