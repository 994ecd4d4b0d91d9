"""The work a server holds is bounded (`busy` past the bounds), and jobs belong to the client that sent them."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_server_support import FastEngine, ServerProcess, clip, in_process_server, owner_socket  # noqa: E402

from host_plugins.mam2_client import ServerError  # noqa: E402

pytestmark = pytest.mark.timeout(120)
BOX = (8, 10, 30, 30)
RAW = {"encoding": "raw", "dtype": "<f4", "shape": [48, 64, 3]}


def _put(rid, shot: str, frames: list[int]) -> bytes:
    return msgpack.packb({"v": 1, "id": rid, "op": "put_frames", "shot": shot,
                          "frames": [{**RAW, "frame": f, "buffer": i} for i, f in enumerate(frames, 1)]})


def _answers(sock, n: int, seconds: float = 30.0) -> dict:
    """The next `n` final answers on `sock`, by request id."""
    out = {}
    while len(out) < n:
        assert sock.poll(int(seconds * 1000)), f"{len(out)} of {n} answers: {out}"
        msg = msgpack.unpackb(sock.recv_multipart()[0])
        if msg["kind"] in ("reply", "error"):
            out[msg["id"]] = msg
    return out


@pytest.fixture
def slow_data_thread(monkeypatch):
    """put_frames waits on the data thread until the returned event is set (a disk that is slow to write)."""
    from mam2_server.server.handlers import Handlers
    gate = threading.Event()
    real = Handlers.put_frames

    def put_frames(self, *args, **kwargs):
        gate.wait(60)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Handlers, "put_frames", put_frames)
    yield gate
    gate.set()


def test_a_client_pipelining_uploads_is_told_busy_instead_of_piling_them_up(tmp_path, slow_data_thread):
    plate = clip(1)[0].tobytes()
    with in_process_server(tmp_path, max_pending_requests=4) as client, client() as other:
        other.open_shot("q", first=1, last=30, width=64, height=48)
        sock = owner_socket(client.address, client.token_file)
        for i in range(20):
            sock.send_multipart([_put(i, "q", [i + 1]), plate])
        busy = _answers(sock, 16)  # at once, while the first 4 wait on the data thread
        assert sorted(busy) == list(range(4, 20))
        assert all(m["code"] == "busy" and "max_pending_requests" in m["message"] for m in busy.values()), busy
        assert other.hello()["limits"]["max_pending_requests"] == 4  # the I/O loop answers everyone meanwhile
        theirs = {}
        worker = threading.Thread(target=lambda: theirs.update(r=other.put_frames("q", {30: clip(1)[0]})))
        worker.start()  # another connection's upload is queued, not refused
        time.sleep(0.5)
        slow_data_thread.set()
        worker.join(30)
        assert theirs["r"] == [30]
        done = _answers(sock, 4)
        assert sorted(done) == [0, 1, 2, 3] and all(m["kind"] == "reply" for m in done.values()), done
        sock.send_multipart([_put("again", "q", [5]), plate])  # replies free the slots
        assert _answers(sock, 1)["again"]["kind"] == "reply"
        sock.close()


def test_queued_bytes_are_bounded_over_all_clients(tmp_path, slow_data_thread):
    plate = clip(1)[0].tobytes()  # 36 KiB
    frames = list(range(1, 9))
    size = len(_put(0, "q", frames)) + 8 * len(plate)
    with in_process_server(tmp_path, max_pending_bytes=int(2.5 * size)) as client, client() as other:
        other.open_shot("q", first=1, last=8, width=64, height=48)
        socks = [owner_socket(client.address, client.token_file) for _ in range(3)]
        for i, sock in enumerate(socks):
            sock.send_multipart([_put(i, "q", frames), *[plate] * 8])
            time.sleep(0.3)  # in this order
        refused = _answers(socks[2], 1)[2]
        assert refused["code"] == "busy" and "max_pending_bytes" in refused["message"], refused
        assert other.hello()["limits"]["max_pending_bytes"] == int(2.5 * size)
        slow_data_thread.set()
        assert _answers(socks[0], 1)[0]["kind"] == "reply" and _answers(socks[1], 1)[1]["kind"] == "reply"
        socks[2].send_multipart([_put(3, "q", frames), *[plate] * 8])
        assert _answers(socks[2], 1)[3]["kind"] == "reply"
        for sock in socks:
            sock.close()


def test_jobs_belong_to_the_client_that_sent_them(tmp_path):
    """Two clients may pick the same request id: status lists both jobs, and a cancel by id alone reaches only
    the sender's own; naming the shot reaches the job whoever sent it."""
    with ServerProcess(tmp_path / "cache", delay=0.3) as server, server.client() as setup:
        frames = clip(10)
        for shot in ("s1", "s2"):
            setup.open_shot(shot, first=1, last=10, width=64, height=48)
            setup.put_frames(shot, dict(enumerate(frames, 1)))
            setup.add_prompt(shot, 1, box=BOX)
        a, b, c = (owner_socket(server.address) for _ in range(3))

        def call(sock, op: str, **fields) -> dict:
            sock.send_multipart([msgpack.packb({"v": 1, "id": op, "op": op, **fields})])
            return _answers(sock, 1)[op]

        a.send_multipart([msgpack.packb({"v": 1, "id": "job", "op": "propagate", "shot": "s1"})])
        assert a.poll(30000)  # a's job runs (its first message is out); b's queues behind it
        b.send_multipart([msgpack.packb({"v": 1, "id": "job", "op": "propagate", "shot": "s2"})])
        deadline = time.monotonic() + 10
        while len(jobs := call(c, "status")["jobs"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(jobs, key=lambda j: j["shot"]) == [{"shot": "s1", "id": "job"}, {"shot": "s2", "id": "job"}]
        assert call(c, "cancel", target="job")["cancelled"] == []  # c sent no job "job"
        assert call(b, "cancel", target="job")["cancelled"] == ["job"]  # b's own only
        assert call(c, "cancel", target="job", shot="s1")["cancelled"] == ["job"]  # a's, by naming its shot
        b_final, a_final = _answers(b, 1)["job"], _answers(a, 1)["job"]
        assert b_final["cancelled"] and b_final["computed"] == []
        assert a_final["cancelled"] and 1 <= len(a_final["computed"]) < 10
        for sock in (a, b, c):
            sock.close()


def test_a_propagate_reusing_the_id_of_one_still_running_is_bad_message(tmp_path):
    """The running job keeps its id (its replies and a cancel by id name it alone); the duplicate is refused."""
    with in_process_server(tmp_path, engine=FastEngine(delay=0.2)) as client, client() as setup:
        setup.open_shot("d", first=1, last=6, width=64, height=48)
        setup.put_frames("d", dict(enumerate(clip(6), 1)))
        setup.add_prompt("d", 1, box=BOX)
        sock = owner_socket(client.address, client.token_file)
        request = msgpack.packb({"v": 1, "id": "job", "op": "propagate", "shot": "d"})
        sock.send_multipart([request])
        assert sock.poll(30000)  # it runs: its first message is out
        sock.send_multipart([request])
        finals = []
        while len(finals) < 2:
            assert sock.poll(30000), finals
            msg = msgpack.unpackb(sock.recv_multipart()[0])
            if msg["kind"] in ("reply", "error"):
                finals.append(msg)
        assert finals[0]["kind"] == "error" and finals[0]["code"] == "bad_message", finals[0]
        assert finals[1]["kind"] == "reply" and sorted(finals[1]["computed"]) == [1, 2, 3, 4, 5, 6], finals[1]
        sock.close()


def test_a_files_thread_that_cannot_start_frees_the_requests_slot_and_queue(tmp_path, monkeypatch):
    """Thread.start() failing (no threads left) answers the request and leaves nothing behind: no admission
    slot held (later requests would be `busy`), no queue without a thread (later ones never answered)."""
    import types

    from mam2_server.io import write_image
    from mam2_server.server import queues
    plate = tmp_path / "plate.exr"
    write_image(plate, clip(1)[0], channels=("R", "G", "B"), pixel_type="half")

    class NoThread(threading.Thread):
        def start(self) -> None:
            raise RuntimeError("can't start new thread")

    with in_process_server(tmp_path, max_pending_requests=2) as client, client(timeout=5, retries=1) as c:
        c.open_shot("t", first=1, last=1, width=64, height=48)
        monkeypatch.setattr(queues, "threading", types.SimpleNamespace(Thread=NoThread, Lock=threading.Lock))
        for _ in range(3):
            with pytest.raises(ServerError) as info:
                c.put_frames("t", {1: str(plate)}, encoding="path")
            assert info.value.code == "internal" and "can't start new thread" in info.value.message
        monkeypatch.undo()
        assert c.put_frames("t", {1: str(plate)}, encoding="path") == [1]
