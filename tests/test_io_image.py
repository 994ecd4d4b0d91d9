"""mam2_server.io.image: EXR/PNG/TIFF round trips, windows, metadata, atomic writes, bytes."""
from __future__ import annotations

import logging

import numpy as np
import OpenImageIO as oiio
import pytest

from mam2_server.io import image as image_mod
from mam2_server.io.image import (
    Image, ImageInfo, ImageIOError, decode_image, encode_image, from_display_window, read_image, read_info,
    to_display_window, write_alpha, write_image,
)

H, W = 48, 64


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def _plate(rng, h=H, w=W, c=4):
    # Scene-linear values: negatives and values far above 1 must survive.
    return rng.normal(0.5, 3.0, (h, w, c)).astype(np.float32)


def _write_oiio(path, specs_and_pixels):
    """Write (multi-part) EXRs with OIIO directly, as another application would."""
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), [s for s, _ in specs_and_pixels])
    for i, (spec, pixels) in enumerate(specs_and_pixels):
        if i:
            assert out.open(str(path), spec, "AppendSubimage")
        assert out.write_image(np.ascontiguousarray(pixels, np.float32))
    out.close()


def _spec(names, pixel_type=oiio.HALF, part=None):
    spec = oiio.ImageSpec(W, H, len(names), pixel_type)
    spec.channelnames = tuple(names)
    if part:
        spec.attribute("name", part)
    return spec


@pytest.mark.parametrize("pixel_type, dtype", [("half", np.float16), ("float", np.float32)])
def test_exr_round_trip_bit_exact(tmp_path, rng, pixel_type, dtype):
    pixels = _plate(rng)
    pixels[0, 0] = (40000.0, -7.5, 1e-3, 2.0)
    path = write_image(tmp_path / "plate.exr", pixels, pixel_type=pixel_type)
    image = read_image(path)
    assert image.info.channels == ("R", "G", "B", "A") and image.info.pixel_type == pixel_type
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (H, W, 4)
    np.testing.assert_array_equal(image.pixels, pixels.astype(dtype).astype(np.float32))
    assert image.pixels.max() > 1 and image.pixels.min() < 0


def test_tiled_exr(tmp_path, rng):
    spec = _spec("RGBA", oiio.FLOAT)
    spec.tile_width = spec.tile_height = 16
    pixels = _plate(rng)
    _write_oiio(tmp_path / "tiled.exr", [(spec, pixels)])
    np.testing.assert_array_equal(read_image(tmp_path / "tiled.exr").pixels, pixels)


def test_rgb_and_grey_defaults(tmp_path, rng):
    write_image(tmp_path / "rgb.exr", _plate(rng, c=3))
    assert read_image(tmp_path / "rgb.exr").info.channels == ("R", "G", "B")
    grey = rng.uniform(0, 4, (H, W)).astype(np.float32)  # 2-D input: the OIIO 1-channel pitfall
    write_image(tmp_path / "grey.exr", grey, pixel_type="float")
    image = read_image(tmp_path / "grey.exr")
    assert image.info.channels == ("Y",)
    np.testing.assert_array_equal(image.pixels[..., 0], grey)


def test_named_layers_single_part(tmp_path):
    names = ("R", "G", "B", "A", "diffuse.R", "diffuse.G", "diffuse.B", "depth.Z")
    pixels = np.broadcast_to(np.arange(len(names), dtype=np.float32), (H, W, len(names)))
    _write_oiio(tmp_path / "layers.exr", [(_spec(names), pixels)])
    plate = read_image(tmp_path / "layers.exr")
    assert plate.info.channels == ("R", "G", "B", "A")
    diffuse = read_image(tmp_path / "layers.exr", channels="diffuse")
    assert diffuse.info.channels == ("diffuse.R", "diffuse.G", "diffuse.B")
    assert diffuse.pixels[0, 0].tolist() == [4, 5, 6]
    assert read_image(tmp_path / "layers.exr", channels="depth").pixels[0, 0].tolist() == [7]
    picked = read_image(tmp_path / "layers.exr", channels=["diffuse.G", "A"])
    assert picked.pixels[3, 3].tolist() == [5, 3]
    assert read_info(tmp_path / "layers.exr", channels="diffuse").channels == diffuse.info.channels
    with pytest.raises(ImageIOError, match=r"layers\.exr.*specular.*layers: depth, diffuse"):
        read_image(tmp_path / "layers.exr", channels="specular")


def test_multi_part_layers(tmp_path):
    rgba = np.full((H, W, 4), 1.0, np.float32)
    diffuse = np.full((H, W, 4), 2.0, np.float32)
    spec = np.full((H, W, 3), 3.0, np.float32)
    _write_oiio(tmp_path / "parts.exr", [
        (_spec("RGBA", part="rgba"), rgba),
        (_spec(("diffuse.R", "diffuse.G", "diffuse.B", "diffuse.A"), oiio.FLOAT, part="diffuse"), diffuse),
        (_spec("RGB", part="specular"), spec),  # a part whose channels carry no layer prefix
    ])
    assert read_image(tmp_path / "parts.exr").pixels.max() == 1.0
    image = read_image(tmp_path / "parts.exr", channels="diffuse")
    assert image.info.channels == ("diffuse.R", "diffuse.G", "diffuse.B", "diffuse.A")
    assert image.info.pixel_type == "float" and np.all(image.pixels == 2.0)
    assert np.all(read_image(tmp_path / "parts.exr", channels="specular").pixels == 3.0)


def test_missing_colour_channel_is_a_clear_error(tmp_path):
    _write_oiio(tmp_path / "rg.exr", [(_spec("RG"), np.zeros((H, W, 2)))])
    with pytest.raises(ImageIOError, match=r"rg\.exr: missing colour channel\(s\) B"):
        read_image(tmp_path / "rg.exr")
    with pytest.raises(ImageIOError, match=r"rg\.exr: missing channel\(s\) Q"):
        read_image(tmp_path / "rg.exr", channels=["R", "Q"])


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(ImageIOError, match=r"nothere\.exr: file does not exist"):
        read_image(tmp_path / "nothere.exr")
    (tmp_path / "bad.exr").write_bytes(b"v/1\x01" + b"\0" * 64)
    with pytest.raises(ImageIOError, match=r"bad\.exr: unreadable"):
        read_info(tmp_path / "bad.exr")
    good = encode_image(np.ones((H, W, 3), np.float32), channels="RGB")
    (tmp_path / "cut.exr").write_bytes(good[: len(good) // 2])  # header fine, pixels cut off
    with pytest.raises(ImageIOError, match=r"cut\.exr"):
        read_image(tmp_path / "cut.exr")


@pytest.mark.parametrize("window", [
    (10, 5, 41, 36),      # bbox (10,5)-(50,40) inside the 64x48 format
    (-8, -4, 80, 56),     # overscan: bigger than the format on every side
    (50, 30, 30, 30),     # partly outside the format
])
def test_data_and_display_window_preserved(tmp_path, rng, window):
    x, y, w, h = window
    info = ImageInfo(x=x, y=y, width=w, height=h, full_x=0, full_y=0, full_width=W, full_height=H)
    pixels = _plate(rng, h, w, 3)
    write_image(tmp_path / "bbox.exr", pixels, channels=("R", "G", "B"), info=info, pixel_type="float")
    image = read_image(tmp_path / "bbox.exr")
    assert image.info.data_window == window and image.info.display_window == (0, 0, W, H)
    np.testing.assert_array_equal(image.pixels, pixels)

    full = to_display_window(image)
    assert full.shape == (H, W, 3)
    reference = np.zeros((H + 200, W + 200, 3), np.float32)  # paste into a big canvas, then crop
    reference[100 + y:100 + y + h, 100 + x:100 + x + w] = pixels
    np.testing.assert_array_equal(full, reference[100:100 + H, 100:100 + W])

    back = from_display_window(full, image.info)
    assert back.shape == (h, w, 3)
    inside = reference.copy()
    inside[:100] = inside[100 + H:] = 0
    inside[:, :100] = inside[:, 100 + W:] = 0
    np.testing.assert_array_equal(back, inside[100 + y:100 + y + h, 100 + x:100 + x + w])


def test_display_window_origin_offset():
    info = ImageInfo(x=12, y=7, width=4, height=3, full_x=10, full_y=5, full_width=8, full_height=6)
    full = to_display_window(Image(np.ones((3, 4, 1), np.float32), info))
    assert full[2:5, 2:6].min() == 1 and full.sum() == 12


def test_metadata_and_compression_preserved(tmp_path, rng):
    matrix = tuple(float(i) for i in range(16))
    info = ImageInfo(x=0, y=0, width=W, height=H, channels=("R", "G", "B"),
                     metadata={"mam2:test": "kept", "nuke/node_hash": "a1b2", "worldToCamera": matrix,
                               "framesPerSecond": (24, 1), "exr/int": 42, "exr/float": 1.5})
    info.attribute_types["framesPerSecond"] = "rational"
    write_image(tmp_path / "meta.exr", _plate(rng, c=3), channels=("R", "G", "B"), info=info, compression="piz")
    back = read_info(tmp_path / "meta.exr")
    meta = back.metadata
    assert meta["mam2:test"] == "kept" and meta["nuke/node_hash"] == "a1b2"
    assert meta["compression"] == "piz" and meta["exr/int"] == 42 and meta["exr/float"] == 1.5
    assert meta["worldToCamera"] == matrix and back.attribute_types["worldToCamera"] == "matrix"
    assert meta["framesPerSecond"] == (24, 1)
    # A second round trip through the read info keeps everything (and the compression by default "zip").
    write_image(tmp_path / "again.exr", read_image(tmp_path / "meta.exr").pixels, channels="RGB", info=back)
    again = read_info(tmp_path / "again.exr")
    assert again.attribute_types["worldToCamera"] == "matrix" and again.metadata["mam2:test"] == "kept"
    assert again.metadata["compression"] == "zip"


def test_nan_and_inf_are_sanitised_with_a_warning(tmp_path, rng, caplog):
    pixels = _plate(rng, c=3)
    pixels[1, 2] = (np.nan, np.inf, -np.inf)
    pixels[3, 4, 0] = np.nan
    write_image(tmp_path / "nan.exr", pixels, pixel_type="float")
    with caplog.at_level(logging.WARNING, logger="mam2_server.io"):
        image = read_image(tmp_path / "nan.exr")
    assert np.isfinite(image.pixels).all()
    assert image.pixels[1, 2].tolist() == [0, 0, 0] and image.pixels[3, 4, 0] == 0
    expected = np.where(np.isfinite(pixels), pixels, 0)
    np.testing.assert_array_equal(image.pixels, expected)
    assert "nan.exr" in caplog.text and "2 NaN and 2 infinite" in caplog.text


def test_write_alpha_exr_and_png(tmp_path, rng):
    alpha = rng.uniform(0, 1, (H, W)).astype(np.float32)
    write_alpha(tmp_path / "a.exr", alpha)
    image = read_image(tmp_path / "a.exr")
    assert image.info.channels == ("A",) and image.info.pixel_type == "half"
    assert image.info.metadata["compression"] == "zip"
    np.testing.assert_array_equal(image.pixels[..., 0], alpha.astype(np.float16).astype(np.float32))

    write_alpha(tmp_path / "a.png", alpha)
    png = read_image(tmp_path / "a.png")
    assert png.info.pixel_type == "uint16" and png.pixels.shape == (H, W, 1)
    assert np.abs(png.pixels[..., 0] - alpha).max() <= 0.5 / 65535 + 1e-7


def test_write_alpha_like_keeps_plate_windows_and_metadata(tmp_path, rng):
    info = ImageInfo(x=10, y=5, width=41, height=36, full_x=0, full_y=0, full_width=W, full_height=H,
                     metadata={"mam2:test": "kept", "oiio:ColorSpace": "lin_rec709"})
    write_image(tmp_path / "plate.exr", _plate(rng, 36, 41, 4), info=info, compression="piz", pixel_type="float")
    plate = read_info(tmp_path / "plate.exr")
    write_alpha(tmp_path / "alpha.exr", np.full((36, 41), 0.5, np.float32), like=plate)
    alpha = read_info(tmp_path / "alpha.exr")
    assert alpha.data_window == plate.data_window and alpha.display_window == plate.display_window
    assert alpha.channels == ("A",) and alpha.pixel_type == "half" and alpha.metadata["compression"] == "zip"
    assert alpha.metadata["mam2:test"] == "kept"
    with pytest.raises(ImageIOError, match=r"alpha2\.exr: size mismatch"):
        write_alpha(tmp_path / "alpha2.exr", np.zeros((H, W), np.float32), like=plate)
    assert not (tmp_path / "alpha2.exr").exists()


def test_integer_formats_are_normalised(tmp_path, rng):
    pixels = rng.uniform(-0.5, 1.5, (H, W, 3)).astype(np.float32)
    clipped = np.clip(pixels, 0, 1)
    for name, pixel_type, levels in [("a.png", "uint8", 255), ("b.png", "uint16", 65535),
                                     ("c.tif", "uint16", 65535), ("d.dpx", "uint16", 65535)]:
        write_image(tmp_path / name, pixels, pixel_type=pixel_type)
        image = read_image(tmp_path / name)
        assert image.info.pixel_type == pixel_type, name
        assert image.pixels.min() >= 0 and image.pixels.max() <= 1
        assert np.abs(image.pixels - clipped).max() <= 0.5 / levels + 1e-6, name
    write_image(tmp_path / "e.jpg", pixels)  # float types become uint8 for JPEG
    assert read_image(tmp_path / "e.jpg").info.pixel_type == "uint8"
    write_image(tmp_path / "f.tif", pixels, pixel_type="float")  # TIFF keeps float, unclipped
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif").pixels, pixels)


def test_write_errors(tmp_path, rng):
    pixels = _plate(rng, c=3)
    with pytest.raises(ImageIOError, match=r"x\.exr: 3 channel\(s\)"):
        write_image(tmp_path / "x.exr", pixels, channels=("R", "G"))
    with pytest.raises(ImageIOError, match=r"x\.exr: directory .* does not exist"):
        write_image(tmp_path / "nodir" / "x.exr", pixels)
    with pytest.raises(ImageIOError, match=r"x\.exr: unknown pixel_type"):
        write_image(tmp_path / "x.exr", pixels, pixel_type="int7")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path, rng, monkeypatch):
    pixels = _plate(rng, c=3)
    write_image(tmp_path / "keep.exr", pixels)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.exr"]  # no temp file after success
    before = (tmp_path / "keep.exr").read_bytes()

    def fail(out, arr):  # the temp file exists and is half written when this runs
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
        raise RuntimeError("disk full")

    monkeypatch.setattr(image_mod, "_write_pixels", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_image(tmp_path / "new.exr", pixels)
    with pytest.raises(RuntimeError, match="disk full"):
        write_image(tmp_path / "keep.exr", pixels * 2)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["keep.exr"]
    assert (tmp_path / "keep.exr").read_bytes() == before

    (tmp_path / "isdir.exr").mkdir()  # os.replace onto a directory fails after a complete write
    with pytest.raises(ImageIOError, match=r"isdir\.exr: cannot write"):
        write_image(tmp_path / "isdir.exr", pixels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["isdir.exr", "keep.exr"]


def test_encode_decode_round_trip(rng):
    info = ImageInfo(x=10, y=5, width=41, height=36, full_x=0, full_y=0, full_width=W, full_height=H,
                     metadata={"mam2:test": "kept"})
    pixels = _plate(rng, 36, 41, 4)
    data = encode_image(pixels, channels=("R", "G", "B", "A"), info=info)
    assert data[:4] == b"v/1\x01"  # the EXR magic number
    image = decode_image(data)
    assert image.info.data_window == info.data_window and image.info.display_window == info.display_window
    assert image.info.metadata["mam2:test"] == "kept"
    np.testing.assert_array_equal(image.pixels, pixels.astype(np.float16).astype(np.float32))
    alpha = decode_image(encode_image(pixels[..., 3], channels=("A",), pixel_type="float"))
    np.testing.assert_array_equal(alpha.pixels[..., 0], pixels[..., 3])
    png = decode_image(encode_image(np.clip(pixels[..., :3], 0, 1), channels="RGB", suffix=".png"), suffix=".png")
    assert png.info.pixel_type == "uint16"


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"v/1\x01" + b"\xff" * 40])
def test_decode_bad_bytes(data):
    with pytest.raises(ImageIOError, match=rf"<{len(data)} bytes of \.exr>"):
        decode_image(data)


def test_decode_truncated_bytes(rng):
    data = encode_image(_plate(rng), channels="RGBA")
    with pytest.raises(ImageIOError):
        decode_image(data[: len(data) - 200])
