"""What pixels the Nuke node sends: a Read's files only when Nuke shows them as they are (else a render
of the input, only for the frames the server lacks, at full resolution), masks from Roto, and where
the alphas go."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "nuke_standin"))
from nuke_testing import (BOX, FIRST, H, W, make_read, mam2_nuke, matte, node, nuke, plates, press,  # noqa: F401
                          server, square_left, status, track_range, write_plates)

import standin_render

from mam2_server.io import read_image

pytestmark = pytest.mark.timeout(120)


def constant(count: int = 6, first: int = FIRST):
    """A node with no files behind it (any comp upstream): the adapter must render it."""
    from test_server_support import clip
    frames = clip(count)
    const = nuke.nodes.Constant()
    const["format"].setValue(nuke.Format(W, H))
    const["first"].setValue(first)
    const["last"].setValue(first + count - 1)
    const.standin_pixels = lambda f: frames[min(max(f - first, 0), count - 1)]
    return const


def plate_files_sent(server, node) -> dict[int, str]:
    """frame -> path, for plates the server holds as paths (the rest it received as pixels)."""
    folder = server.cache_dir / "shots" / node["shot"].value() / "frames"
    return {int(p.name.split(".")[0]): p.read_text() for p in folder.glob("*.path")}


def test_a_read_with_a_frame_offset_is_tracked_as_nuke_shows_it(node, tmp_path):
    write_plates(tmp_path / "p", count=10)  # files 1001-1010 ...
    read = make_read(str(tmp_path / "p" / "plate.%04d.exr"), FIRST, FIRST + 9, frame_mode="offset", frame="2")
    assert (read.firstFrame(), read.lastFrame()) == (FIRST + 2, FIRST + 11)  # ... shown at 1003-1012
    node.setInput(0, read)
    track_range(node, FIRST + 2, FIRST + 7)
    assert status(node).startswith("Done: 6 frames computed"), status(node)
    assert nuke.executed == [("Write1", FIRST + 2, FIRST + 7)]  # Nuke maps the frames: rendered, not file.value()
    assert [square_left(matte(node, f)) for f in (FIRST + 2, FIRST + 5)] == [8, 14]  # 1003 shows file 1001


def test_tcl_and_relative_paths_are_expanded_and_files_sent_by_path(node, server, tmp_path):
    write_plates(tmp_path / "shots" / "sh010")
    nuke.root()["project_directory"].setValue(str(tmp_path / "shots"))
    read = make_read("[value root.project_directory]/sh010/plate.####.exr", FIRST, FIRST + 5)
    node.setInput(0, read)
    press(node, "track")
    assert status(node).startswith("Done: 6 frames computed"), status(node)
    assert nuke.executed == []
    sent = plate_files_sent(server, node)
    assert sent[FIRST + 2] == str(tmp_path / "shots" / "sh010" / "plate.1003.exr")


def test_a_relative_read_under_a_script_directory_expression_is_sent_by_path(node, server, tmp_path):
    """Nuke's "Script Directory" button writes an expression into the project directory: it is
    evaluated (its raw text is no folder), so the Read's files are still sent as paths."""
    write_plates(tmp_path / "comp" / "sh010")
    nuke.root()["name"].setValue(str(tmp_path / "comp" / "sh010_comp_v001.nk"))
    nuke.root()["project_directory"].setValue("[python {nuke.script_directory()}]")
    assert nuke.root()["project_directory"].value() == "[python {nuke.script_directory()}]"
    node.setInput(0, make_read("sh010/plate.####.exr", FIRST, FIRST + 5))
    press(node, "track")
    assert status(node).startswith("Done: 6 frames computed"), status(node)
    assert nuke.executed == []  # not rendered
    assert plate_files_sent(server, node)[FIRST] == str(tmp_path / "comp" / "sh010" / "plate.1001.exr")


def test_a_disabled_read_is_refused_not_matted_as_black(node, tmp_path):
    write_plates(tmp_path / "p")
    read = make_read(str(tmp_path / "p" / "plate.####.exr"), FIRST, FIRST + 5)
    read["disable"].setValue(True)
    node.setInput(0, read)
    press(node, "track")
    assert status(node).startswith(f"Error: the input {read.name()} is disabled"), status(node)
    assert nuke.executed == []


def test_a_plate_in_another_colour_space_is_linearised_by_nuke(node, tmp_path):
    write_plates(tmp_path / "lin")
    reference = make_read(str(tmp_path / "lin" / "plate.####.exr"), FIRST, FIRST + 5)
    node.setInput(0, reference)
    press(node, "track")
    expected = matte(node, FIRST + 2)
    write_plates(tmp_path / "srgb", encode=standin_render.linear_to_srgb)  # the same pictures, sRGB-encoded EXRs
    other = nuke.createNode("MAM2")
    other["address"].setValue(node["address"].value())
    other["start_server"].setValue(False)
    other["box"].setValue(BOX)
    other.setInput(0, make_read(str(tmp_path / "srgb" / "plate.####.exr"), FIRST, FIRST + 5, colorspace="sRGB"))
    press(other, "track")
    assert status(other).startswith("Done"), status(other)
    assert nuke.executed == [("Write1", FIRST, FIRST + 5)]  # not sent as files: their values are not linear
    np.testing.assert_allclose(matte(other, FIRST + 2), expected, atol=2e-3)


def test_a_shorter_read_is_rendered_with_its_held_frames(node, tmp_path):
    write_plates(tmp_path / "p", count=4)
    node.setInput(0, make_read(str(tmp_path / "p" / "plate.####.exr"), FIRST, FIRST + 3))
    track_range(node, FIRST, FIRST + 5)
    assert status(node).startswith("Done: 6 frames computed"), status(node)
    assert square_left(matte(node, FIRST + 5)) == square_left(matte(node, FIRST + 3))  # Read holds its last frame


def test_only_frames_the_server_lacks_are_rendered(node, server):
    node.setInput(0, constant())
    press(node, "track")
    assert status(node).startswith("Done: 6 frames computed"), status(node)
    assert nuke.executed == [("Write1", FIRST, FIRST + 5)] and node.node("Write1") is None  # temp Write removed
    nuke.frame(FIRST + 2)
    press(node, "retrack")
    assert status(node).startswith("Done: 4 frames computed, 2 cached"), status(node)
    assert len(nuke.executed) == 1  # the server had every plate: nothing rendered again
    node["resend_plates"].setValue(True)
    press(node, "track")
    assert nuke.executed[1:] == [("Write1", FIRST, FIRST + 5)]
    assert plate_files_sent(server, node) == {}  # rendered plates are sent as pixels, then deleted here


def test_proxy_mode_renders_and_tracks_at_full_resolution(node, tmp_path):
    nuke.root()["proxy"].setValue(True)
    probe = nuke.nodes.Write(file=str(tmp_path / "probe.%04d.exr"), file_type="exr")
    probe.setInput(0, constant())
    nuke.execute(probe, FIRST, FIRST)
    assert read_image(tmp_path / "probe.1001.exr").pixels.shape[:2] == (H // 2, W // 2)  # what Nuke renders
    node.setInput(0, constant())
    press(node, "track")
    assert status(node).startswith("Done: 6 frames computed"), status(node)
    assert "proxy mode is on" in status(node) and nuke.root()["proxy"].value() is True  # restored
    shot = node["shot"].value()
    alpha = read_image(tmp_path / "mam2" / shot / f"{shot}.alpha.1001.exr").pixels
    assert alpha.shape[:2] == (H, W)


def test_a_roto_on_the_mask_input_is_a_mask_prompt_at_each_key(node, plates, server):
    roto = nuke.nodes.Roto()
    roto["format"].setValue(nuke.Format(80, 60))  # the root format, not the plate's: MAM2 puts it in the plate's
    yy, xx = np.mgrid[0:60, 0:80]

    def disc(frame):
        return ((xx - 20 - 2 * (frame - FIRST)) ** 2 + (yy - 40) ** 2 < 64).astype(np.float32)
    roto.standin_alpha = disc
    node.setInput(0, plates)
    node.setInput(1, roto)
    node["use_box"].setValue(False)
    for frame in (FIRST, FIRST + 4):
        nuke.frame(frame)
        press(node, "add_key", wait=False)
    assert "mask" in node["keys_info"].value()
    press(node, "track")
    assert status(node).startswith("Done: 6 frames computed"), status(node)
    assert [e for e in nuke.executed if e[1] == e[2]] == [("Write1", FIRST, FIRST), ("Write1", FIRST + 4, FIRST + 4)]
    prompts = server.cache_dir / "shots" / node["shot"].value() / "prompts"
    for frame in (FIRST, FIRST + 4):
        got = read_image(prompts / f"{frame}.mask.exr").pixels[..., 0]
        want = disc(frame)[60 - H:, :W]  # bottom-left aligned into 64x48
        np.testing.assert_array_equal(got, want)
    node.setInput(1, None)
    press(node, "track")
    assert "nothing is connected to the 'mask' input" in status(node)


def test_alphas_live_next_to_the_script_and_follow_it(node, plates, tmp_path):
    node.setInput(0, plates)
    press(node, "track")
    read = node.node("AlphaRead")
    assert read["file"].value().startswith("[file dirname [value root.name]]/mam2/")
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copytree(tmp_path / "mam2", moved / "mam2")
    shutil.rmtree(tmp_path / "mam2")
    nuke.root()["name"].setValue(str(moved / "comp_v001.nk"))  # the script opened on another machine
    nuke.frame(FIRST + 2)
    assert nuke.filename(read, nuke.REPLACE).startswith(str(moved / "mam2"))
    assert matte(node, FIRST + 2).max() > 0.5  # still finds its mattes


def test_an_unsaved_script_writes_to_a_temp_folder_with_a_warning(node, plates):
    nuke.root()["name"].setValue("")
    node.setInput(0, plates)
    press(node, "track")
    assert status(node).startswith("Done") and "the script is not saved" in status(node), status(node)
    path = nuke.filename(node.node("AlphaRead"), nuke.REPLACE)
    assert Path(path).is_absolute() and Path(path).exists()


def test_a_remote_server_gets_plates_and_masks_as_pixels(node, plates, server, monkeypatch):
    from mam2_client import track
    monkeypatch.setattr(track, "reads_our_files", lambda address: False)  # as for tcp://gpu-box:5557
    roto = nuke.nodes.Roto()
    roto["format"].setValue(nuke.Format(W, H))
    roto.standin_alpha = lambda f: np.pad(np.ones((10, 10), np.float32), ((30, 8), (20, 34)))
    node.setInput(0, plates)
    node.setInput(1, roto)
    press(node, "track")
    assert status(node).startswith("Done: 6 frames computed"), status(node)
    assert plate_files_sent(server, node) == {}  # no paths: a remote server cannot read ours
    frames = server.cache_dir / "shots" / node["shot"].value() / "frames"
    assert len(list(frames.glob("*.exr"))) == 6
    mask = read_image(server.cache_dir / "shots" / node["shot"].value() / "prompts" / f"{FIRST}.mask.exr")
    assert mask.pixels[..., 0].sum() == 100


def test_missing_frames_are_rendered_and_sent_a_chunk_at_a_time(node, monkeypatch):
    """A long shot never fills the temp folder nor holds the main thread: each chunk of SEND_CHUNK frames
    is rendered, sent and deleted before the next one is rendered."""
    from mam2_client import track
    monkeypatch.setattr(track, "SEND_CHUNK", 4)
    on_disk = []  # plate files in the scratch folder each time a render starts
    real = mam2_nuke.plates.render

    def render(group, source, channels, pattern, frames):
        on_disk.append(len(list(Path(pattern).parent.glob("plate.*.exr"))))
        return real(group, source, channels, pattern, frames)
    monkeypatch.setattr(mam2_nuke.plates, "render", render)
    node.setInput(0, constant(10))
    press(node, "track")
    assert status(node).startswith("Done: 10 frames computed"), status(node)
    assert nuke.executed == [("Write1", FIRST, FIRST + 3), ("Write1", FIRST + 4, FIRST + 7),
                             ("Write1", FIRST + 8, FIRST + 9)]
    assert on_disk == [0, 0, 0]  # the previous chunk was deleted once sent
    rendering = [v for _, kind, v in nuke.progress_log if kind == "message" and v.startswith("rendering")]
    assert rendering == ["rendering input frames 1001-1004 (0/10 sent)", "rendering input frames 1005-1008 (4/10 sent)",
                         "rendering input frames 1009-1010 (8/10 sent)"]
    assert square_left(matte(node, FIRST + 9)) == 8 + 2 * 9  # every chunk arrived, in its place


def test_a_cancel_lands_between_rendered_chunks(node, monkeypatch):
    from mam2_client import track
    monkeypatch.setattr(track, "SEND_CHUNK", 4)
    real = mam2_nuke.plates.render

    def render(*args):
        files = real(*args)
        nuke.cancel_progress.set()  # the artist presses Cancel on the progress bar while the first chunk renders
        return files
    monkeypatch.setattr(mam2_nuke.plates, "render", render)
    node.setInput(0, constant(12))
    press(node, "track")
    assert status(node).startswith("Cancelled"), status(node)
    assert nuke.executed == [("Write1", FIRST, FIRST + 3)]  # not the other 8 frames


def test_changing_the_tracked_range_keeps_the_shot_and_its_cache(node, server):
    node.setInput(0, constant(8))
    track_range(node, FIRST, FIRST + 5)
    shot = node["shot"].value()
    assert status(node).startswith("Done: 6 frames computed"), status(node)
    track_range(node, FIRST, FIRST + 6)  # one frame more
    assert node["shot"].value() == shot
    assert status(node).startswith("Done: 1 frames computed, 6 cached"), status(node)
    assert nuke.executed[1:] == [("Write1", FIRST + 6, FIRST + 6)]  # only the new frame rendered and sent
    track_range(node, FIRST, FIRST + 3)  # fewer
    assert node["shot"].value() == shot and status(node).startswith("Done: 0 frames computed, 4 cached"), status(node)
    assert len(nuke.executed) == 2
    with server.client() as client:
        ours = [s for s in client.status()["shots"] if s["shot"].startswith(shot.rsplit("_", 1)[0])]
    assert [s["shot"] for s in ours] == [shot]  # one shot on the server, nothing orphaned
    read = node.node("AlphaRead")
    assert (read["first"].value(), read["last"].value()) == (FIRST, FIRST + 3)


def test_the_shot_span_is_whole_blocks_and_kept_while_the_range_fits():
    from mam2_client.track import shot_span
    assert shot_span(1001, 1100) == (1000, 1999)
    assert shot_span(993, 1100) == (0, 1999)  # handles before 1000
    assert shot_span(1001, 1100, previous=(0, 1999)) == (0, 1999)  # narrowed: the same shot
    assert shot_span(1001, 2000, previous=(1000, 1999)) == (1000, 2999)  # out of it: a new one
    assert shot_span(-5, 3) == (-1000, 999)
