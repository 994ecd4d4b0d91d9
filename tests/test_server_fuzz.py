"""Fuzz the running server with random and malformed messages: every one gets a typed answer, none kills it."""
from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_server_support import ServerProcess, clip, owner_socket  # noqa: E402

from host_plugins.mam2_client import wire  # noqa: E402

N_MESSAGES = 2000

TEMPLATES = {
    "hello": {"client": "fuzz"},
    "status": {},
    "open_shot": {"shot": "fz", "first": 1, "last": 3, "width": 64, "height": 48},
    "put_frames": {"shot": "fz", "frames": [{"frame": 1, "encoding": "raw", "buffer": 1, "dtype": "<f4",
                                             "shape": [48, 64, 3]}]},
    "add_prompt": {"shot": "fz", "frame": 1, "box": [8.0, 10.0, 30.0, 30.0], "points": [[12.0, 20.0, 1]]},
    "remove_prompt": {"shot": "fz", "frame": 2},
    "propagate": {"shot": "fz", "first": 1, "last": 3},
    "get_alpha": {"shot": "fz", "frames": [1, 2]},
    "cancel": {"shot": "fz"},
    "close_shot": {"shot": "nope"},
}


def _random_value(rng: random.Random, depth: int = 0):
    makers = [lambda: None, lambda: True, lambda: rng.randint(-2**63, 2**63 - 1), lambda: rng.randint(-5, 5),
              lambda: rng.random() * 1e6, lambda: math.nan, lambda: math.inf, lambda: "x" * rng.randrange(0, 50),
              lambda: b"\x00\xff" * rng.randrange(0, 20),
              lambda: rng.choice(["../../etc", "a/b", "", "fz", "\u2603", "CON"])]
    if depth < 2:
        makers += [lambda: [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))],
                   lambda: {str(rng.random()): _random_value(rng, depth + 1) for _ in range(rng.randrange(3))}]
    return rng.choice(makers)()


def _message(rng: random.Random, nan_frame: bytes, good_frame: bytes) -> list[bytes]:
    kind = rng.randrange(13)
    op = rng.choice(list(TEMPLATES))
    header = {"v": 1, "id": rng.randrange(1 << 30), "op": op, **TEMPLATES[op]}
    buffers = [good_frame] if op == "put_frames" else []
    if kind == 0:  # garbage bytes
        return [rng.randbytes(rng.randrange(1, 200))]
    if kind == 1:  # msgpack, but not a map
        return [msgpack.packb(_random_value(rng))]
    if kind == 2:  # wrong or missing version
        header["v"] = rng.choice([0, 2, "1", None, 1.0, True, [1]])
    elif kind == 3:  # unknown op
        header["op"] = rng.choice(["pickle", "exec", "", "HELLO", 7, None])
    elif kind == 4:  # a field gets a random value
        key = rng.choice([k for k in header if k not in ("v", "op")] or ["id"])
        header[key] = _random_value(rng)
    elif kind == 5:  # a required field goes missing, or an unknown one appears
        if len(header) > 3 and rng.random() < 0.5:
            del header[rng.choice([k for k in header if k not in ("v", "id", "op")])]
        else:
            header[rng.choice(["__reduce__", "extra", "pickle"])] = 1
    elif kind == 6:  # huge sizes
        header = {"v": 1, "id": 1, "op": "put_frames", "shot": "fz", "frames": [
            {"frame": 1, "encoding": "raw", "buffer": 1, "dtype": "<f4",
             "shape": rng.choice([[100000, 100000, 3], [2**31, 2**31, 3], [48, 64, 3000], [-48, 64, 3]])}]}
        buffers = [good_frame]
    elif kind == 7:  # NaN/inf pixels (sanitised), or a buffer whose size disagrees with the shape
        buffers = [nan_frame if rng.random() < 0.5 else good_frame[: rng.randrange(len(good_frame))]]
        header = {"v": 1, "id": 2, "op": "put_frames", "shot": "fz", "frames": [
            {"frame": rng.choice([1, 2, 3, 99, -1]), "encoding": "raw", "buffer": rng.choice([1, 0, 2, -1]),
             "dtype": rng.choice(["<f4", "<f2", ">f8", "|O", "object"]), "shape": [48, 64, 3]}]}
    elif kind == 8:  # extension types and other msgpack oddities
        return [msgpack.packb({"v": 1, "id": 3, "op": "hello", "client": msgpack.ExtType(1, b"evil")})]
    elif kind == 9:  # too many buffers / a header over the limit
        if rng.random() < 0.5:
            buffers = [b"x"] * (wire.MAX_BUFFERS + 1)
        else:
            header["client"] = "x" * (wire.MAX_HEADER_BYTES + 10)
    elif kind == 10:  # bad EXR bytes and hostile paths
        header = {"v": 1, "id": 4, "op": "put_frames", "shot": "fz", "frames": [
            rng.choice([{"frame": 1, "encoding": "exr", "buffer": 1},
                        {"frame": 1, "encoding": "path", "path": rng.choice(["/etc/passwd", "../../x", "", "/dev/zero"])}])]}
        buffers = [rng.randbytes(300)]
    elif kind == 11:  # a single empty frame
        return [b""]
    elif kind == 12:  # a secret in the header (logging in is the handshake's business): an unknown field
        header["token"] = rng.choice(["", "s3cret", 7, None])
    return [msgpack.packb(header, use_bin_type=True), *buffers]


@pytest.mark.timeout(120)
def test_fuzz_every_message_gets_a_typed_answer_and_the_server_stays_up(tmp_path):
    server = ServerProcess(tmp_path / "cache")
    try:
        server.wait_ready()
        with server.client() as c:
            c.open_shot("fz", first=1, last=3, width=64, height=48)
        good = clip(1)[0]
        nan = good.copy()
        nan[::7, ::5] = np.nan
        nan[0, :4] = np.inf
        sock = owner_socket(server.address)
        rng = random.Random(1234)
        codes: dict[str, int] = {}
        start = time.monotonic()
        for i in range(N_MESSAGES):
            msg = _message(rng, nan.tobytes(), good.tobytes())
            sock.send_multipart(msg)
            while True:  # read up to the final reply (propagate streams intermediate messages)
                assert sock.poll(10000), f"no answer to message {i}: {msg[0][:80]!r}\n{server.tail()}"
                reply = msgpack.unpackb(sock.recv_multipart()[0], raw=False)
                assert reply["v"] == wire.PROTOCOL_VERSION and reply["kind"] in wire.KINDS
                if reply["kind"] in wire.FINAL_KINDS:
                    break
            if reply["kind"] == wire.KIND_ERROR:
                assert reply["code"] in wire.ERROR_CODES and reply["code"] != wire.E_INTERNAL, reply
                assert isinstance(reply["message"], str) and reply["message"]
                codes[reply["code"]] = codes.get(reply["code"], 0) + 1
            else:
                codes["ok"] = codes.get("ok", 0) + 1
        elapsed = time.monotonic() - start
        print(f"{N_MESSAGES} messages in {elapsed:.2f} s: {codes}")
        sock.close()
        assert elapsed < 60, f"{N_MESSAGES} messages took {elapsed:.1f} s"
        for code in (wire.E_BAD_MESSAGE, wire.E_BAD_VERSION, wire.E_UNKNOWN_OP, wire.E_TOO_LARGE, wire.E_BAD_FRAME):
            assert codes.get(code), codes
        assert server.proc.poll() is None
        with server.client() as c:
            assert c.hello()["protocol"] == wire.PROTOCOL_VERSION
            assert Path("/etc/passwd").read_text()  # untouched, obviously
        assert not list((tmp_path / "cache").glob("**/passwd*"))
    finally:
        assert server.stop() == 0
