"""End-to-end tests of `mam2 serve` through the client library: real server processes on 127.0.0.1."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_server_support import FastEngine, ServerProcess, clip, direct_alphas  # noqa: E402

from host_plugins.mam2_client import ServerError  # noqa: E402
from mam2_server.prompts import Point, Prompt  # noqa: E402

pytestmark = pytest.mark.timeout(120)
BOX = (8, 10, 30, 30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("srv") / "cache")
    proc.wait_ready()
    yield proc
    assert proc.stop() == 0, proc.tail()


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


def _upload(client, shot, frames, first=1, encoding="raw"):
    client.open_shot(shot, first=first, last=first + len(frames) - 1, width=frames[0].shape[1],
                     height=frames[0].shape[0])
    return client.put_frames(shot, {first + i: f for i, f in enumerate(frames)}, encoding=encoding)


def _propagate_in_background(client, shot, frames):
    """Upload `frames`, prompt frame 1 and start propagating in a thread; returns (thread, result dict)."""
    _upload(client, shot, frames)
    client.add_prompt(shot, 1, box=BOX)
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=client.propagate(shot)))
    worker.start()
    return worker, result


def test_end_to_end_alphas_equal_direct_engine(client):
    frames = clip(6)
    assert _upload(client, "e2e", frames) == [1, 2, 3, 4, 5, 6]
    reply = client.add_prompt("e2e", 3, box=BOX, points=[(12, 20, 1)])
    assert reply["affected"] == [1, 2, 3, 4, 5, 6] and reply["keyframes"] == [3]
    seen = []
    result = client.propagate("e2e", on_progress=lambda done, total, frame: seen.append((done, total)))
    assert not result.cancelled and sorted(result.computed) == [1, 2, 3, 4, 5, 6]
    assert seen[-1] == (6, 6)
    expected = direct_alphas(FastEngine(), frames, [Prompt(frame=3, box=BOX, points=(Point(12, 20, 1),))])
    for frame, alpha in result.alphas.items():
        assert alpha.dtype == "<f4" and alpha.shape == (48, 64)
        np.testing.assert_array_equal(alpha.to_numpy(), expected[frame])
    # get_alpha serves the same frames from the cache; half precision on request
    found, missing = client.get_alpha("e2e", range(1, 7), alpha_dtype="<f2")
    assert missing == [] and all(a.cached for a in found.values())
    np.testing.assert_array_equal(found[2].to_numpy(), expected[2].astype(np.float16))
    from mam2_server.io import decode_image
    exr, _ = client.get_alpha("e2e", [4], alpha_encoding="exr")
    assert exr[4].encoding == "exr"
    np.testing.assert_array_equal(decode_image(bytes(exr[4].data)).pixels[:, :, 0], expected[4])


def test_exr_and_path_frames_match_raw(client, tmp_path):
    from mam2_server.io import encode_image, write_image
    frames = [f.astype(np.float16) for f in clip(3, seed=1)]
    exr = {i + 1: encode_image(f.astype(np.float32), channels=("R", "G", "B"), pixel_type="half")
           for i, f in enumerate(frames)}
    paths = {}
    for i, f in enumerate(frames):
        paths[i + 1] = str(tmp_path / f"plate.{i + 1:04d}.exr")
        write_image(paths[i + 1], f.astype(np.float32), channels=("R", "G", "B"), pixel_type="half")
    results = {}
    for encoding, payload in (("raw", dict(enumerate(frames, 1))), ("exr", exr), ("path", paths)):
        shot = f"enc_{encoding}"
        client.open_shot(shot, first=1, last=3, width=64, height=48)
        assert client.put_frames(shot, payload, encoding=encoding) == [1, 2, 3]
        client.add_prompt(shot, 1, box=BOX)
        results[encoding] = {f: a.to_numpy() for f, a in client.propagate(shot).alphas.items()}
    expected = direct_alphas(FastEngine(), [f.astype(np.float32) for f in frames], [Prompt(frame=1, box=BOX)])
    for encoding, alphas in results.items():
        for frame in (1, 2, 3):
            np.testing.assert_array_equal(alphas[frame], expected[frame], err_msg=encoding)


def test_a_shared_plate_rewritten_after_put_frames_is_refused_at_propagate(client, server, tmp_path):
    """The file read at propagate must be the one put_frames accepted (its digest is in the cache keys)."""
    import os
    from mam2_server.io import encode_image, write_image
    frames = clip(5, seed=11)
    paths = {f: str(tmp_path / f"plate.{f:04d}.exr") for f in range(1, 6)}
    for f, path in paths.items():
        write_image(path, frames[f - 1], channels=("R", "G", "B"), pixel_type="float", compression="none")
    client.open_shot("rewritten", first=1, last=5, width=64, height=48)
    assert client.put_frames("rewritten", paths, encoding="path") == [1, 2, 3, 4, 5]
    client.add_prompt("rewritten", 1, box=BOX)
    # frame 3 re-rendered in place after put_frames: same inode and size, other pixels, a later mtime
    new = frames[:2] + [clip(1, seed=99)[0]] + frames[3:]
    st = os.stat(paths[3])
    data = encode_image(new[2], channels=("R", "G", "B"), pixel_type="float", compression="none")
    with open(paths[3], "r+b") as f:
        f.write(data)
        f.truncate()
    os.utime(paths[3], ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    assert os.stat(paths[3]).st_ino == st.st_ino and os.stat(paths[3]).st_size == st.st_size
    with pytest.raises(ServerError) as info:
        client.propagate("rewritten")
    assert info.value.code == "bad_frame", info.value
    assert "frame 3" in info.value.message and paths[3] in info.value.message
    assert "changed since put_frames" in info.value.message and "again" in info.value.message
    found, missing = client.get_alpha("rewritten", range(1, 6))
    assert sorted(found) == [1, 2] and missing == [3, 4, 5]  # frames finished before it are kept
    with server.client() as other:  # the server goes on serving everyone
        assert other.hello()["protocol"] == 1
    assert client.put_frames("rewritten", {3: paths[3]}, encoding="path") == [3]
    result = client.propagate("rewritten")
    assert sorted(result.cached) == [1, 2] and sorted(result.computed) == [3, 4, 5]
    expected = direct_alphas(FastEngine(), new, [Prompt(frame=1, box=BOX)])
    for frame, alpha in result.alphas.items():
        np.testing.assert_array_equal(alpha.to_numpy(), expected[frame])
    stale = direct_alphas(FastEngine(), frames, [Prompt(frame=1, box=BOX)])
    assert not np.array_equal(result.alphas[3].to_numpy(), stale[3])


def test_retrack_from_corrected_keyframe_returns_only_changed_frames(client):
    frames = clip(10, seed=2)
    _upload(client, "retrack", frames)
    client.add_prompt("retrack", 1, box=BOX)
    client.add_prompt("retrack", 6, box=(20, 10, 40, 30))
    first = client.propagate("retrack")
    assert sorted(first.computed) == list(range(1, 11))
    # correct keyframe 6: only its pass (6-10) changes for an engine with independent passes
    reply = client.add_prompt("retrack", 6, box=(22, 12, 42, 32))
    assert reply["affected"] == [6, 7, 8, 9, 10]
    second = client.propagate("retrack")
    assert sorted(second.computed) == [6, 7, 8, 9, 10] == sorted(second.alphas)
    assert sorted(second.cached) == [1, 2, 3, 4, 5]
    assert not any(np.array_equal(second.alphas[f].to_numpy(), first.alphas[f].to_numpy()) for f in (6, 7))
    # direction and range restrict the work
    client.add_prompt("retrack", 6, box=(21, 11, 41, 31))
    third = client.propagate("retrack", direction="forward", from_frame=6, last=8)
    assert sorted(third.computed) == [6, 7, 8]
    assert client.propagate("retrack").computed == [9, 10]


def test_cancel_mid_propagate_and_status_answers_meanwhile(tmp_path):
    # frames take 1.5 s: answers within 0.75 s cannot have waited for one
    with ServerProcess(tmp_path / "cache", delay=1.5) as server:
        with server.client() as c:
            worker, result = _propagate_in_background(c, "slow", clip(20))
            time.sleep(2.0)
            with server.client() as other:
                t0 = time.monotonic()
                status = other.status()
                assert time.monotonic() - t0 < 0.75, "status waited behind a frame"
                assert [job["shot"] for job in status["jobs"]] == ["slow"]
                t0 = time.monotonic()
                assert len(c.cancel(shot="slow")) == 1
                assert time.monotonic() - t0 < 0.75, "cancel waited behind a frame"
            worker.join(10)
            r = result["r"]
            assert r.cancelled and 1 <= len(r.computed) <= 3
            assert sorted(r.alphas) == sorted(r.computed)
            assert c.status()["jobs"] == []
            # the frames it finished are cached; the rest are computed by the next run
            again = c.propagate("slow", first=1, last=len(r.computed) + 2)
            assert sorted(again.cached) == sorted(r.computed) and len(again.computed) == 2


def test_progress_callback_false_cancels(tmp_path):
    with ServerProcess(tmp_path / "cache", delay=0.1) as server:
        with server.client() as c:
            _upload(c, "cb", clip(12))
            c.add_prompt("cb", 1, box=BOX)
            r = c.propagate("cb", on_progress=lambda done, total, frame: done < 3)
            assert r.cancelled and 3 <= len(r.computed) < 12


def test_two_clients_two_shots_at_once(server):
    clips = {"two_a": clip(8, seed=3), "two_b": clip(8, seed=4)}
    results, errors = {}, []

    def run(shot):
        try:
            with server.client() as c:
                _upload(c, shot, clips[shot])
                c.add_prompt(shot, 1, box=BOX)
                results[shot] = c.propagate(shot)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(shot,)) for shot in clips]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for shot, frames in clips.items():
        expected = direct_alphas(FastEngine(), frames, [Prompt(frame=1, box=BOX)])
        for f, a in results[shot].alphas.items():
            np.testing.assert_array_equal(a.to_numpy(), expected[f])


def test_kill9_mid_propagate_then_restart_serves_finished_frames_from_cache(tmp_path):
    cache = tmp_path / "cache"
    frames = clip(30, seed=5)
    server = ServerProcess(cache, delay=0.15)
    got = {}
    try:
        server.wait_ready()
        c = server.client(frame_timeout=5.0)
        _upload(c, "crash", frames)
        c.add_prompt("crash", 1, box=BOX)
        worker = threading.Thread(target=lambda: _swallow(lambda: c.propagate(
            "crash", on_alpha=lambda a: got.__setitem__(a.frame, np.array(a.to_numpy())))))
        worker.start()
        deadline = time.monotonic() + 30
        while len(got) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill9()
        worker.join(15)
        c.close()
    finally:
        server.stop()
    assert 5 <= len(got) < 30
    with ServerProcess(cache) as restarted:
        with restarted.client() as c:
            reply = c.open_shot("crash", first=1, last=30, width=64, height=48)
            assert reply["resumed"] and reply["received"] == list(range(1, 31)) and reply["keyframes"] == [1]
            found, missing = c.get_alpha("crash", sorted(got))
            assert not missing
            for frame, alpha in got.items():
                assert found[frame].to_numpy().tobytes() == alpha.tobytes()  # bit-identical
            r = c.propagate("crash")
            assert set(got) <= set(r.cached)
            assert sorted(r.computed) == sorted(set(range(1, 31)) - set(r.cached))


def _swallow(fn):
    try:
        fn()
    except Exception:  # noqa: BLE001 - the server was killed under it
        pass


def test_lru_eviction_under_memory_budget_reloads_from_disk(tmp_path):
    # a 64x48 float32 mask is 12,288 bytes: a second shot with a mask prompt evicts the first
    with ServerProcess(tmp_path / "cache", extra=("--memory-budget", "20000")) as server:
        with server.client() as c:
            frames = clip(4, seed=6)
            for shot in ("lru_a", "lru_b", "lru_c"):
                _upload(c, shot, frames)
                c.add_prompt(shot, 1, box=BOX, mask=np.ones((48, 64), np.float32))
                c.propagate(shot)
            loaded = {s["shot"] for s in c.status()["shots"]}
            assert "lru_a" not in loaded and "lru_c" in loaded
            assert c.status()["cache_bytes"] <= 20000
            # an evicted shot comes back transparently, prompts (mask included) and cache intact
            r = c.propagate("lru_a")
            assert r.computed == [] and sorted(r.cached) == [1, 2, 3, 4]


def test_errors_are_typed_and_paths_sanitised(client):
    cases = [
        (lambda: client.open_shot("../etc", first=1, last=2, width=8, height=8), "bad_shot"),
        (lambda: client.open_shot("a/b", first=1, last=2, width=8, height=8), "bad_shot"),
        (lambda: client.open_shot("ok", first=5, last=1, width=8, height=8), "bad_shot"),
        (lambda: client.open_shot("ok", first=1, last=2, width=8, height=8, colorspace="nope"), "bad_shot"),
        (lambda: client.propagate("never_opened"), "no_shot"),
        (lambda: client.add_prompt("never_opened", 1, box=BOX), "no_shot"),
    ]
    for call, code in cases:
        with pytest.raises(ServerError) as info:
            call()
        assert info.value.code == code, info.value
    client.open_shot("errs", first=1, last=3, width=64, height=48)
    for call, code in [
        (lambda: client.put_frames("errs", {9: clip(1)[0]}), "bad_frame"),
        (lambda: client.put_frames("errs", {1: np.zeros((10, 10, 3), np.float32)}), "bad_frame"),
        (lambda: client.put_frames("errs", {1: "/nonexistent/plate.exr"}, encoding="path"), "bad_frame"),
        (lambda: client.put_frames("errs", {1: b"not an exr"}, encoding="exr"), "bad_frame"),
        (lambda: client.add_prompt("errs", 1, box=(50, 50, 10, 10)), "bad_prompt"),
        (lambda: client.add_prompt("errs", 1, points=[(1000, 1, 1)]), "bad_prompt"),
        (lambda: client.add_prompt("errs", 1, points=[(10, 10, 0)]), "bad_prompt"),  # background points alone
        (lambda: client.propagate("errs"), "bad_prompt"),
    ]:
        with pytest.raises(ServerError) as info:
            call()
        assert info.value.code == code, info.value
    client.add_prompt("errs", 1, box=BOX)
    with pytest.raises(ServerError) as info:
        client.propagate("errs")
    assert info.value.code == "missing_frames"
    # NaN / inf plates are sanitised (as the file readers do) and reported
    bad = clip(1)[0]
    bad[0, 0] = np.nan
    bad[1, 1] = np.inf
    reply = client.request("put_frames", {"shot": "errs", "frames": [
        {"frame": 1, "encoding": "raw", "buffer": 1, "dtype": "<f4", "shape": [48, 64, 3]}]}, [bad.tobytes()])[0]
    assert reply["sanitised"] == [1]
    assert not (Path(client.request("status")[0]["shots"][0]["shot"]).is_absolute())


def test_close_shot_purge_and_sigterm_exit(tmp_path):
    server = ServerProcess(tmp_path / "cache")
    server.wait_ready()
    with server.client() as c:
        _upload(c, "gone", clip(2))
        assert (tmp_path / "cache" / "shots" / "gone").is_dir()
        c.close_shot("gone", purge=True)
        assert not (tmp_path / "cache" / "shots" / "gone").exists()
        with pytest.raises(ServerError):
            c.propagate("gone")
    assert server.stop() == 0  # SIGTERM: clean exit code 0
    assert "server stopped" in server.tail()


def test_non_loopback_bind_refused_without_keys_and_allowed_with_them(tmp_path):
    import subprocess

    from test_server_support import ROOT, free_port
    env_cmd = [sys.executable, "-m", "mam2_server.cli", "serve", "--address", "tcp://0.0.0.0:1",
               "--cache-dir", str(tmp_path / "c")]
    out = subprocess.run(env_cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "CURVE" in out.stderr and "mam2 keys" in out.stderr
    keys = tmp_path / "keys"
    out = subprocess.run([sys.executable, "-m", "mam2_server.cli", "keys", str(keys)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    port = free_port()
    server = ServerProcess(tmp_path / "cache", port=port, extra=("--curve", str(keys)))
    server.address = f"tcp://127.0.0.1:{port}"
    try:
        from host_plugins.mam2_client import Client, ServerUnavailable
        deadline = time.monotonic() + 30
        with Client(server.address, timeout=1.0, retries=1, curve_server_key=str(keys / "server.key"),
                    curve_client_secret=str(keys / "client.key_secret")) as secure:
            while True:
                try:
                    assert secure.hello()["protocol"] == 1
                    break
                except ServerUnavailable:
                    assert time.monotonic() < deadline, server.tail()
        from host_plugins.mam2_client import ServerError
        with Client(server.address, timeout=20.0, retries=1) as plain:  # no keys: refused in the handshake, said so
            with pytest.raises(ServerError) as info:
                plain.hello()
            assert info.value.code == "unauthorized" and "--curve" in info.value.message
        stranger = tmp_path / "stranger"
        out = subprocess.run([sys.executable, "-m", "mam2_server.cli", "keys", str(stranger)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        with Client(server.address, timeout=20.0, retries=1, curve_server_key=str(keys / "server.key"),
                    curve_client_secret=str(stranger / "client.key_secret")) as unknown:  # a key not authorized
            with pytest.raises(ServerError) as info:
                unknown.hello()
            assert info.value.code == "unauthorized" and "authorized/" in info.value.message
    finally:
        server.stop()


@pytest.mark.parametrize("engine", ["classic", "baseline"])
def test_real_engine_through_the_server_equals_engine_run(tmp_path, engine):
    """The server feeds the engine the same pixels `mam2 matte` would (engine.run over a FrameSource)."""
    from mam2_server.engines import create_engine
    frames = clip(4, seed=7)
    box = (6, 8, 32, 32)
    with ServerProcess(tmp_path / "cache", engine=engine) as server:
        with server.client() as c:
            assert c.hello()["engine"] == engine
            _upload(c, "real", frames)
            c.add_prompt("real", 2, box=box)
            result = c.propagate("real")
        expected = direct_alphas(create_engine(engine), frames, [Prompt(frame=2, box=box)])
        assert sorted(result.alphas) == [1, 2, 3, 4]
        for f, a in result.alphas.items():
            np.testing.assert_array_equal(a.to_numpy(), expected[f])


def test_engine_failure_is_an_error_reply_and_the_server_stays_up(tmp_path):
    server = ServerProcess(tmp_path / "cache", env={"MAM2_TEST_FAIL_FRAME": "3"})
    try:
        server.wait_ready()
        with server.client() as c:
            _upload(c, "fail", clip(5))
            c.add_prompt("fail", 1, box=BOX)
            with pytest.raises(ServerError) as info:
                c.propagate("fail")
            assert info.value.code == "engine_error" and "after 2 frame(s)" in info.value.message
            found, missing = c.get_alpha("fail", [1, 2, 3])
            assert sorted(found) == [1, 2] and missing == [3]  # the frames before the failure are kept
            assert c.hello()["protocol"] == 1
    finally:
        assert server.stop() == 0


def test_sigterm_mid_propagate_ends_the_job_cleanly(tmp_path):
    import signal
    with ServerProcess(tmp_path / "cache", delay=0.3) as server:
        with server.client() as c:
            worker, result = _propagate_in_background(c, "term", clip(20))
            time.sleep(1.0)
            server.proc.send_signal(signal.SIGTERM)
            worker.join(15)
            assert result["r"].cancelled and len(result["r"].computed) < 20
            assert server.proc.wait(15) == 0


def test_edits_during_a_propagate_never_mix_prompts_and_cache(tmp_path):
    with ServerProcess(tmp_path / "cache", delay=0.2) as server:
        with server.client() as c, server.client() as other:
            frames = clip(8, seed=8)
            worker, result = _propagate_in_background(c, "edit", frames)
            time.sleep(0.6)
            new_box = (20, 12, 44, 36)
            assert other.add_prompt("edit", 1, box=new_box)["affected"] == list(range(1, 9))
            with pytest.raises(ServerError) as info:  # no replacing pixels under a running job
                other.put_frames("edit", {3: frames[2]})
            assert info.value.code == "busy"
            worker.join(30)
            assert sorted(result["r"].computed) == list(range(1, 9))  # finished with the prompt it started with
            assert other.get_alpha("edit", range(1, 9))[1] == list(range(1, 9))  # none valid for the new one
            again = c.propagate("edit")
            expected = direct_alphas(FastEngine(), frames, [Prompt(frame=1, box=new_box)])
            for f, a in again.alphas.items():
                np.testing.assert_array_equal(a.to_numpy(), expected[f])
