"""What an outside probe found (issue 15), each fixed and pinned: slow files, corrupt uploads, limits that bite
before memory is spent, the op in every error, IPv6 loopback, NUL paths, owner-only access, shutting_down.

Timings are asserted against the configured budget with wide margins (a busy 2-core CI machine), never as
absolute figures: what a test proves is that a wait is a fraction of the budget, not that it is fast."""
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
from test_server_support import ServerProcess, clip, in_process_server, owner_socket  # noqa: E402

from host_plugins.mam2_client import Client, ServerError, ServerUnavailable  # noqa: E402
from mam2_server.io import encode_image, write_image  # noqa: E402

pytestmark = pytest.mark.timeout(120)
BOX = (8, 10, 30, 30)


def _plate_file(path: Path, frame: np.ndarray) -> str:
    write_image(path, frame, channels=("R", "G", "B"), pixel_type="half")
    return str(path)


def _code(call) -> ServerError:
    with pytest.raises(ServerError) as info:
        call()
    return info.value


# -- 1: a slow or hostile file costs its own request a bounded time, never another client's --------------
@contextmanager
def hanging_disk(monkeypatch):
    """Until the block ends, reads of files named `hung*` hang like a dead mount, and so do the pixels (not
    the headers) of files named `dead*`: a disk that died after their put_frames."""
    from mam2_server.server import files
    release = threading.Event()

    def hang(real, prefixes):
        def read(path, **kwargs):
            if Path(os.path.realpath(path)).name.startswith(prefixes):  # the server reads /proc/self/fd/N
                release.wait(120)
            return real(path, **kwargs)
        return read

    monkeypatch.setattr(files, "read_info", hang(files.read_info, ("hung",)))
    monkeypatch.setattr(files, "read_image", hang(files.read_image, ("hung", "dead")))
    try:
        yield
    finally:
        release.set()


def _put_path(frame: int, path: str, shot: str) -> bytes:
    return msgpack.packb({"v": 1, "id": f"put-{frame}", "op": "put_frames", "shot": shot,
                          "frames": [{"frame": frame, "encoding": "path", "path": path}]})


def test_a_hung_file_is_refused_within_the_budget_while_other_clients_are_served(tmp_path, monkeypatch):
    budget = 4.0
    frames = clip(3)
    with hanging_disk(monkeypatch), in_process_server(tmp_path, file_seconds=budget) as client, \
            client() as b:
        b.open_shot("slow", first=1, last=3, width=64, height=48)
        b.put_frames("slow", {1: frames[0], 2: frames[1]})
        b.add_prompt("slow", 1, box=BOX)
        b.propagate("slow", last=2)
        hung = _plate_file(tmp_path / "hung.exr", frames[2])
        fine = _plate_file(tmp_path / "fine.exr", frames[2])
        a = owner_socket(client.address, client.token_file)  # one client pipelines two reads of a dead disk
        start = time.monotonic()
        a.send_multipart([_put_path(3, hung, "slow")])
        a.send_multipart([_put_path(2, hung, "slow")])
        time.sleep(0.2)
        waits = []
        while time.monotonic() - start < 1.5 * budget:  # meanwhile another client's data ops and files are served
            t0 = time.monotonic()
            found, _ = b.get_alpha("slow", [1, 2])
            assert sorted(found) == [1, 2]
            assert b.put_frames("slow", {3: fine}, encoding="path") == [3]
            waits.append(time.monotonic() - t0)
        answers = []
        for _ in range(2):
            assert a.poll(int(4 * budget * 1000)), "no answer to a hung read"
            answers.append(msgpack.unpackb(a.recv_multipart()[0]))
            answers[-1]["seconds"] = time.monotonic() - start
        a.close()
        for answer in answers:
            assert answer["code"] == "bad_frame" and f"longer than {budget:g} s" in answer["message"], answer
        assert answers[0]["seconds"] < 2 * budget + 10  # its own budget (the disk hangs for 120 s)
        # none of b's calls waited for a's disk (they would have waited the budget): margins for a busy CI
        assert len(waits) >= 2 and max(waits) < budget / 2, waits


def test_hung_reads_use_up_only_their_own_lane(tmp_path, monkeypatch):
    """A client hanging read after read on a dead mount ends up refused at once; other clients' files, and
    the plates other shots read at propagate, are read as before; a shot whose plates hang uses up its own."""
    budget = 0.5
    frames = clip(3)
    plates = {i: _plate_file(tmp_path / f"plate{i}.exr", f) for i, f in enumerate(frames, 1)}
    dead = {i: _plate_file(tmp_path / f"dead{i}.exr", f) for i, f in enumerate(frames, 1)}
    hung = _plate_file(tmp_path / "hung.exr", frames[0])
    with hanging_disk(monkeypatch), in_process_server(tmp_path, file_seconds=budget) as client, \
            client() as a, client() as b:
        a.open_shot("a", first=1, last=1, width=64, height=48)
        refusals = [_code(lambda: a.put_frames("a", {1: hung}, encoding="path")).message
                    for _ in range(10)]  # more than the whole server's former pool of 8
        assert all("longer than" in m for m in refusals[:4]), refusals
        assert all("still hanging" in m and "this client" in m for m in refusals[4:]), refusals
        b.open_shot("b", first=1, last=3, width=64, height=48)
        assert b.put_frames("b", plates, encoding="path") == [1, 2, 3]
        b.add_prompt("b", 1, box=BOX)
        assert sorted(b.propagate("b").computed) == [1, 2, 3]  # its plates are read at propagate
        b.open_shot("dead", first=1, last=3, width=64, height=48)
        assert b.put_frames("dead", dead, encoding="path") == [1, 2, 3]
        b.add_prompt("dead", 1, box=BOX)
        refusals = [_code(lambda: b.propagate("dead")) for _ in range(10)]
        assert all(r.code == "bad_frame" for r in refusals), refusals
        assert all("longer than" in r.message for r in refusals[:4]), refusals
        assert all("still hanging" in r.message and "shot 'dead'" in r.message for r in refusals[4:]), refusals
        b.add_prompt("b", 1, box=(10, 12, 34, 30))  # every frame of b is computed again, from its plates
        assert sorted(b.propagate("b").computed) == [1, 2, 3]


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
            assert error.code == "bad_frame" and fragment in error.message, error  # not "longer than 10 s"
            assert time.monotonic() - start < 8  # OpenImageIO alone would spend ~25 s on the zeros
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
        sock = owner_socket(server.address)

        def send(header: dict, buffers: list) -> dict:
            sock.send_multipart([msgpack.packb({"v": 1, "id": "x", **header}), *buffers])
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


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's peak RSS from /proc")
def test_a_stranger_never_gets_a_message_into_the_server(tmp_path):
    """Logging in is the connection's handshake: a peer with a wrong token, or none, is dropped before ZeroMQ
    reads a frame of its messages, so 64 buffers of 7 MiB (under --max-message each) cost the server nothing."""
    from host_plugins.mam2_client.auth import use_token
    with ServerProcess(tmp_path / "cache", extra=("--max-message", "8M")) as server, server.client() as owner, \
            server.client() as other:
        owner.open_shot("mine", first=1, last=2, width=64, height=48)
        before = _peak_rss(server.proc.pid)
        big = b"\0" * (7 << 20)
        header = msgpack.packb({"v": 1, "id": "x", "op": "put_frames", "shot": "mine", "frames": [
            {"frame": 1, "encoding": "raw", "buffer": i, "dtype": "<f4", "shape": [1792, 1024]} for i in range(1, 65)]})
        strangers = []
        for password in ("a-guessed-token-0123456789", None):  # a wrong password; no login at all
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDTIMEO, 2000)  # once refused, the socket has no connection to queue on
            if password is not None:
                use_token(sock, password)
            sock.connect(server.address)
            sent = 0
            for _ in range(3):
                try:
                    sock.send_multipart([header, *[big] * 64], copy=False)
                    sent += 1
                except zmq.Again:
                    break
            assert sent  # the first one at least was on its way before the handshake failed
            strangers.append(sock)
        frames = clip(2)
        assert owner.put_frames("mine", {1: frames[0], 2: frames[1]}) == [1, 2]  # meanwhile everyone else is served
        assert other.hello()["protocol"] == 1
        owner.add_prompt("mine", 1, box=BOX)
        assert sorted(owner.propagate("mine").computed) == [1, 2]
        for sock in strangers:
            assert not sock.poll(1000)  # never answered: the server never saw a message
            sock.close()
        assert _peak_rss(server.proc.pid) - before < 64 << 20  # 2 x 3 x 448 MiB were sent


# -- 4 and 5: every error names its op; IPv6 loopback; NUL bytes ------------------------------------------
def test_every_error_names_the_op_it_answers(tmp_path):
    with ServerProcess(tmp_path / "cache") as server:
        sock = owner_socket(server.address)
        cases = [
            (msgpack.packb({"v": 1, "id": 1, "op": "open_shot", "shot": "s", "first": "x"}),
             "open_shot", "bad_message"),
            (msgpack.packb({"v": 1, "id": 2, "op": "get_alpha", "shot": "s", "frames": [1],
                            "extra": 1}), "get_alpha", "bad_message"),
            (msgpack.packb({"v": 2, "id": 3, "op": "status"}), "status", "bad_version"),
            (msgpack.packb({"v": 1, "id": 4, "op": "launch"}), None, "unknown_op"),
            (b"\xc1\xc1", None, "bad_message"),
            (msgpack.packb({"v": 1, "id": 5, "op": "put_frames", "shot": "s",
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


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes and symbolic links")
def test_a_token_file_others_could_read_or_swap_is_refused(tmp_path):
    from mam2_server.server.security import SecurityError, load_or_create_token
    secret = tmp_path / "someone-elses-secret"
    secret.write_text("a-secret-this-server-must-not-hand-out-0123456789\n")
    secret.chmod(0o600)
    link = tmp_path / "dir" / "token"
    link.parent.mkdir(mode=0o700)
    link.symlink_to(secret)  # planted where the server looks: it would serve whoever can read the target
    with pytest.raises(SecurityError, match="symbolic link"):
        load_or_create_token(link)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")  # not followed to create the target either
    with pytest.raises(SecurityError, match="symbolic link"):
        load_or_create_token(tmp_path / "dangling")
    assert not (tmp_path / "nowhere").exists()
    loose = tmp_path / "loose"
    loose.write_text("a-token-everyone-can-read-0123456789\n")
    for mode in (0o644, 0o640, 0o604, 0o700):
        loose.chmod(mode)
        with pytest.raises(SecurityError, match=f"mode {mode:04o}.*chmod 600"):
            load_or_create_token(loose)
    loose.chmod(0o400)  # read-only for its owner is fine
    assert load_or_create_token(loose) == "a-token-everyone-can-read-0123456789"
    os.mkfifo(tmp_path / "fifo", 0o600)  # neither blocks on a FIFO nor reads it
    with pytest.raises(SecurityError, match="not a regular file"):
        load_or_create_token(tmp_path / "fifo")
    server = ServerProcess(tmp_path / "cache", token_file=link)  # `mam2 serve` says why and stops
    try:
        assert server.proc.wait(60) != 0
        assert "symbolic link" in server.tail()
    finally:
        server.stop()


# -- 7: requests after shutdown are answered `shutting_down` until the server is gone ----------------------
def test_requests_after_a_shutdown_get_shutting_down_while_a_propagate_finishes(tmp_path):
    with ServerProcess(tmp_path / "cache", delay=0.6) as server, server.client() as c:
        c.open_shot("stop", first=1, last=20, width=64, height=48)
        c.put_frames("stop", dict(enumerate(clip(20), 1)))
        c.add_prompt("stop", 1, box=BOX)
        result, running = {}, threading.Event()
        worker = threading.Thread(target=lambda: result.update(
            r=c.propagate("stop", on_progress=lambda done, total, frame: running.set())))
        worker.start()
        assert running.wait(60)  # a frame is done: the job is mid-shot (each frame takes 0.6 s)
        with server.client(retries=1) as other:
            other.shutdown()
            assert _code(other.hello).code == "shutting_down"
            assert _code(lambda: other.get_alpha("stop", [1])).code == "shutting_down"
        worker.join(60)
        assert result["r"].cancelled and result["r"].computed
        assert server.proc.wait(60) == 0


# -- review follow-ups: the token never logged, symlink swaps, mask headers ------------------------------
def test_the_token_never_reaches_the_log_even_at_debug(caplog):
    """pyzmq's authenticator logs a PLAIN login's password at DEBUG, and `mam2 -vv serve` sets DEBUG."""
    import logging

    from mam2_server.server.security import OwnerToken
    token = "the-owners-secret-token-0123456789"
    caplog.set_level(logging.DEBUG)  # the root logger, as `mam2 -vv` sets it
    ctx = zmq.Context()
    access = OwnerToken(ctx, token)
    server = ctx.socket(zmq.ROUTER)
    server.setsockopt(zmq.LINGER, 0)
    access.apply_server(server)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    client = ctx.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.plain_username, client.plain_password = b"mam2", token.encode()
    client.connect(f"tcp://127.0.0.1:{port}")
    try:
        client.send(b"hello")
        assert server.poll(10000), "the login was refused"
        server.recv_multipart()
    finally:
        client.close()
        server.close()
        access.stop()
        ctx.term()
    assert token not in caplog.text
    assert not [r for r in caplog.records if r.name.endswith(".zap") and r.levelno < logging.INFO]


def test_allow_path_holds_when_a_directory_is_swapped_for_a_link_after_the_check(tmp_path, monkeypatch):
    """The check on the resolved path is repeated on the file actually opened, which is the one read."""
    from mam2_server.protocol import ProtocolError
    from mam2_server.server import files
    plates, evil = tmp_path / "plates", tmp_path / "evil"
    plates.mkdir()
    evil.mkdir()
    frame = clip(1)[0]
    inside = _plate_file(plates / "in.exr", frame)
    _plate_file(evil / "out.exr", frame)
    (plates / "swapped").symlink_to(evil)  # was a real directory of plates when the path was resolved
    real_realpath = os.path.realpath

    def resolved_before_the_swap(path, *args, **kwargs):
        return str(path) if str(path).startswith(str(plates / "swapped")) else real_realpath(path, *args, **kwargs)

    monkeypatch.setattr(files.os.path, "realpath", resolved_before_the_swap)
    reader = files.FileReader([plates.resolve()], 1 << 30, None)
    lane = ("client", b"c")
    swapped = str(plates / "swapped" / "out.exr")
    for call in (lambda: reader.plate(swapped, lane), lambda: reader.pixels(swapped, lane)):
        with pytest.raises(ProtocolError) as info:
            call()
        assert info.value.code == "bad_frame" and "--allow-path" in info.value.message, info.value
    plate = reader.plate(inside, lane)
    st = os.stat(inside)
    assert plate.path == inside and plate.info.full_width == 64
    assert reader.pixels(inside, lane).shape == (48, 64, 3)
    monkeypatch.setattr(files, "_opened_path", lambda fd: None)  # no /proc: the path check alone, as before
    assert reader.plate(inside, lane).digest == plate.digest and st.st_ino == os.stat(inside).st_ino


def test_a_plate_read_at_propagate_must_be_the_file_accepted_at_put_frames(tmp_path, monkeypatch):
    """Replaced by another file (a new inode, even with the same bytes and mtime) before the read, or
    rewritten while it is decoded: bad_frame, never pixels under the accepted file's digest."""
    from mam2_server.protocol import ProtocolError
    from mam2_server.server import files
    reader = files.FileReader(None, 1 << 30, None)
    lane = ("shot", "s")
    frame = clip(1)[0]
    path = _plate_file(tmp_path / "plate.exr", frame)
    accepted = reader.plate(path, lane).digest
    assert reader.pixels(path, lane, accepted=accepted).shape == (48, 64, 3)
    st = os.stat(path)
    _plate_file(tmp_path / "plate.exr", frame)  # the same pixels, written anew (a rename: a new inode)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_ino != st.st_ino
    with pytest.raises(ProtocolError) as info:
        reader.pixels(path, lane, accepted=accepted)
    assert info.value.code == "bad_frame" and "changed since put_frames" in info.value.message, info.value
    accepted = reader.plate(path, lane).digest
    real_read = files.read_image

    def rewritten_while_decoded(source):
        image = real_read(source)
        data = Path(path).read_bytes()
        with open(path, "r+b") as f:  # in place: same inode and size, a new mtime
            f.write(data)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return image

    monkeypatch.setattr(files, "read_image", rewritten_while_decoded)
    with pytest.raises(ProtocolError) as info:
        reader.pixels(path, lane, accepted=accepted)
    assert info.value.code == "bad_frame" and "changed since put_frames" in info.value.message, info.value


def test_a_mask_file_is_checked_from_its_header_before_it_is_decoded(tmp_path, monkeypatch):
    from mam2_server import protocol as P
    from mam2_server.protocol import ProtocolError
    from mam2_server.server import files
    from mam2_server.server.handlers import Handlers
    from mam2_server.server.shots import ShotStore
    from test_server_support import FastEngine
    decoded = []
    real_read_image = files.read_image
    monkeypatch.setattr(files, "read_image", lambda path, **kw: decoded.append(path) or real_read_image(path, **kw))
    store = ShotStore(tmp_path / "cache", memory_budget=1 << 30)
    store.open(shot="sh", first=1, last=1, width=64, height=48, colorspace=None)
    handlers = Handlers(FastEngine(), "testfast", store, files.FileReader(None, 1 << 30, None), limits={})

    def read_mask(shot: str, array: np.ndarray, name: str):
        path = tmp_path / name
        write_image(path, array, channels=("A",), pixel_type="half")
        req = P.AddPrompt(shot=shot, frame=1, mask=P.Pixels(encoding=P.ENC_PATH, path=str(path)))
        return handlers.read_files(req, b"client")

    for shot, array, fragment in (("sh", np.zeros((96, 128, 1), np.float32), "the shot is 64x48"),
                                  ("not-loaded", np.zeros((1, 16385, 1), np.float32), "over 16384")):
        with pytest.raises(ProtocolError) as info:
            read_mask(shot, array, f"{shot}.exr")
        assert info.value.code == "bad_frame" and fragment in info.value.message, info.value
    assert decoded == []  # refused from their headers
    assert read_mask("sh", np.ones((48, 64, 1), np.float32), "fits.exr")[0].shape == (48, 64, 1)
    assert len(decoded) == 1
