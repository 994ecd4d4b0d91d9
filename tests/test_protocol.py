"""The wire protocol without a server: typed round trips and typed refusals."""
from __future__ import annotations

import msgpack
import pytest

from host_plugins.mam2_client import wire
from mam2_server import protocol as P


def test_one_source_of_truth_for_constants():
    assert P.PROTOCOL_VERSION is wire.PROTOCOL_VERSION
    assert set(P.REQUESTS) == set(wire.OPS) == set(P.REPLIES)


@pytest.mark.parametrize("body", [
    P.Hello(client="t"), P.Status(), P.OpenShot(shot="s", first=1, last=9, width=64, height=48),
    P.PutFrames(shot="s", frames=[P.FramePixels(encoding="raw", buffer=1, dtype="<f2", shape=[2, 2, 3], frame=1)]),
    P.AddPrompt(shot="s", frame=1, points=[[1.0, 2.0, 1.0]], box=[0.0, 0.0, 4.0, 4.0],
                mask=P.Pixels(encoding="path", path="/m.exr")),
    P.RemovePrompt(shot="s", frame=1), P.Propagate(shot="s", first=1, last=3, direction="forward"),
    P.GetAlpha(shot="s", frames=[1, 2]), P.Cancel(target="abc"), P.CloseShot(shot="s", purge=True), P.Shutdown(),
])
def test_requests_round_trip(body):
    buffers = [b"\0" * 24] if isinstance(body, P.PutFrames) else []
    env = P.decode_request(P.encode_request("r1", body, buffers))
    assert env.request_id == "r1" and env.body == body and env.buffers == buffers


def test_replies_round_trip():
    reply = P.PropagateReply(shot="s", computed=[1, 2], cached=[3], cancelled=False, seconds=0.5)
    assert P.decode_reply(P.encode_reply(7, "propagate", reply)) == (7, reply, [])
    alpha = P.AlphaMessage(alpha=P.AlphaFrame(encoding="raw", buffer=1, dtype="<f4", shape=[2, 2], frame=5))
    rid, decoded, buffers = P.decode_reply(P.encode_reply("x", "propagate", alpha, [b"\0" * 16]))
    assert decoded == alpha and buffers == [b"\0" * 16]
    rid, err, _ = P.decode_reply(P.error_reply(None, "hello", wire.E_BAD_MESSAGE, "no"))
    assert rid is None and err == P.ErrorReply(code="bad_message", message="no")


def _header(**fields):
    return msgpack.packb({"v": 1, "id": 1, **fields})


@pytest.mark.parametrize("frames, code", [
    ([b"\xc1garbage"], wire.E_BAD_MESSAGE),
    ([msgpack.packb([1, 2])], wire.E_BAD_MESSAGE),
    ([msgpack.packb({"v": 2, "id": 1, "op": "hello"})], wire.E_BAD_VERSION),
    ([msgpack.packb({"id": 1, "op": "hello"})], wire.E_BAD_VERSION),
    ([msgpack.packb({"v": True, "id": 1, "op": "hello"})], wire.E_BAD_VERSION),
    ([msgpack.packb({"v": 1.0, "id": 1, "op": "hello"})], wire.E_BAD_VERSION),
    ([_header(op="unpickle")], wire.E_UNKNOWN_OP),
    ([msgpack.packb({"v": 1, "op": "hello"})], wire.E_BAD_MESSAGE),  # no request id
    ([msgpack.packb({"v": 1, "id": 1.5, "op": "hello"})], wire.E_BAD_MESSAGE),
    ([_header(op="open_shot", shot="s", first=1, last=2, width="64", height=48)], wire.E_BAD_MESSAGE),
    ([_header(op="open_shot", shot="s", first=1, last=2, width=64)], wire.E_BAD_MESSAGE),
    ([_header(op="open_shot", shot="s", first=True, last=2, width=64, height=48)], wire.E_BAD_MESSAGE),
    ([_header(op="hello", extra=1)], wire.E_BAD_MESSAGE),
    ([_header(op="add_prompt", shot="s", frame=1, box=[0, 0, float("nan"), 1])], wire.E_BAD_MESSAGE),
    ([msgpack.packb({"v": 1, "id": 1, "op": "hello", "client": msgpack.ExtType(1, b"x")})], wire.E_BAD_MESSAGE),
    ([_header(op="hello", client="x" * (wire.MAX_HEADER_BYTES + 1))], wire.E_TOO_LARGE),
    ([_header(op="status"), *[b""] * (wire.MAX_BUFFERS + 1)], wire.E_TOO_LARGE),
    ([_header(op="status"), b"stray"], wire.E_BAD_MESSAGE),  # a buffer no field refers to
    ([_header(op="put_frames", shot="s", frames=[{"frame": 1, "encoding": "path", "path": "/p.exr"}]), b"x"],
     wire.E_BAD_MESSAGE),
])
def test_malformed_requests_are_typed_errors(frames, code):
    with pytest.raises(P.ProtocolError) as info:
        P.decode_request(frames)
    assert info.value.code == code


def test_a_put_frames_entry_without_its_frame_number_is_bad_message():
    """A missing required field is bad_message, never a default: an entry without `frame` is not frame 0."""
    header = _header(op="put_frames", shot="s", frames=[{"encoding": "raw", "buffer": 1, "dtype": "<f4",
                                                         "shape": [2, 2]}])
    with pytest.raises(P.ProtocolError) as info:
        P.decode_request([header, b"\0" * 16])
    assert info.value.code == wire.E_BAD_MESSAGE and "'frame'" in info.value.message


@pytest.mark.parametrize("ref, buffers, fragment", [
    (P.Pixels(encoding="raw", buffer=2, dtype="<f4", shape=[2, 2, 3]), [b"\0" * 48], "buffer index"),
    (P.Pixels(encoding="raw", buffer=1, dtype="|O", shape=[2, 2, 3]), [b"\0" * 48], "dtype"),
    (P.Pixels(encoding="raw", buffer=1, dtype="<f4", shape=[2, 2, 3]), [b"\0" * 47], "needs 48"),
    (P.Pixels(encoding="raw", buffer=1, dtype="<f4", shape=[1 << 20, 2, 3]), [b""], "shape"),
    (P.Pixels(encoding="path"), [], "path"),
    (P.Pixels(encoding="pickle", buffer=1), [b""], "encoding"),
])
def test_pixel_references_are_checked(ref, buffers, fragment):
    with pytest.raises(P.ProtocolError) as info:
        P.check_pixels(ref, buffers)
    assert info.value.code == wire.E_BAD_FRAME and fragment in info.value.message


def test_peek_request_survives_garbage_and_names_only_known_ops():
    assert P.peek_request(b"\xc1") == (None, None)
    assert P.peek_request(msgpack.packb([1])) == (None, None)
    assert P.peek_request(msgpack.packb({"id": "abc", "v": 9, "op": "open_shot"})) == ("abc", "open_shot")
    assert P.peek_request(msgpack.packb({"id": "x" * 100, "op": "rm -rf"})) == (None, None)


def test_a_message_over_the_size_limit_is_refused_before_its_header_is_read():
    frames = [b"\xc1 not even msgpack", b"\0" * 600, b"\0" * 600]
    with pytest.raises(P.ProtocolError) as info:
        P.decode_request(frames, max_message_bytes=1000)
    assert info.value.code == wire.E_TOO_LARGE and "1000" in info.value.message


def test_a_token_in_the_header_is_an_unknown_field():
    """Who may talk is settled by the socket's handshake (PLAIN or CURVE), so no header carries a secret."""
    header = {"v": 1, "id": 1, "op": "hello", "token": "s3cret-token-0123456789"}
    with pytest.raises(P.ProtocolError) as info:
        P.decode_request([msgpack.packb(header)])
    assert info.value.code == wire.E_BAD_MESSAGE and "token" in info.value.message


@pytest.mark.parametrize("path", ["relative/plate.exr", "/plates/a\0b.exr", ""])
def test_paths_must_be_absolute_and_free_of_nul(path):
    with pytest.raises(P.ProtocolError) as info:
        P.check_pixels(P.Pixels(encoding="path", path=path), [])
    assert info.value.code == wire.E_BAD_FRAME


def test_replies_hold_no_null_fields_and_cancel_returns_ids_as_sent():
    exr = P.AlphaMessage(alpha=P.AlphaFrame(encoding="exr", buffer=1, frame=3))
    header = msgpack.unpackb(P.encode_reply("r", "propagate", exr, [b"x"])[0])
    assert header["alpha"] == {"encoding": "exr", "buffer": 1, "frame": 3, "cached": False}
    header = msgpack.unpackb(P.encode_reply("r", "cancel", P.CancelReply(cancelled=[7, "abc"]))[0])
    assert header["cancelled"] == [7, "abc"]
    header = msgpack.unpackb(P.error_reply(None, None, wire.E_BAD_MESSAGE, "garbage")[0])
    assert header["op"] is None and header["id"] is None
