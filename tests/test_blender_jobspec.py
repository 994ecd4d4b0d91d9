"""The Blender add-on's bpy-free half (jobspec) and the client's key sync, in the main venv.

The add-on is imported as it ships: laid out by `stage_addon`, its client vendored inside it.
"""
from __future__ import annotations

import importlib
import json
import sys
import threading
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_server_support import ServerProcess, clip  # noqa: E402

from host_plugins.mam2_client import wire  # noqa: E402
from mam2_server.io import read_image, write_image  # noqa: E402
from mam2_server.package.blender import stage_addon  # noqa: E402

W, H, FIRST = 64, 48, 1001
BOX = (4.0, 28.0, 30.0, 46.0)  # left, bottom, right, top: the top rows


@pytest.fixture(scope="module")
def jobspec(tmp_path_factory):
    folder = tmp_path_factory.mktemp("addons")
    stage_addon(folder)
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("mam2_matte.jobspec")
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n.startswith("mam2_matte")]:
            del sys.modules[name]


@pytest.fixture
def plates(tmp_path):
    for i, img in enumerate(clip(6), start=FIRST):
        write_image(tmp_path / f"plate.{i:04d}.exr", img, pixel_type="float")
    return tmp_path


def values(jobspec, plates: Path, **kw):
    base = dict(address="tcp://127.0.0.1:5557", start_server=False, engine="default", server_command=(),
                image_path=str(plates / "plate.1001.exr"), image_source="SEQUENCE", image_name="plate.1001.exr",
                colorspace="Linear Rec.709", timing=jobspec.PlateTiming.opened(FIRST, 6), use_image_range=True,
                frame_first=1, frame_last=6, keys=(jobspec.KeyValues(FIRST, box=BOX),), output_dir="",
                blend_dir=str(plates / "shots"), shot_uuid="0123456789abcdef0123456789abcdef")
    return jobspec.PanelValues(**{**base, **kw})


def test_plate_timing_maps_scene_and_file_frames_like_blender(jobspec):
    opened = jobspec.PlateTiming.opened(1001, 6)  # Image > Open of plate.1001-1006
    assert (opened.start, opened.offset, opened.duration, opened.first, opened.last) == (1, 1000, 6, 1001, 1006)
    assert [opened.file_frame(f) for f in range(0, 8)] == [None, 1001, 1002, 1003, 1004, 1005, 1006, None]
    assert all(opened.scene_frame(opened.file_frame(f)) == f for f in range(1, 7))
    slid = jobspec.PlateTiming(start=101, offset=1004, duration=3)  # files 1005-1007 on scene frames 101-103
    assert [slid.file_frame(f) for f in (100, 101, 103, 104)] == [None, 1005, 1007, None]
    assert slid.scene_frame(1005) == 101
    numbered = jobspec.PlateTiming(start=1001, offset=0, duration=6)  # "scene frame = file number"
    assert numbered.file_frame(1001) == 1 and numbered.first == 1
    cyclic = jobspec.PlateTiming(start=1, offset=1000, duration=3, cyclic=True)
    assert [cyclic.file_frame(f) for f in (0, 1, 3, 4, 7)] == [1003, 1001, 1003, 1001, 1001]
    assert jobspec.PlateTiming(1, 0, 0).file_frame(1) is None


def test_sequences_on_disk_and_the_exr_header(jobspec, plates, tmp_path):
    pattern = jobspec.sequence_pattern(str(plates / "plate.1003.exr"))
    assert pattern == str(plates / "plate.####.exr")
    assert jobspec.sequence_frames(pattern) == list(range(1001, 1007))
    assert jobspec.sequence_pattern("/a/sh10_0100_v2.exr") == "/a/sh10_0100_v#.exr"  # Blender: last digit run
    assert jobspec.exr_size(str(plates / "plate.1001.exr")) == (W, H)
    from mam2_server.io.image import ImageInfo
    info = ImageInfo(x=5, y=4, width=20, height=10, full_x=0, full_y=0, full_width=W, full_height=H,
                     channels=("R", "G", "B"))
    write_image(tmp_path / "bbox.exr", np.zeros((10, 20, 3), np.float32), channels=("R", "G", "B"), info=info)
    assert jobspec.exr_size(str(tmp_path / "bbox.exr")) == (W, H)  # the display window, not the data window
    (tmp_path / "x.exr").write_bytes(b"nope")
    with pytest.raises(jobspec.Refused, match="not an OpenEXR"):
        jobspec.exr_size(str(tmp_path / "x.exr"))


def test_shot_ids_and_alpha_folders(jobspec):
    uid = "0123456789abcdef0123456789abcdef"
    shot = jobspec.shot_id(uid, W, H, 1001, 1006, "ACEScg")
    assert shot == jobspec.shot_id(uid, W, H, 1001, 1006, "ACEScg") and shot.startswith("blender_0123456789ab_")
    others = {jobspec.shot_id(uid, W, H, 1001, 1005, "ACEScg"), jobspec.shot_id(uid, W, H, 1001, 1006, None),
              jobspec.shot_id(uid, W + 1, H, 1001, 1006, "ACEScg"), jobspec.shot_id("f" * 32, W, H, 1001, 1006, "ACEScg")}
    assert shot not in others and len(others) == 4
    import re
    assert all(re.fullmatch(wire.SHOT_ID_PATTERN, s) for s in others | {shot})
    assert jobspec.output_folder("", shot) == f"//mam2/{shot}/"  # next to the .blend, relative
    assert jobspec.output_folder("//alpha/", shot) == f"//alpha/{shot}/"
    assert jobspec.output_folder("/renders/mattes", shot) == f"/renders/mattes/{shot}/"
    assert jobspec.absolute(f"//mam2/{shot}/", "/shows/x") == f"/shows/x/mam2/{shot}"
    with pytest.raises(jobspec.Refused, match="not saved"):
        jobspec.absolute("//mam2/", "")
    assert jobspec.absolute("/abs/out/", "") == "/abs/out"


def test_blender_colour_spaces_are_names_the_server_knows(jobspec):
    config = oiio.ColorConfig("")  # the server's default: OIIO's built-in OCIO config
    for blender_name, ocio in jobspec.OCIO_NAMES.items():
        assert config.getColorSpaceIndex(ocio) >= 0, (blender_name, ocio)
    assert jobspec.ocio_name("Linear Rec.709") == "Linear Rec.709 (sRGB)"
    assert jobspec.ocio_name("AgX Log") == "AgX Log" and jobspec.ocio_name("") is None  # a studio name: as is


def test_build_job_sends_every_key_in_file_frames(jobspec, plates):
    keys = (jobspec.KeyValues(1004, points=((20.0, 40.0, 1), (5.0, 5.0, 0))), jobspec.KeyValues(FIRST, box=BOX),
            jobspec.KeyValues(1010, box=BOX))  # 1010: not on the plate, not sent
    job = jobspec.build_job(values(jobspec, plates, keys=keys, colorspace="ACEScg"))
    assert (job.first, job.last, job.width, job.height) == (1001, 1006, W, H)
    assert [k.frame for k in job.keyframes] == [1004, 1001] and job.prompt == job.keyframes[0]
    assert job.keyframes[0].points == ((20.0, 40.0, 1), (5.0, 5.0, 0)) and job.keyframes[1].box == BOX
    assert job.colorspace == "ACEScg" and job.plates[1006] == str(plates / "plate.1006.exr")
    assert job.output_pattern == str(plates / "shots" / "mam2" / job.shot / "alpha.%04d.exr")
    part = jobspec.build_job(values(jobspec, plates, use_image_range=False, frame_first=2, frame_last=4, keys=keys,
                                    colorspace="ACEScg"))
    assert (part.first, part.last, sorted(part.plates)) == (1002, 1004, [1002, 1003, 1004])
    # a range inside the shot's span (whole blocks of track.SHOT_BLOCK frames): the same shot and cache
    assert [k.frame for k in part.keyframes] == [1004] and part.span == job.span == (1000, 1999)
    assert part.shot == job.shot
    # the same range in another colour space: another shot
    assert jobspec.build_job(values(jobspec, plates, keys=keys, colorspace="Linear Rec.709")).shot != job.shot


def test_a_range_narrowed_inside_the_stored_span_keeps_the_shot(jobspec, tmp_path):
    """The span of the last Track (stored in the scene) is kept while the tracked range fits in it, as the
    Nuke node does: widen across a block boundary (a new shot), then narrow back: still that shot."""
    for i, img in enumerate(clip(6), start=998):
        write_image(tmp_path / f"plate.{i:04d}.exr", img, pixel_type="float")
    base = dict(image_path=str(tmp_path / "plate.0998.exr"), timing=jobspec.PlateTiming.opened(998, 6),
                keys=(jobspec.KeyValues(1001, box=BOX),), blend_dir=str(tmp_path))
    narrow = dict(use_image_range=False, frame_first=4, frame_last=6)  # files 1001-1003

    first = jobspec.build_job(values(jobspec, tmp_path, **base, **narrow))
    assert (first.first, first.last, first.span) == (1001, 1003, (1000, 1999))
    wide = jobspec.build_job(values(jobspec, tmp_path, **base, shot_span=first.span))  # files 998-1003
    assert (wide.first, wide.last, wide.span) == (998, 1003, (0, 1999)) and wide.shot != first.shot
    again = jobspec.build_job(values(jobspec, tmp_path, **base, **narrow, shot_span=wide.span))
    assert again.span == wide.span and again.shot == wide.shot
    assert again.output_pattern == wide.output_pattern  # the same alpha folder too
    # no stored span (a scene never tracked): the span of the blocks around the range
    assert jobspec.build_job(values(jobspec, tmp_path, **base, **narrow)).shot == first.shot


@pytest.mark.parametrize("change, expected", [
    (dict(image_path=""), "no plate"),
    (dict(image_source="MOVIE"), "is a movie"),
    (dict(image_source="FILE"), "set the Image's Source to Image Sequence"),
    (dict(image_source="TILED"), "opened as UDIM tiles"),
    (dict(image_path="/nowhere/plate.1001.exr"), "no files on disk match"),
    (dict(timing=None), "plays no frames"),
    (dict(timing="long"), "2 plate files are missing from 1001-1008"),
    (dict(use_image_range=False, frame_first=5, frame_last=2), "is empty"),
    (dict(use_image_range=False, frame_first=0, frame_last=3), "are not all on the plate node"),
    (dict(keys=()), "no keyframe: go to a frame of the plate and add a key"),
    (dict(keys="outside"), "no keyframe inside the tracked file frames 1001-1006"),
    (dict(keys="empty box"), r"key on scene frame 1 \(file 1001\): the box .* is empty"),
    (dict(keys="nothing"), r"key on scene frame 3 \(file 1003\): no prompt"),
    (dict(address="  "), "address is empty"),
    (dict(blend_dir=""), "not saved"),
])
def test_build_job_refuses_with_a_reason(jobspec, plates, change, expected):
    special = {"long": jobspec.PlateTiming.opened(FIRST, 8), "outside": (jobspec.KeyValues(1010, box=BOX),),
               "empty box": (jobspec.KeyValues(FIRST, box=(10, 10, 10, 30)),),
               "nothing": (jobspec.KeyValues(1003),)}
    change = {k: special.get(v, v) if isinstance(v, str) else v for k, v in change.items()}
    with pytest.raises(jobspec.Refused, match=expected):
        jobspec.build_job(values(jobspec, plates, **change))


def test_keys_sync_with_the_server_masks_are_flipped_and_the_colour_space_goes_along(jobspec, plates, tmp_path):
    core = jobspec.core
    mask = np.zeros((H, W), np.float32)
    mask[30:44, 40:60] = 1.0  # host rows, bottom first: near the top of the frame
    keys = (jobspec.KeyValues(FIRST, box=BOX), jobspec.KeyValues(1004, mask=mask))
    with ServerProcess(tmp_path / "cache") as server:
        job = jobspec.build_job(values(jobspec, plates, keys=keys, address=server.address, colorspace="ACEScg"))
        written = []
        result = core.run_job(job, threading.Event(), lambda text, percent: None, on_written=written.append)
        assert not result.error and sorted(result.computed) == list(range(1001, 1007)) and written == result.written
        shot_dir = server.cache_dir / "shots" / job.shot
        stored = read_image(shot_dir / "prompts" / "1004.mask.exr").pixels[..., 0]
        np.testing.assert_array_equal(stored, mask[::-1])  # top row first on the wire
        assert core.ShotPrompt(FIRST, None, mask="/r/m.exr").server_mask() == "/r/m.exr"  # a file: as it is
        manifest = json.loads((shot_dir / "shot.json").read_text())
        assert manifest["colorspace"] == "ACEScg" and [p["frame"] for p in manifest["prompts"]] == [1001, 1004]

        # the same keys again: nothing recomputed; the second key deleted: removed on the server
        again = core.run_job(job, threading.Event(), lambda text, percent: None)
        assert again.computed == [] and sorted(again.cached) == list(range(1001, 1007))
        fewer = jobspec.build_job(values(jobspec, plates, keys=keys[:1], address=server.address, colorspace="ACEScg"))
        assert fewer.shot == job.shot
        result = core.run_job(fewer, threading.Event(), lambda text, percent: None)
        assert not result.error and sorted(result.computed) == [1004, 1005, 1006]
        with server.client() as client:
            assert client.open_shot(job.shot, first=job.span[0], last=job.span[1], width=W, height=H,
                                    colorspace="ACEScg")["keyframes"] == [1001]
