"""mam2_server.io.sequence and .source: patterns, frame ranges, frame sources, matte output."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mam2_server.io.colour import ColourConverter
from mam2_server.io.image import ImageInfo, ImageIOError, read_image, write_image
from mam2_server.io.sequence import SequencePattern, format_frame_range, parse_frame_range
from mam2_server.io.source import ArraySource, SequenceSource, write_alpha_frame

H, W = 48, 64


def _is_frame_source(source) -> bool:
    # stages.base.FrameSource is a (non runtime-checkable) Protocol: check its members.
    return all(hasattr(source, name) for name in ("frames", "width", "height", "linear", "display"))


@pytest.mark.parametrize("pattern, padding, name", [
    ("plate.####.exr", 4, "plate.1001.exr"),
    ("plate.#.exr", 1, "plate.1001.exr"),
    ("plate_%04d.exr", 4, "plate_1001.exr"),
    ("plate_%06d.exr", 6, "plate_001001.exr"),
    ("plate.%d.exr", 1, "plate.1001.exr"),
    ("plate.@@@@.exr", 4, "plate.1001.exr"),
    ("plate.@.exr", 1, "plate.1001.exr"),
    ("plate.$F4.exr", 4, "plate.1001.exr"),
    ("plate.$F.exr", 1, "plate.1001.exr"),
    ("v2/plate.###.exr", 3, "plate.1001.exr"),
])
def test_pattern_styles(tmp_path, pattern, padding, name):
    seq = SequencePattern(tmp_path / pattern)
    assert seq.padding == padding
    assert seq.path(1001) == tmp_path / Path(pattern).parent / name
    assert seq.frame_of(name) == 1001


def test_padding_and_negative_frames():
    seq = SequencePattern("/shots/a.####.exr")
    assert seq.path(7).name == "a.0007.exr" and seq.path(12345).name == "a.12345.exr"
    assert seq.path(-3).name == "a.-003.exr" and seq.frame_of("a.-003.exr") == -3
    assert seq.frame_of("a.07.exr") is None and seq.frame_of("b.0007.exr") is None
    assert SequencePattern("a.%d.exr").frame_of("a.0007.exr") is None  # padded: another sequence


def test_existing_frames(tmp_path):
    for name in ["s.0003.exr", "s.0001.exr", "s.-002.exr", "s.0010.exr", "s.01.exr", "s.0004.exr.tmp",
                 ".s.0005.exr.1234abcd.tmp", "t.0006.exr", "s.0007.exr.bak"]:
        (tmp_path / name).touch()
    assert SequencePattern(tmp_path / "s.####.exr").existing_frames() == [-2, 1, 3, 10]
    assert SequencePattern(tmp_path / "missing" / "s.####.exr").existing_frames() == []


@pytest.mark.parametrize("bad", ["plate.exr", "plate.1001.exr", ""])
def test_pattern_without_frame_token(bad):
    with pytest.raises(ValueError, match="no frame number token"):
        SequencePattern(bad)


@pytest.mark.parametrize("text, frames", [
    ("1001", [1001]),
    ("1001-1005", [1001, 1002, 1003, 1004, 1005]),
    ("1001-1009x2", [1001, 1003, 1005, 1007, 1009]),
    ("1001-1010x4", [1001, 1005, 1009]),
    ("1,3,5-7", [1, 3, 5, 6, 7]),
    (" 7 , 3, 5 - 6 ", [3, 5, 6, 7]),
    ("-5--3", [-5, -4, -3]),
    ("-1-1", [-1, 0, 1]),
    ("3,1,3", [1, 3]),
])
def test_parse_frame_range(text, frames):
    assert parse_frame_range(text) == frames
    assert parse_frame_range(format_frame_range(frames)) == frames


@pytest.mark.parametrize("bad, message", [
    ("", "empty"), ("abc", "cannot read 'abc'"), ("10-5", "ends before it starts"), ("1-10x0", "step"),
    ("1-", "cannot read"), ("1,,2", "cannot read ''"), ("1.5", "cannot read"), ("1-10x", "cannot read"),
])
def test_parse_frame_range_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_frame_range(bad)


def test_format_frame_range():
    assert format_frame_range([]) == ""
    assert format_frame_range([5]) == "5"
    assert format_frame_range([1005, 1006, 1007, 1008, 1009]) == "1005-1009"
    assert format_frame_range([1, 2, 3, 5, 7, 9]) == "1-3,5-9x2"
    assert format_frame_range([1, 3]) == "1,3"
    assert format_frame_range([4, 1, 2, 2]) == "1-2,4"


# ----------------------------------------------------------------------------- sources

def _write_plates(directory, frames, info=None, size=(H, W), value=None):
    rng = np.random.default_rng(0)
    h, w = (info.height, info.width) if info else size
    for frame in frames:
        pixels = rng.uniform(0, 3, (h, w, 3)).astype(np.float32) if value is None else np.full((h, w, 3), value)
        write_image(directory / f"plate.{frame:04d}.exr", pixels, channels=("R", "G", "B"), info=info,
                    pixel_type="float")
    return SequencePattern(directory / "plate.####.exr")


def test_sequence_source_reads_frames(tmp_path):
    pattern = _write_plates(tmp_path, range(1001, 1004))
    source = SequenceSource(pattern)
    assert _is_frame_source(source)
    assert source.frames == [1001, 1002, 1003] and (source.width, source.height) == (W, H)
    linear = source.linear(1002)
    np.testing.assert_array_equal(linear, read_image(pattern.path(1002)).pixels)
    assert linear.max() > 1  # never clipped
    display = source.display(1002)
    assert display.shape == (H, W, 3) and display.dtype == np.float32 and display.max() <= 1
    linear[:] = -1  # callers may scribble on what they get
    assert source.linear(1002).min() >= 0
    with pytest.raises(ValueError, match="frame 999 is not in this source"):
        source.linear(999)
    assert SequenceSource(str(pattern), frames=[1003, 1001]).frames == [1001, 1003]


def test_sequence_source_reads_each_frame_once(tmp_path, monkeypatch):
    from mam2_server.io import source as source_mod
    pattern = _write_plates(tmp_path, range(1, 4))
    reads = []
    real = source_mod.read_image
    monkeypatch.setattr(source_mod, "read_image", lambda path, **kw: reads.append(Path(path).name) or real(path, **kw))
    source = SequenceSource(pattern)
    for frame in (1, 2, 3):
        source.linear(frame)
        source.display(frame)
        source.linear(frame)
    source.display(2)  # still cached (last two frames)
    source.linear(1)  # evicted: read again
    assert reads == ["plate.0001.exr", "plate.0002.exr", "plate.0003.exr", "plate.0001.exr"]


def test_sequence_source_bbox_frames_in_display_window(tmp_path):
    info = ImageInfo(x=10, y=5, width=41, height=36, full_x=0, full_y=0, full_width=W, full_height=H,
                     metadata={"mam2:test": "kept"})
    pattern = _write_plates(tmp_path, [1, 2], info=info, value=2.5)
    source = SequenceSource(pattern)
    assert (source.width, source.height) == (W, H)
    linear = source.linear(1)
    assert linear.shape == (H, W, 3) and linear[5:41, 10:51].min() == 2.5 and linear.sum() == 2.5 * 41 * 36 * 3
    plate_info = source.info(1)
    assert plate_info.data_window == (10, 5, 41, 36) and plate_info.metadata["mam2:test"] == "kept"

    alpha = np.zeros((H, W), np.float32)
    alpha[:, 30:] = 1.0
    out = SequencePattern(tmp_path / "out" / "alpha.%04d.exr")
    (tmp_path / "out").mkdir()
    path = write_alpha_frame(out, 1, alpha, like=plate_info)
    assert path == tmp_path / "out" / "alpha.0001.exr"
    matte = read_image(path)
    assert matte.info.channels == ("A",) and matte.info.data_window == (10, 5, 41, 36)
    assert matte.info.display_window == (0, 0, W, H) and matte.info.metadata["mam2:test"] == "kept"
    np.testing.assert_array_equal(matte.pixels[..., 0], alpha[5:41, 10:51])
    with pytest.raises(ImageIOError, match=r"alpha\.0002\.exr: alpha is 10x10"):
        write_alpha_frame(out, 2, np.zeros((10, 10), np.float32), like=plate_info)


def test_sequence_source_missing_frames_listed_compactly(tmp_path):
    pattern = _write_plates(tmp_path, range(1001, 1005))
    with pytest.raises(ImageIOError, match=r"missing frames 1005-1009 .*plate\.1005\.exr"):
        SequenceSource(pattern, frames=parse_frame_range("1001-1009"))
    with pytest.raises(ImageIOError, match=r"none\.####\.exr: no frames found"):
        SequenceSource(SequencePattern(tmp_path / "none.####.exr"))


def test_sequence_source_size_mismatch_names_the_file(tmp_path):
    _write_plates(tmp_path, [1, 2])
    pattern = _write_plates(tmp_path, [3], size=(H, W + 2))
    with pytest.raises(ImageIOError, match=r"plate\.0003\.exr: display window \(0, 0, 66, 48\) differs"):
        SequenceSource(pattern)


def test_sequence_source_unreadable_file_names_the_file(tmp_path):
    pattern = _write_plates(tmp_path, [1, 2])
    pattern.path(3).write_bytes(b"this is not an EXR")
    with pytest.raises(ImageIOError, match=r"plate\.0003\.exr: unreadable"):
        SequenceSource(pattern)


def test_sequence_source_needs_colour_channels(tmp_path):
    write_image(tmp_path / "m.0001.exr", np.zeros((H, W, 1), np.float32), channels=("A",))
    with pytest.raises(ImageIOError, match=r"m\.0001\.exr: a plate needs R,G,B or Y"):
        SequenceSource(tmp_path / "m.####.exr")
    write_image(tmp_path / "g.0001.exr", np.full((H, W), 0.5, np.float32))  # grey plate -> RGB
    assert SequenceSource(tmp_path / "g.####.exr").linear(1).shape == (H, W, 3)


def test_array_source(tmp_path):
    frames = [np.full((H, W, 3), v, np.float32) for v in (0.18, 4.0)]
    frames[1][0, 0, 0] = np.nan
    source = ArraySource(frames, colour=ColourConverter())
    assert _is_frame_source(source)
    assert source.frames == [1, 2] and (source.width, source.height) == (W, H)
    assert source.linear(2)[0, 0, 0] == 0 and source.linear(2)[1, 1, 0] == 4.0
    assert abs(source.display(1)[0, 0, 0] - 0.4614) < 1e-3 and source.display(2).max() == 1.0
    assert ArraySource(frames, frames=[10, 20]).frames == [10, 20]
    with pytest.raises(ValueError, match="shape"):
        ArraySource([frames[0], np.zeros((2, 2, 3), np.float32)])
    info = source.info(1)
    assert info.display_window == (0, 0, W, H)
    write_alpha_frame(SequencePattern(tmp_path / "a.####.exr"), 1, np.ones((H, W), np.float32), like=info)
    assert read_image(tmp_path / "a.0001.exr").info.channels == ("A",)
