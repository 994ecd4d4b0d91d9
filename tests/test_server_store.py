"""Server storage units: shot ids, frame snapshots for running jobs, oversized data windows."""
import numpy as np
import pytest

from mam2_server.io.image import ImageInfo
from mam2_server.protocol import ProtocolError
from mam2_server.server.pixels import check_plate_info
from mam2_server.server.shots import ShotStore
from mam2_server.prompts import Prompt
from mam2_server.server.store import check_shot_id


@pytest.mark.parametrize("bad", ["abc\n", "../x", "a..b", "", "-x", "a/b"])
def test_shot_ids_that_could_escape_or_litter_are_refused(bad):
    with pytest.raises(ProtocolError):
        check_shot_id(bad)


def test_a_running_job_keeps_reading_the_frames_it_started_with(tmp_path):
    store = ShotStore(tmp_path, memory_budget=1 << 30)
    shot, _ = store.open(shot="sh", first=1, last=1, width=8, height=6, colorspace=None)
    old = np.full((6, 8, 3), 0.25, np.float32)
    new = np.full((6, 8, 3), 0.75, np.float32)
    path = shot.disk.put_frame(1, "a" * 32, old, None)
    shot.frames[1] = ("a" * 32, path)
    source = shot.source()  # what a propagate snapshots when it starts
    newer = shot.disk.put_frame(1, "b" * 32, new, None)
    shot.frames[1] = ("b" * 32, newer)
    assert np.allclose(source.linear(1), 0.25)
    assert np.allclose(shot.source().linear(1), 0.75)


def test_engines_get_scene_linear_values_from_a_display_encoded_shot(tmp_path):
    store = ShotStore(tmp_path, memory_budget=1 << 30)
    shot, _ = store.open(shot="sh", first=1, last=1, width=8, height=6, colorspace="srgb_tx")
    path = shot.disk.put_frame(1, "a" * 32, np.full((6, 8, 3), 0.5, np.float32), None)
    shot.frames[1] = ("a" * 32, path)
    source = shot.source()
    assert np.allclose(source.linear(1), 0.214, atol=2e-3)  # sRGB 0.5 decoded
    assert np.allclose(source.display(1), 0.5, atol=2e-3)


def test_a_huge_data_window_behind_a_small_frame_is_refused():
    info = ImageInfo(x=0, y=0, width=20000, height=20000, full_x=0, full_y=0, full_width=64, full_height=48,
                     channels=("R", "G", "B"))
    with pytest.raises(ProtocolError, match="data window"):
        check_plate_info(info, "plate.exr", 64, 48)
    ok = ImageInfo(x=-8, y=-8, width=80, height=64, full_x=0, full_y=0, full_width=64, full_height=48,
                   channels=("R", "G", "B"))
    check_plate_info(ok, "plate.exr", 64, 48)  # ordinary overscan


def test_an_exr_mask_with_a_huge_data_window_is_refused_before_decoding():
    from mam2_server import protocol as P
    from mam2_server.io.image import encode_image
    from mam2_server.server.pixels import decode_pixels

    info = ImageInfo(x=0, y=0, width=400, height=300, full_x=0, full_y=0, full_width=64, full_height=48,
                     channels=("A",))
    data = encode_image(np.zeros((300, 400, 1), np.float32), channels=("A",), info=info)
    ref = P.Pixels(encoding=P.ENC_EXR, buffer=1)
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_pixels(ref, [data], width=64, height=48, channels=(1,))


def test_cache_keys_cover_the_neighbours_and_earlier_keyframes_an_engine_reads(tmp_path):
    """A re-uploaded frame changes the key of every frame whose result may read it: its pass's later
    frames, frames within the engine's neighbour reach, and (chained) the passes after its keyframe."""
    store = ShotStore(tmp_path, memory_budget=1 << 30)
    shot, _ = store.open(shot="sh", first=1, last=20, width=8, height=6, colorspace=None)
    for f in range(1, 21):
        shot.frames[f] = (f"{f:032d}", tmp_path / f"{f}.exr")
    prompts = {1: Prompt(frame=1, box=(1, 1, 5, 5)), 10: Prompt(frame=10, box=(1, 1, 5, 5))}
    before = shot.alpha_keys("e", chained=True, prompts=prompts, reach=3)
    shot.frames[1] = ("x" * 32, tmp_path / "1b.exr")  # the first keyframe's plate changes
    after = shot.alpha_keys("e", chained=True, prompts=prompts, reach=3)
    assert all(after[f] != before[f] for f in range(1, 21))  # every pass used keyframe 1's pixels
    shot.frames[1] = ("1".zfill(32), tmp_path / "1.exr")
    shot.frames[15] = ("y" * 32, tmp_path / "15b.exr")
    moved = shot.alpha_keys("e", chained=True, prompts=prompts, reach=3)
    changed = sorted(f for f in range(1, 21) if moved[f] != before[f])
    assert changed == [12, 13, 14, 15, 16, 17, 18, 19, 20]  # 3 before it (the plate), itself and after
    shot.frames[15] = ("15".zfill(32), tmp_path / "15.exr")
    shot.frames[8] = ("z" * 32, tmp_path / "8b.exr")  # read by keyframe 10's plate: the whole pass from it
    moved = shot.alpha_keys("e", chained=True, prompts=prompts, reach=3)
    assert sorted(f for f in range(1, 21) if moved[f] != before[f]) == list(range(5, 21))
    shot.frames[8] = ("8".zfill(32), tmp_path / "8.exr")
    assert shot.alpha_keys("e", chained=True, prompts=prompts, reach=3) == before
    independent = shot.alpha_keys("e", chained=False, prompts=prompts)
    shot.frames[15] = ("15".zfill(32), tmp_path / "15.exr")
    assert shot.alpha_keys("e", chained=False, prompts=prompts)[14] == independent[14]


def _propagating_handlers(tmp_path, memory_budget: int = 1 << 30):
    """Handlers over a store with shot `sh` (3 frames of 8x6, a box on frame 1), ready to propagate."""
    import sys
    from pathlib import Path

    from mam2_server.server.files import FileReader
    from mam2_server.server.handlers import Handlers
    sys.path.insert(0, str(Path(__file__).parent))
    from test_server_support import FastEngine

    store = ShotStore(tmp_path / "cache", memory_budget=memory_budget)
    shot, _ = store.open(shot="sh", first=1, last=3, width=8, height=6, colorspace=None)
    for f in (1, 2, 3):
        digest = f"{f:032d}"
        shot.frames[f] = (digest, shot.disk.put_frame(f, digest, np.full((6, 8, 3), 0.1 * f, np.float32), None))
    with shot.lock:
        shot.set_prompt(1, Prompt(frame=1, box=(1, 1, 5, 5)), chained=False)
    handlers = Handlers(FastEngine(), "testfast", store, FileReader(None, 1 << 30, None), limits={})
    return store, handlers


def _propagate(handlers, send=lambda *args: None):
    from mam2_server import protocol as P
    from mam2_server.server.handlers import Job
    return handlers.propagate(P.Propagate(shot="sh"), Job(b"client", "job", "sh"), send)


def test_a_shot_closed_with_purge_as_a_propagate_looks_it_up_is_no_shot_not_a_job_on_deleted_files(tmp_path):
    """close_shot(purge) between a propagate's look-up and its marking the shot busy: the propagate answers
    no_shot (close marks the shot closed under the lock the propagate checks it under)."""
    store, handlers = _propagating_handlers(tmp_path)
    real_get = store.get
    closed = []

    def get(shot_id):
        found = real_get(shot_id)
        if not closed:  # the data thread closes it right after the compute thread's look-up
            closed.append(True)
            store.close(shot_id, purge=True)
        return found

    store.get = get
    with pytest.raises(ProtocolError) as info:
        _propagate(handlers)
    assert info.value.code == "no_shot", info.value


def test_a_shot_evicted_as_a_propagate_looks_it_up_is_looked_up_again_and_marked_busy(tmp_path):
    """Evicted between the look-up and busy += 1: the propagate runs on the shot the store holds, so that
    close_shot sees it busy (not on a stale copy, behind which a purge could delete its files)."""
    store, handlers = _propagating_handlers(tmp_path)
    real_get = store.get
    evicted = []

    def get(shot_id):
        found = real_get(shot_id)
        if not evicted:
            evicted.append(True)
            store.memory_budget = -1  # another shot's request evicts it
            store.enforce_budget(keep="other")
            store.memory_budget = 1 << 30
        return found

    store.get = get
    busy_seen = []
    reply = _propagate(handlers, lambda *args: busy_seen.append([s.busy for s in store.loaded() if s.id == "sh"]))
    assert sorted(reply.computed) == [1, 2, 3]
    assert busy_seen and all(b == [1] for b in busy_seen), busy_seen  # the shot the store lists ran busy
