"""docs/protocol.md is enough to write a client: its example runs, and a client written from the page alone
(pyzmq + msgpack, not `mam2_client`) drives every op and meets every error code the page lists."""
from __future__ import annotations

import re
import sys
import time
import uuid
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

sys.path.insert(0, str(Path(__file__).parent))
from test_server_support import ROOT, ServerProcess, clip  # noqa: E402

from host_plugins.mam2_client import wire  # noqa: E402  (only to check the doc lists every op and code)

DOC = (ROOT / "docs" / "protocol.md").read_text()


def _table_keys(heading: str) -> list[str]:
    """First-column `names` of the markdown table that follows `heading` in the doc."""
    section = DOC.split(heading, 1)[1]
    rows = re.findall(r"^\| `([a-z_]+)` \|", section.split("\n\n|", 1)[-1].split("\n\n", 1)[0], re.M)
    assert rows, heading
    return rows


@pytest.mark.timeout(60)
def test_the_documented_example_exchange_works(tmp_path):
    code = DOC.split("## Example exchange")[1].split("```python")[1].split("```")[0]
    with ServerProcess(tmp_path / "cache") as server:
        namespace: dict = {}
        exec(code.replace("tcp://127.0.0.1:5557", server.address), namespace)  # noqa: S102 - our own doc
        assert namespace["reply"]["kind"] == "reply" and namespace["reply"]["computed"] == [1, 2]


class DocClient:
    """A client written from docs/protocol.md: DEALER logged in with PLAIN (user mam2, the token as password),
    msgpack header + buffers; a socket monitor tells a refused login from a silent server."""

    def __init__(self, address: str, token: str | None) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDTIMEO, 2000)
        if token is not None:
            self.sock.plain_username = b"mam2"
            self.sock.plain_password = token.encode()
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH |
                                                    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
        self.sock.connect(address)

    def send(self, op, buffers=(), **fields) -> str:
        rid = uuid.uuid4().hex
        self.sock.send_multipart([msgpack.packb({"v": 1, "id": rid, "op": op, **fields}), *buffers])
        return rid

    def refused_login(self, op: str) -> int:
        """Send `op`; expect no answer at all and the handshake's failure event (returned)."""
        try:
            self.send(op)
        except zmq.Again:  # refused already: no connection left to queue it on (SNDTIMEO, as the doc says)
            pass
        assert self.monitor.poll(20000), "the server did not refuse the login"
        event = recv_monitor_message(self.monitor)["event"]
        assert not self.sock.poll(500), "a peer that is not logged in got an answer"
        return event

    def send_raw(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def read(self, rid=None, timeout=20.0):
        """(final message, its buffers, intermediate messages with their buffers) of request `rid`."""
        intermediate = []
        while True:
            assert self.sock.poll(int(timeout * 1000)), "no answer"
            header, *bufs = self.sock.recv_multipart()
            msg = msgpack.unpackb(header)
            if rid is not None and msg["id"] != rid:
                continue
            assert msg["v"] == 1 and msg["kind"] in ("reply", "error", "alpha", "progress"), msg
            assert all(v is not None for k, v in msg.items() if k not in ("id", "op")), msg  # no nulls
            if msg["kind"] in ("reply", "error"):
                return msg, bufs, intermediate
            intermediate.append((msg, bufs))

    def call(self, op, buffers=(), **fields):
        return self.read(self.send(op, buffers, **fields))

    def ok(self, op, buffers=(), **fields) -> dict:
        msg, bufs, inter = self.call(op, buffers, **fields)
        assert msg["kind"] == "reply" and msg["op"] == op, msg
        msg["_buffers"], msg["_stream"] = bufs, inter
        return msg

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close()
        self.sock.close()


@pytest.mark.timeout(180)
def test_a_client_written_from_the_doc_drives_every_op_and_meets_every_error(tmp_path):
    from mam2_server.io import decode_image, encode_image, write_image
    doc_ops, doc_codes, doc_limits = (_table_keys("## Operations"), _table_keys("### Errors"),
                                      _table_keys("* **Limits.**"))
    token_file = tmp_path / "token"
    bug = tmp_path / "bug"
    server = ServerProcess(tmp_path / "cache", token_file=token_file, delay=0.05,
                           env={"MAM2_TEST_FAIL_FRAME": "7", "MAM2_TEST_BUG_FILE": str(bug)})
    ops, codes = set(), set()

    def refused(client: DocClient, code: str, op, buffers=(), *, sent=False, rid=None, **fields) -> dict:
        """Send `op` (or, with sent=True, read the answer to `rid` already sent) and expect error `code`."""
        msg, _, _ = client.read(rid) if sent else client.call(op, buffers, **fields)
        assert msg["kind"] == "error" and msg["code"] == code and msg["op"] == op, msg
        assert isinstance(msg["message"], str) and msg["message"] and "Traceback" not in msg["message"]
        codes.add(code)
        return msg

    with server:
        token = token_file.read_text().strip()  # as the doc says: the file's content, stripped
        c, side = DocClient(server.address, token), DocClient(server.address, token)
        try:
            # -- hello, status, open_shot -----------------------------------------------------
            hello = c.ok("hello", client="doc-client")
            assert hello["protocol"] == 1 and hello["engine"] == "testfast" and hello["device"] == "cpu"
            assert sorted(hello["limits"]) == sorted(doc_limits)
            opened = c.ok("open_shot", shot="doc", first=1, last=4, width=64, height=48)
            assert (opened["resumed"], opened["received"], opened["keyframes"]) == (False, [], [])
            # -- put_frames: every encoding, grey raw, one buffer used twice -----------------------
            frames = clip(4)
            plate_path = tmp_path / "plate.0004.exr"
            write_image(plate_path, frames[3], channels=("R", "G", "B"), pixel_type="half")
            grey = frames[1].mean(axis=2).astype(np.float32)
            exr = encode_image(frames[2], channels=("R", "G", "B"), pixel_type="half")
            put = c.ok("put_frames", [frames[0].astype(np.float16).tobytes(), grey.tobytes(), exr], shot="doc",
                       frames=[{"frame": 1, "encoding": "raw", "buffer": 1, "dtype": "<f2", "shape": [48, 64, 3]},
                               {"frame": 2, "encoding": "raw", "buffer": 2, "dtype": "<f4", "shape": [48, 64]},
                               {"frame": 3, "encoding": "exr", "buffer": 3},
                               {"frame": 4, "encoding": "path", "path": str(plate_path)}])
            assert put["received"] == [1, 2, 3, 4] and put["sanitised"] == []
            status = c.ok("status")
            info = next(s for s in status["shots"] if s["shot"] == "doc")
            assert set(info) == {"shot", "first", "last", "width", "height", "received", "keyframes", "loaded", "busy"}
            assert info["received"] == 4 and info["loaded"] and not info["busy"] and status["jobs"] == []
            # -- prompts -----------------------------------------------------------------------
            added = c.ok("add_prompt", shot="doc", frame=1, box=[8, 10, 30, 30], points=[[12, 20, 1], [40, 5]])
            assert added["affected"] == [1, 2, 3, 4] and added["keyframes"] == [1]
            mask = np.zeros((48, 64), np.float32)
            mask[10:30, 10:30] = 1
            assert c.ok("add_prompt", [mask.tobytes()], shot="doc", frame=3, mask={
                "encoding": "raw", "buffer": 1, "dtype": "<f4", "shape": [48, 64]})["keyframes"] == [1, 3]
            assert c.ok("remove_prompt", shot="doc", frame=3)["keyframes"] == [1]
            # -- propagate: exr half alphas streamed, then raw cached ones ---------------------------
            done = c.ok("propagate", shot="doc", alpha_encoding="exr", alpha_dtype="<f2")
            alphas = [m for m, _ in done["_stream"] if m["kind"] == "alpha"]
            progress = [m for m, _ in done["_stream"] if m["kind"] == "progress"]
            assert all(set(m["alpha"]) == {"encoding", "buffer", "frame", "cached"} for m in alphas)
            first_exr = decode_image(done["_stream"][0][1][0])
            assert first_exr.info.channels == ("A",) and first_exr.pixels.shape == (48, 64, 1)
            assert [p["total"] for p in progress] == [4] * 4 and progress[-1]["done"] == 4
            assert sorted(done["computed"]) == [1, 2, 3, 4] and done["cached"] == [] and not done["cancelled"]
            again = c.ok("propagate", shot="doc", include_cached=True)
            raw = [m["alpha"] for m, _ in again["_stream"] if m["kind"] == "alpha"]
            assert all(set(a) == {"encoding", "buffer", "dtype", "shape", "frame", "cached"} for a in raw)
            assert all(a["cached"] and a["shape"] == [48, 64] and a["dtype"] == "<f4" for a in raw)
            assert again["computed"] == [] and sorted(again["cached"]) == [1, 2, 3, 4]
            ranged = c.ok("propagate", shot="doc", direction="forward", from_frame=1, last=2)
            assert ranged["computed"] == [] and ranged["cached"] == [1, 2]
            got = c.ok("get_alpha", shot="doc", frames=[4, 1], alpha_dtype="<f2")
            assert [a["frame"] for a in got["alphas"]] == [4, 1] and got["missing"] == []
            a4 = np.frombuffer(got["_buffers"][0], "<f2").reshape(got["alphas"][0]["shape"])
            assert a4.shape == (48, 64) and 0 <= a4.min() <= a4.max() <= 1
            # -- cancel a running propagate from another socket; busy meanwhile -----------------------
            c.ok("open_shot", shot="long", first=1, last=40, width=64, height=48)
            long_frames = clip(40, seed=3)
            for start in range(0, 40, 20):
                batch = long_frames[start:start + 20]
                c.ok("put_frames", [f.tobytes() for f in batch], shot="long", frames=[
                    {"frame": start + i + 1, "encoding": "raw", "buffer": i + 1, "dtype": "<f4",
                     "shape": [48, 64, 3]} for i in range(len(batch))])
            c.ok("add_prompt", shot="long", frame=1, box=[8, 10, 30, 30])
            job = c.send("propagate", shot="long")
            time.sleep(0.3)
            assert side.ok("status")["jobs"] == [{"shot": "long", "id": job}]
            refused(side, "busy", "close_shot", shot="long")
            refused(side, "busy", "put_frames", [long_frames[0].tobytes()], shot="long", frames=[
                {"frame": 1, "encoding": "raw", "buffer": 1, "dtype": "<f4", "shape": [48, 64, 3]}])
            assert side.ok("cancel", target=job)["cancelled"] == []  # an id alone: only this socket's jobs
            assert side.ok("cancel", target=job, shot="long")["cancelled"] == [job]
            stopped, _, _ = c.read(job)
            assert stopped["kind"] == "reply" and stopped["cancelled"] and 1 <= len(stopped["computed"]) < 40
            assert side.ok("cancel", shot="long")["cancelled"] == []
            ops |= {"hello", "status", "open_shot", "put_frames", "add_prompt", "remove_prompt", "propagate",
                    "get_alpha", "cancel"}
            # -- every error code ------------------------------------------------------------------
            c.send_raw([b"\xc1 not msgpack"])
            msg = refused(c, "bad_message", None, sent=True)
            assert msg["id"] is None
            refused(c, "bad_message", "status", [b"stray"])  # a buffer no field refers to
            refused(c, "bad_message", "propagate", shot="doc", from_frame=1)  # from_frame needs a direction
            c.send_raw([msgpack.packb({"v": 1.0, "id": "v", "op": "hello"})])
            refused(c, "bad_version", "hello", sent=True, rid="v")
            refused(c, "unknown_op", None, sent=True, rid=c.send("explode"))
            for stranger, event in ((DocClient(server.address, None), zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL),
                                    (DocClient(server.address, token + "x"), zmq.EVENT_HANDSHAKE_FAILED_AUTH)):
                assert stranger.refused_login("shutdown") == event
                stranger.close()
            refused(c, "bad_message", "hello", token=token)  # no header carries the token
            refused(c, "too_large", "status", [b""] * 65)
            refused(c, "no_shot", "get_alpha", shot="nope", frames=[1])
            refused(c, "bad_shot", "open_shot", shot="../x", first=1, last=2, width=64, height=48)
            refused(c, "bad_frame", "get_alpha", shot="doc", frames=[1, 99])
            refused(c, "bad_frame", "propagate", shot="doc", first=3, last=2)
            refused(c, "bad_frame", "put_frames", shot="doc", frames=[
                {"frame": 1, "encoding": "path", "path": "relative/plate.exr"}])
            refused(c, "bad_prompt", "propagate", shot="doc", direction="forward", from_frame=2)
            refused(c, "bad_prompt", "add_prompt", shot="doc", frame=2, box=[70, 50, 80, 60])
            c.ok("open_shot", shot="gap", first=1, last=3, width=64, height=48)
            c.ok("put_frames", [frames[0].tobytes()], shot="gap", frames=[
                {"frame": 1, "encoding": "raw", "buffer": 1, "dtype": "<f4", "shape": [48, 64, 3]}])
            c.ok("add_prompt", shot="gap", frame=1, box=[8, 10, 30, 30])
            refused(c, "missing_frames", "propagate", shot="gap")
            c.ok("open_shot", shot="boom", first=5, last=8, width=64, height=48)  # the engine fails on frame 7
            c.ok("put_frames", [f.tobytes() for f in frames], shot="boom", frames=[
                {"frame": 5 + i, "encoding": "raw", "buffer": i + 1, "dtype": "<f4", "shape": [48, 64, 3]}
                for i in range(4)])
            c.ok("add_prompt", shot="boom", frame=5, box=[8, 10, 30, 30])
            assert "after 2 frame(s)" in refused(c, "engine_error", "propagate", shot="boom")["message"]
            bug.touch()  # the test engine now has a bug outside propagate
            refused(c, "internal", "add_prompt", shot="doc", frame=2, box=[8, 10, 30, 30])
            bug.unlink()
            assert c.ok("close_shot", shot="gap", purge=True)["shot"] == "gap"
            ops.add("close_shot")
            # -- shutdown while a job runs; what comes after it is refused -----------------------------
            job = c.send("propagate", shot="long", include_cached=False)
            time.sleep(0.3)
            shutdown = side.send("shutdown")
            late = side.send("hello")
            assert side.read(shutdown)[0]["kind"] == "reply"
            ops.add("shutdown")
            refused(side, "shutting_down", "hello", sent=True, rid=late)
            assert c.read(job)[0]["cancelled"]
            assert server.proc.wait(20) == 0
        finally:
            c.close()
            side.close()
    assert ops == set(doc_ops) == set(wire.OPS)
    assert codes == set(doc_codes) == set(wire.ERROR_CODES)
