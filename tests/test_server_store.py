"""Server storage units: shot ids, frame snapshots for running jobs, oversized data windows."""
import numpy as np
import pytest

from mam2_server.io.image import ImageInfo
from mam2_server.protocol import ProtocolError
from mam2_server.server.pixels import check_plate_info
from mam2_server.server.shots import ShotStore
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
