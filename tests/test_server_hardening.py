"""What an outside probe found (issue 15), each fixed and pinned: slow files, corrupt uploads, limits that bite
before memory is spent, the op in every error, IPv6 loopback, NUL paths, owner-only access, shutting_down."""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

sys.path.insert(0, str(Path(__file__).parent))
from test_server_support import FastEngine, ServerProcess, clip, free_port  # noqa: E402

from host_plugins.mam2_client import Client, ServerError, ServerUnavailable  # noqa: E402
from host_plugins.mam2_client.auth import read_token  # noqa: E402
from mam2_server.io import encode_image, write_image  # noqa: E402

pytestmark = pytest.mark.timeout(120)
BOX = (8, 10, 30, 30)


@contextmanager
def in_process_server(tmp_path: Path, **config):
    """A Server on a thread of this process (so tests can slow its disk down); yields a Client factory."""
    from mam2_server.server import Server, ServerConfig
    cfg = ServerConfig(address=f"tcp://127.0.0.1:{free_port()}", cache_dir=tmp_path / "cache",
                       token_file=tmp_path / "token", **config)
    server = Server(FastEngine(), cfg)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def client(**kwargs) -> Client:
        return Client(cfg.address, token_file=tmp_path / "token", **{"timeout": 20.0, **kwargs})
    try:
        with client(timeout=0.5, retries=40) as c:
            c.hello()
        yield client
    finally:
        server.stop()
        thread.join(30)


def _plate_file(path: Path, frame: np.ndarray) -> str:
    write_image(path, frame, channels=("R", "G", "B"), pixel_type="half")
    return str(path)


def _code(call) -> ServerError:
    with pytest.raises(ServerError) as info:
        call()
    return info.value


# -- 1: a slow or hostile file costs its own request a bounded time, never another client's --------------
def test_a_hung_file_is_refused_within_the_budget_while_other_clients_are_served(tmp_path, monkeypatch):
    from mam2_server.server import files
    release = threading.Event()
    real_read_info = files.read_info

    def hanging_read_info(path, **kwargs):  # a plate on a disk that stopped answering
        if Path(path).name == "hung.exr":
            release.wait(60)
        return real_read_info(path, **kwargs)

    monkeypatch.setattr(files, "read_info", hanging_read_info)
    frames = clip(3)
    try:
        with in_process_server(tmp_path, file_seconds=1.0) as client, client() as a, client() as b:
            a.open_shot("slow", first=1, last=3, width=64, height=48)
            a.put_frames("slow", {1: frames[0], 2: frames[1]})
            a.add_prompt("slow", 1, box=BOX)
            a.propagate("slow", last=2)
            hung = _plate_file(tmp_path / "hung.exr", frames[2])
            fine = _plate_file(tmp_path / "fine.exr", frames[2])
            outcome = {}

            def put_hung() -> None:
                start = time.monotonic()
                try:
                    a.put_frames("slow", {3: hung}, encoding="path")
                except ServerError as exc:
                    outcome.update(error=exc, seconds=time.monotonic() - start)

            worker = threading.Thread(target=put_hung)
            worker.start()
            time.sleep(0.2)
            waits = []
            while worker.is_alive():  # another client's data ops are answered meanwhile
                start = time.monotonic()
                found, _ = b.get_alpha("slow", [1, 2])
                waits.append(time.monotonic() - start)
                assert sorted(found) == [1, 2]
            worker.join()
            assert outcome["error"].code == "bad_frame" and "longer than 1 s" in outcome["error"].message
            assert outcome["seconds"] < 5
            assert len(waits) >= 3 and max(waits) < 0.5, waits
            assert b.put_frames("slow", {3: fine}, encoding="path") == [3]  # the hung read holds no stage
    finally:
        release.set()


def test_big_non_image_and_oversized_files_are_refused_at_once(tmp_path):
    zeros = tmp_path / "zeros.exr"  # OpenImageIO would try every reader on it: ~25 s per 200 MB
    with open(zeros, "wb") as f:
        f.truncate(200 << 20)
    big = tmp_path / "big.exr"
    with open(big, "wb") as f:
        f.write(b"\x76\x2f\x31\x01\x02\x00\x00\x00")
        f.truncate(1 << 30)
    with in_process_server(tmp_path, max_file_bytes=512 << 20) as client, client() as c:
        c.open_shot("big", first=1, last=1, width=64, height=48)
        for path, fragment in ((zeros, "not an image"), (big, "over this server's limit")):
            start = time.monotonic()
            error = _code(lambda: c.put_frames("big", {1: str(path)}, encoding="path"))
            assert error.code == "bad_frame" and fragment in error.message, error
            assert time.monotonic() - start < 2
        assert c.hello()["limits"]["max_file_bytes"] == 512 << 20


def test_allow_path_holds_against_symlinks_dot_dot_and_sibling_prefixes(tmp_path):
    plates, evil = tmp_path / "plates", tmp_path / "plates-evil"
    plates.mkdir()
    evil.mkdir()
    frame = clip(1)[0]
    inside = _plate_file(plates / "in.exr", frame)
    outside = _plate_file(evil / "out.exr", frame)
    (plates / "link.exr").symlink_to(outside)
    with in_process_server(tmp_path, allowed_roots=[plates.resolve()]) as client, client() as c:
        c.open_shot("allow", first=1, last=1, width=64, height=48)
        assert c.put_frames("allow", {1: inside}, encoding="path") == [1]
        for path in (outside, str(plates / "link.exr"), str(plates / ".." / "plates-evil" / "out.exr")):
            error = _code(lambda: c.put_frames("allow", {1: path}, encoding="path"))
            assert error.code == "bad_frame" and "--allow-path" in error.message, error
        error = _code(lambda: c.add_prompt("allow", 1, mask=outside))  # a mask by path, too
        assert error.code == "bad_frame" and "--allow-path" in error.message, error


# -- 2: corrupt uploads are refused on arrival, and no message shows where the cache is -----------------
def test_corrupt_uploads_are_refused_on_arrival(tmp_path):
    frame = clip(1)[0]
    exr = encode_image(frame, channels=("R", "G", "B"), pixel_type="half", compression="none")
    png = encode_image(np.clip(frame, 0, 1), channels=("R", "G", "B"), suffix=".png")
    truncated_file = tmp_path / "cut.exr"
    truncated_file.write_bytes(exr[:-100])
    with ServerProcess(tmp_path / "cache") as server, server.client() as c:
        c.open_shot("bad", first=1, last=2, width=64, height=48)
        for payload, encoding, fragment in ((exr[:-100], "exr", "truncated"), (exr[:200], "exr", "truncated"),
                                            (png, "exr", "PNG"), (str(truncated_file), "path", "truncated")):
            error = _code(lambda: c.put_frames("bad", {1: payload}, encoding=encoding))
            assert error.code == "bad_frame" and fragment in error.message, error
            assert str(server.cache_dir) not in error.message
        assert c.status()["shots"][0]["received"] == 0
        # a stored frame that goes bad later fails propagate without naming the cache
        c.put_frames("bad", {1: frame, 2: frame})
        c.add_prompt("bad", 1, box=BOX)
        stored = next((server.cache_dir / "shots" / "bad" / "frames").glob("2.*.exr"))
        stored.write_bytes(stored.read_bytes()[:500])
        error = _code(lambda: c.propagate("bad"))
        assert error.code == "engine_error" and str(server.cache_dir) not in error.message, error


# -- 3: limits bite before the memory is spent ----------------------------------------------------------
def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's peak RSS from /proc")
def test_message_limits_bite_before_the_memory_is_spent(tmp_path):
    with ServerProcess(tmp_path / "cache", extra=("--max-message", "4M")) as server, server.client() as c:
        c.open_shot("lim", first=1, last=100, width=64, height=48)
        token = read_token()
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(server.address)

        def send(header: dict, buffers: list) -> dict:
            sock.send_multipart([msgpack.packb({"v": 1, "id": "x", "token": token, **header}), *buffers])
            assert sock.poll(10000), server.tail()
            return msgpack.unpackb(sock.recv_multipart()[0])

        frame = {"encoding": "raw", "buffer": 1, "dtype": "<f4", "shape": [48, 64, 3]}
        reply = send({"op": "put_frames", "shot": "lim", "frames": [{**frame, "frame": 1}]}, [b"\0"] * 65)
        assert reply["code"] == "too_large" and "65 buffers" in reply["message"] and reply["op"] == "put_frames"
        reply = send({"op": "put_frames", "shot": "lim", "frames": []}, [b"\0" * (3 << 20)] * 2)
        assert reply["code"] == "too_large" and "message of" in reply["message"]
        sock.close()
        before = _peak_rss(server.proc.pid)
        # one 256 MiB frame: ZeroMQ reads its size and drops the connection before buffering it
        with Client(server.address, timeout=2.0, retries=1) as big:
            with pytest.raises(ServerUnavailable):
                big.request("put_frames", {"shot": "lim", "frames": [{**frame, "frame": 1}]}, [b"\0" * (256 << 20)])
        assert c.hello()["limits"]["max_message_bytes"] == 4 << 20
        assert _peak_rss(server.proc.pid) - before < 64 << 20


# -- 4 and 5: every error names its op; IPv6 loopback; NUL bytes ------------------------------------------
def test_every_error_names_the_op_it_answers(tmp_path):
    with ServerProcess(tmp_path / "cache") as server:
        token = read_token()
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(server.address)
        cases = [
            (msgpack.packb({"v": 1, "id": 1, "token": token, "op": "open_shot", "shot": "s", "first": "x"}),
             "open_shot", "bad_message"),
            (msgpack.packb({"v": 1, "id": 2, "token": token, "op": "get_alpha", "shot": "s", "frames": [1],
                            "extra": 1}), "get_alpha", "bad_message"),
            (msgpack.packb({"v": 2, "id": 3, "token": token, "op": "status"}), "status", "bad_version"),
            (msgpack.packb({"v": 1, "id": 4, "token": token, "op": "launch"}), None, "unknown_op"),
            (b"\xc1\xc1", None, "bad_message"),
            (msgpack.packb({"v": 1, "id": 5, "token": token, "op": "put_frames", "shot": "s",
                            "frames": [{"frame": 1, "encoding": "path", "path": "/tmp/a\0b.exr"}]}),
             "put_frames", "bad_frame"),  # a NUL byte: a plain bad_frame, not an internal error
        ]
        for header, op, code in cases:
            sock.send_multipart([header])
            assert sock.poll(10000)
            reply = msgpack.unpackb(sock.recv_multipart()[0])
            assert (reply["kind"], reply["op"], reply["code"]) == ("error", op, code), reply
        sock.close()


def test_ipv6_loopback_serves(tmp_path):
    if not Path("/proc/net/if_inet6").exists() or not Path("/proc/net/if_inet6").read_text().strip():
        pytest.skip("no IPv6 on this machine")
    with ServerProcess(tmp_path / "cache", host="[::1]") as server, server.client() as c:
        frames = clip(2)
        c.open_shot("v6", first=1, last=2, width=64, height=48)
        c.put_frames("v6", {1: frames[0], 2: frames[1]})
        c.add_prompt("v6", 1, box=BOX)
        assert sorted(c.propagate("v6").computed) == [1, 2]


# -- 6: only the user who started the server may use or stop it ------------------------------------------
def test_only_the_token_holder_can_use_or_stop_the_server(tmp_path):
    owner = tmp_path / "owner" / "token"
    with ServerProcess(tmp_path / "cache", token_file=owner) as server:
        assert owner.stat().st_mode & 0o777 == 0o600 and owner.parent.stat().st_mode & 0o777 == 0o700
        stranger = tmp_path / "stranger-token"
        stranger.write_text("someone-elses-token-0123456789")
        with server.client(token_file=stranger) as other:
            for call in (other.hello, other.status, lambda: other.cancel(shot="x"), other.shutdown,
                         lambda: other.open_shot("mine", first=1, last=2, width=64, height=48),
                         lambda: other.put_frames("mine", {1: "/etc/hostname"}, encoding="path")):
                assert _code(call).code == "unauthorized"
        with server.client(token_file=tmp_path / "none") as anonymous:  # no token file at all
            assert _code(anonymous.hello).code == "unauthorized"
        with server.client() as mine:
            assert mine.hello()["protocol"] == 1
            assert mine.status()["shots"] == []  # the stranger's open_shot never happened
        assert server.proc.poll() is None


def test_the_token_file_is_created_private_once_and_must_be_ours(tmp_path):
    from mam2_server.server.security import SecurityError, load_or_create_token
    path = tmp_path / "a" / "b" / "token"
    tokens = []
    threads = [threading.Thread(target=lambda: tokens.append(load_or_create_token(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(tokens)) == 1 and len(tokens[0]) >= 32  # servers starting together agree
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert not [p for p in path.parent.iterdir() if p != path]
    if os.getuid() == 0:  # only root can give a file away
        os.chown(path, 12345, 12345)
        with pytest.raises(SecurityError, match="another user"):
            load_or_create_token(path)


# -- 7: requests after shutdown are answered `shutting_down` until the server is gone ----------------------
def test_requests_after_a_shutdown_get_shutting_down_while_a_propagate_finishes(tmp_path):
    with ServerProcess(tmp_path / "cache", delay=0.6) as server, server.client() as c:
        c.open_shot("stop", first=1, last=20, width=64, height=48)
        c.put_frames("stop", dict(enumerate(clip(20), 1)))
        c.add_prompt("stop", 1, box=BOX)
        result = {}
        worker = threading.Thread(target=lambda: result.update(r=c.propagate("stop")))
        worker.start()
        time.sleep(1.0)
        with server.client(retries=1) as other:
            other.shutdown()
            assert _code(other.hello).code == "shutting_down"
            assert _code(lambda: other.get_alpha("stop", [1])).code == "shutting_down"
        worker.join(20)
        assert result["r"].cancelled and result["r"].computed
        assert server.proc.wait(20) == 0
