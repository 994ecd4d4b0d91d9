"""The host-plugin client: no numpy/mam2_server needed, clear failures, retries, local server start."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_server_support import ROOT, ServerProcess, free_port  # noqa: E402

from host_plugins.mam2_client import Client, ServerUnavailable, ensure_server  # noqa: E402

pytestmark = pytest.mark.timeout(120)

_NO_NUMPY = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('numpy', 'mam2_server', 'nuke', 'bpy'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import array, struct
from host_plugins.mam2_client import Client, RawImage
c = Client(sys.argv[1], timeout=20)
assert c.hello()['protocol'] == 1
c.open_shot('nonumpy', first=1, last=2, width=4, height=2)
pixels = array.array('f', [0.25] * (4 * 2 * 3)).tobytes()
c.put_frames('nonumpy', {f: RawImage('<f4', (2, 4, 3), pixels) for f in (1, 2)})
c.add_prompt('nonumpy', 1, box=(0, 0, 2, 2))
result = c.propagate('nonumpy')
alpha = result.alphas[2]
values = struct.unpack('<8f', bytes(alpha.data))
assert alpha.shape == (2, 4) and all(0 <= v <= 1 for v in values), values
assert 'numpy' not in sys.modules and 'mam2_server' not in sys.modules
print('ok', values[0])
"""


def test_client_works_without_numpy_or_mam2_server(tmp_path):
    with ServerProcess(tmp_path / "cache") as server:
        out = subprocess.run([sys.executable, "-c", _NO_NUMPY, server.address], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr + server.tail()


def test_server_down_times_out_with_a_clear_message():
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with Client(address, timeout=0.3, retries=2) as client:
        with pytest.raises(ServerUnavailable) as info:
            client.hello()
    assert time.monotonic() - start < 3
    message = str(info.value)
    assert address in message and "2 tries" in message and "mam2 serve" in message


def test_lazy_pirate_reconnects_when_the_server_comes_up_late(tmp_path):
    port = free_port()
    holder = {}
    timer = threading.Timer(1.0, lambda: holder.update(server=ServerProcess(tmp_path / "cache", port=port)))
    timer.start()
    try:
        with Client(f"tcp://127.0.0.1:{port}", timeout=1.0, retries=30) as client:
            assert client.hello()["protocol"] == 1
    finally:
        timer.join()
        holder["server"].stop()


def test_ensure_server_reports_clearly_when_it_cannot_start(tmp_path, monkeypatch):
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnavailable, match="start one with `mam2 serve"):
        ensure_server(address, start=False, timeout=0.2)
    with pytest.raises(ServerUnavailable, match="not a local address"):
        ensure_server("tcp://192.0.2.1:5557", timeout=0.2)
    with pytest.raises(ServerUnavailable, match="cannot start a MAM2 server"):
        ensure_server(address, command=[str(tmp_path / "no-such-mam2")], timeout=0.2)
    with pytest.raises(ServerUnavailable, match="exited with code 3"):
        ensure_server(address, command=[sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
                      timeout=0.2, log_path=tmp_path / "serve.log")
    for name in ("MAM2_SERVER_COMMAND", "MAM2_PYTHON"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no `mam2` on it
    with pytest.raises(ServerUnavailable, match=r"none can be started.*set Preferences > MAM2 > Server command, or "
                                                r"MAM2_SERVER_COMMAND"):
        ensure_server(address, timeout=0.2, command_setting="Preferences > MAM2 > Server command")


def test_ensure_server_starts_a_local_server_with_a_clean_environment(tmp_path, monkeypatch):
    from host_plugins.mam2_client import launcher
    monkeypatch.setenv("PYTHONPATH", "/nonexistent/host/python/lib")  # a host's own Python setup
    monkeypatch.setenv("PYTHONHOME", "/nonexistent/host/python")      # would break the server's interpreter
    address = f"tcp://127.0.0.1:{free_port()}"
    client = ensure_server(address, command=[sys.executable, "-m", "mam2_server.cli"], wait=60, timeout=0.5,
                           serve_args=["--cache-dir", str(tmp_path / "cache"),
                                       "--engine-factory", "test_server_support:fast_engine"],
                           env={"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])},
                           log_path=tmp_path / "serve.log")
    try:
        assert client.hello()["engine"] == "testfast"
        assert ensure_server(address, timeout=2).hello()["protocol"] == 1  # found, not started twice
        server = launcher.started_server(address)
        assert server is not None and server.running()
        restarted = launcher.restart_server(address, timeout=0.5)  # same command, arguments and environment
        assert restarted.hello()["engine"] == "testfast"
        assert not server.running()
        assert launcher.started_server(address) is not server
        restarted.close()
        assert launcher.stop_server(address)
        assert launcher.started_server(address) is None
        assert not launcher.stop_server(address)  # nothing of ours there any more
        with pytest.raises(ServerUnavailable):
            ensure_server(address, start=False, timeout=0.3)
    finally:
        client.close()
        launcher.stop_started_servers()


def test_the_tests_never_use_the_token_file_of_whoever_runs_them(session_token_file):
    from host_plugins.mam2_client.auth import token_file
    assert token_file() == session_token_file  # what servers and clients started without token_file= use
    assert session_token_file != Path.home() / ".cache" / "mam2" / "token"


def test_a_client_logs_in_again_when_its_server_restarted_with_a_new_token(tmp_path):
    """The refused login is retried with the token file's new content; the refused request never reached the
    server, so even one that is never retried (shutdown) goes through."""
    token, port = tmp_path / "token", free_port()
    with ServerProcess(tmp_path / "cache", port=port, token_file=token) as first:
        client = first.client(retries=1)
        assert client.hello()["protocol"] == 1
        old = token.read_text()
    token.unlink()  # the next server makes a new token
    with ServerProcess(tmp_path / "cache", port=port, token_file=token) as second:
        assert token.read_text() != old
        time.sleep(0.5)  # the Client's socket reconnects by itself, with the old token, and is refused
        assert client.shutdown()["kind"] == "reply"  # the same Client: it logs in again with the new token
        assert second.proc.wait(30) == 0
    client.close()


def test_ensure_server_uses_a_token_file_transparently_and_names_a_server_it_may_not_use(tmp_path):
    from host_plugins.mam2_client import ServerError, launcher
    address = f"tcp://127.0.0.1:{free_port()}"
    token = tmp_path / "host" / "token"
    client = ensure_server(address, command=[sys.executable, "-m", "mam2_server.cli"], wait=60, timeout=0.5,
                           serve_args=["--cache-dir", str(tmp_path / "cache"),
                                       "--engine-factory", "test_server_support:fast_engine"],
                           env={"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])},
                           log_path=tmp_path / "serve.log", token_file=token)
    try:
        assert client.hello()["engine"] == "testfast"
        assert token.is_file() and token.stat().st_mode & 0o777 == 0o600  # the server made it; the client read it
        other = tmp_path / "other-token"
        other.write_text("another-users-token-0123456789")
        with pytest.raises(ServerError) as info:  # someone else's server: said (a timeout would be unavailable)
            ensure_server(address, timeout=2.0, token_file=other)
        assert info.value.code == "unauthorized" and str(other) in info.value.message
        server = launcher.started_server(address)
        restarted = launcher.restart_server(address, timeout=0.5)  # same token file
        assert restarted.hello()["protocol"] == 1 and not server.running()
        restarted.close()
        assert launcher.stop_server(address)  # a clean `shutdown`, sent with the server's token
        assert launcher.started_server(address) is None
        assert (tmp_path / "serve.log").read_text().count("shutdown requested") == 2  # both stops, none killed
    finally:
        client.close()
        launcher.stop_started_servers()


_HOST = r"""
import sys
sys.path.insert(0, sys.argv[1])
from host_plugins.mam2_client import ensure_server
client = ensure_server(sys.argv[2], command=[sys.argv[3], "-m", "mam2_server.cli"], wait=60, timeout=0.5,
                       serve_args=["--cache-dir", sys.argv[4], "--engine-factory", "test_server_support:fast_engine"],
                       env={"PYTHONPATH": sys.argv[5]})
from host_plugins.mam2_client import launcher
print(client.hello()["engine"], launcher.started_server(sys.argv[2]).process.pid, flush=True)
import os
if sys.argv[6] == "crash":
    os._exit(1)  # no atexit: the server must notice by itself
"""


@pytest.mark.parametrize("how", ["exit", "crash"])
def test_a_server_started_by_a_host_does_not_outlive_it(tmp_path, how):
    from mam2_server.server.watchdog import process_alive
    address = f"tcp://127.0.0.1:{free_port()}"
    host = subprocess.run([sys.executable, "-c", _HOST, str(ROOT), address, sys.executable, str(tmp_path / "cache"),
                           os.pathsep.join([str(ROOT), str(ROOT / "tests")]), how],
                          capture_output=True, text=True, timeout=90)
    engine, pid = host.stdout.split()
    assert engine == "testfast", host.stderr
    deadline = time.monotonic() + 20
    while process_alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not process_alive(int(pid)), f"the server outlived its host ({how})"
    with pytest.raises(ServerUnavailable):
        Client(address, timeout=0.3, retries=1).hello()


def test_exit_with_refuses_a_process_that_does_not_exist(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mam2_server.cli", "serve", "--address",
                          f"tcp://127.0.0.1:{free_port()}", "--cache-dir", str(tmp_path), "--engine", "baseline",
                          "--exit-with", "999999999"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2 and "no such process" in out.stderr


def test_reentrant_call_from_a_callback_is_refused_and_a_failing_callback_cancels(tmp_path):
    import numpy as np

    from host_plugins.mam2_client import MAM2Error
    from test_server_support import clip
    with ServerProcess(tmp_path / "cache", delay=0.2) as server:
        with server.client() as c:
            c.open_shot("cb", first=1, last=10, width=64, height=48)
            c.put_frames("cb", {i + 1: f for i, f in enumerate(clip(10))})
            c.add_prompt("cb", 1, box=(8, 10, 30, 30))
            with pytest.raises(MAM2Error, match="another Client"):
                c.propagate("cb", on_progress=lambda done, total, frame: c.status())
            deadline = time.monotonic() + 10
            while c.status()["jobs"] and time.monotonic() < deadline:  # cancelled, not left running
                time.sleep(0.1)
            assert c.status()["jobs"] == []
            assert isinstance(c.get_alpha("cb", [1])[0][1].to_numpy(), np.ndarray)


def test_tracking_job_reports_a_malformed_reply_instead_of_raising(monkeypatch, tmp_path):
    """A host's inline (headless) run calls run_job directly: any failure must come back as a message."""
    import threading

    from host_plugins.mam2_client import track

    class OddServer:
        def hello(self):
            return {"engine": "classic"}

        def open_shot(self, *args, **kwargs):
            return {}  # no "received": a server from another version

        def close(self):
            pass

    monkeypatch.setattr(track, "ensure_server", lambda *args, **kwargs: OddServer())
    job = track.TrackJob(address="tcp://127.0.0.1:1", start_server=False, engine=track.ENGINE_DEFAULT, shot="s",
                         first=1, last=2, width=8, height=8, plates={1: "a.exr", 2: "b.exr"},
                         prompt=track.ShotPrompt(frame=1, box=(1, 1, 6, 6)),
                         output_pattern=str(tmp_path / "a.%04d.exr"))
    result = track.run_job(job, threading.Event(), lambda message, percent: None)
    assert result.error.startswith("internal error") and "received" in result.error


def _terminates(context, seconds: float = 10.0) -> bool:
    """context.term() returns, so no socket of it was left open (it waits for every one, linger or not)."""
    thread = threading.Thread(target=context.term, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def test_a_client_whose_key_file_or_address_is_bad_leaves_no_socket_open(tmp_path):
    import zmq
    for address, kwargs in ((f"tcp://127.0.0.1:{free_port()}", {"curve_server_key": str(tmp_path / "no.key"),
                                                                 "curve_client_secret": str(tmp_path / "no.secret")}),
                            ("tcp://127.0.0.1:not-a-port", {})):
        context = zmq.Context()
        client = Client(address, timeout=0.3, retries=1, context=context, **kwargs)
        with pytest.raises((OSError, zmq.ZMQError)) as info:  # held, as a host shows it: so is its traceback
            client.hello()
        client.close()
        assert _terminates(context), f"a socket of the failed connect stayed open ({address}): {info.value}"


def test_the_serve_log_in_the_temporary_folder_is_private_and_never_a_planted_link(tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    address = f"tcp://127.0.0.1:{free_port()}"
    command = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    with pytest.raises(ServerUnavailable, match="exited with code 3"):
        ensure_server(address, command=command, timeout=0.2)
    log = tmp_path / f"mam2-serve-{os.getpid()}.log"
    assert log.stat().st_mode & 0o777 == 0o600 and "boom" in log.read_text()
    log.unlink()
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    log.symlink_to(victim)  # planted by someone else in the shared temporary folder
    with pytest.raises(ServerUnavailable, match="cannot start a MAM2 server"):
        ensure_server(address, command=command, timeout=0.2)
    assert victim.read_text() == "untouched"


@contextmanager
def _server_answering(code: str, token: str):
    """A loopback address where every request of a client logged in with `token` is answered with an error
    `code`."""
    import msgpack
    import zmq
    from zmq.auth.thread import ThreadAuthenticator
    context = zmq.Context()
    access = ThreadAuthenticator(context)
    access.start()
    access.configure_plain(domain="*", passwords={"mam2": token})
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.plain_server = True
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if sock.poll(50):
                identity, header, *_ = sock.recv_multipart()
                request = msgpack.unpackb(header)
                sock.send_multipart([identity, msgpack.packb({"v": 1, "id": request["id"], "op": request["op"],
                                                              "kind": "error", "code": code, "message": "no"})])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(5)
        sock.close()
        access.stop()
        context.term()


_REFUSING_SERVER = r"""
import os, sys, time, zmq
from zmq.auth.thread import ThreadAuthenticator
open(sys.argv[1], "w").write(str(os.getpid()))
ctx = zmq.Context()
auth = ThreadAuthenticator(ctx)
auth.start()
auth.configure_plain(domain="*", passwords={"mam2": "someone-elses-token-0123456789"})
sock = ctx.socket(zmq.ROUTER)
sock.plain_server = True
sock.bind(sys.argv[2])
time.sleep(120)
"""


def test_ensure_server_closes_its_clients_and_stops_what_it_started_whatever_goes_wrong(tmp_path):
    """An error answer (ServerError, not ServerUnavailable) leaves no socket open, and a server started here
    that turns out unusable (it refuses the login) is stopped, not left running unregistered."""
    import signal

    import zmq

    from host_plugins.mam2_client import ServerError, launcher
    from mam2_server.server.watchdog import process_alive
    token = tmp_path / "token"
    token.write_text("the-owners-token-0123456789")
    with _server_answering("shutting_down", token.read_text()) as theirs:  # hello is answered with an error
        context = zmq.Context()
        with pytest.raises(ServerError, match="shutting_down") as info:  # held, and so its traceback
            ensure_server(theirs, timeout=2.0, token_file=token, context=context)
        assert _terminates(context), f"the probe's sockets stayed open ({info.value.code})"
    address, pid_file = f"tcp://127.0.0.1:{free_port()}", tmp_path / "pid"
    context = zmq.Context()
    try:  # what it starts refuses its login: the wait for it ends in ServerError
        with pytest.raises(ServerError, match="unauthorized") as info:
            ensure_server(address, command=[sys.executable, "-c", _REFUSING_SERVER, str(pid_file), address],
                          wait=60, timeout=0.5, log_path=tmp_path / "serve.log", context=context)
        assert launcher.started_server(address) is None
        assert not process_alive(int(pid_file.read_text())), "the server it started was left running"
        assert _terminates(context), f"the waiting client's sockets stayed open ({info.value.code})"
    finally:
        if pid_file.exists() and process_alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_server_killed_mid_propagate_ends_the_wait_at_once_and_keeps_the_finished_frames(tmp_path):
    """No 600 s wait on a dead server (the host's run would stay stuck, Cancel or not): the closed
    connection ends the wait with a clear error, and the frames that came back are kept."""
    from test_server_support import clip
    BOX = (8, 10, 30, 30)
    server = ServerProcess(tmp_path / "cache", delay=0.2)
    got, outcome = [], {}
    try:
        server.wait_ready()
        client = server.client()  # the default frame_timeout (600 s)
        assert client.frame_timeout >= 600
        frames = clip(40)
        client.open_shot("killed", first=1, last=40, width=frames[0].shape[1], height=frames[0].shape[0])
        client.put_frames("killed", {i + 1: f for i, f in enumerate(frames)})
        client.add_prompt("killed", 1, box=BOX)

        def run():
            try:
                client.propagate("killed", on_alpha=lambda a: got.append(a.frame))
            except Exception as exc:  # noqa: BLE001
                outcome["error"] = exc
            outcome["at"] = time.monotonic()

        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 30
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        killed_at = time.monotonic()
        server.kill9()
        worker.join(30)
        client.close()
    finally:
        server.stop()
    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), ServerUnavailable), outcome
    assert "went away" in str(outcome["error"]) and "kept" in str(outcome["error"])
    assert outcome["at"] - killed_at < 5
    assert 3 <= len(got) < 40


def test_stop_cancels_a_propagate_while_no_frame_finishes(tmp_path):
    """A host's Cancel during a long frame reaches the server then, not after the next frame."""
    from test_server_support import clip
    BOX = (8, 10, 30, 30)
    with ServerProcess(tmp_path / "cache", delay=2.0) as server:
        with server.client() as client:
            frames = clip(6)
            client.open_shot("long", first=1, last=6, width=frames[0].shape[1], height=frames[0].shape[0])
            client.put_frames("long", {i + 1: f for i, f in enumerate(frames)})
            client.add_prompt("long", 1, box=BOX)
            started = time.monotonic()
            result = client.propagate("long", stop=lambda: time.monotonic() - started > 0.5)
    assert result.cancelled
    assert len(result.computed) == 1  # the frame in progress when Cancel came, no more


_LONG_JOB = r"""
import sys
sys.path.insert(0, sys.argv[2])
from test_server_support import clip
from host_plugins.mam2_client import Client
c = Client(sys.argv[1], timeout=20)
frames = clip(40)
c.open_shot("abandoned", first=1, last=40, width=frames[0].shape[1], height=frames[0].shape[0])
c.put_frames("abandoned", {i + 1: f for i, f in enumerate(frames)})
c.add_prompt("abandoned", 1, box=(8, 10, 30, 30))
def alpha(a):
    print("alpha", a.frame, flush=True)
c.propagate("abandoned", on_alpha=alpha)
"""


def test_a_killed_clients_propagate_is_cancelled_so_other_shots_do_not_wait(tmp_path):
    from test_server_support import clip
    with ServerProcess(tmp_path / "cache", delay=0.25) as server:
        job = subprocess.Popen([sys.executable, "-c", _LONG_JOB, server.address, str(Path(__file__).parent)],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            assert job.stdout.readline().startswith("alpha"), server.tail()
        finally:
            job.kill()
            job.wait(10)
        with server.client() as other:
            frames = clip(3, seed=1)
            other.open_shot("waiting", first=1, last=3, width=frames[0].shape[1], height=frames[0].shape[0])
            other.put_frames("waiting", {i + 1: f for i, f in enumerate(frames)})
            other.add_prompt("waiting", 1, box=(8, 10, 30, 30))
            started = time.monotonic()
            result = other.propagate("waiting")
            waited = time.monotonic() - started
            status = other.status()
    assert sorted(result.computed) == [1, 2, 3]
    assert waited < 4.0, (waited, status)  # not behind the ~38 frames (9.5 s) no one would read


def test_a_peer_that_closes_every_connection_before_a_login_times_out_and_does_not_hang():
    """Not a MAM2 server (or a CURVE key of another server): the connection closes before its
    handshake completes, again on every reconnect; the client must still give up at its timeout."""
    import socket
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    done = threading.Event()

    def close_everything():
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.close()

    closer = threading.Thread(target=close_everything, daemon=True)
    closer.start()
    started = time.monotonic()
    try:
        with Client(f"tcp://127.0.0.1:{listener.getsockname()[1]}", timeout=1.0, retries=1) as client:
            with pytest.raises(ServerUnavailable, match="no reply"):
                client.hello()
    finally:
        done.set()
        closer.join(5)
        listener.close()
    assert time.monotonic() - started < 5
