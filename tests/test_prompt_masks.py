"""Mask prompts (the roto workflow) from the command line, prompt JSON and batch manifests; Nuke-like
colour defaults for integer plates."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mam2_server.cli import main
from mam2_server.io.image import ImageInfo, read_image, write_image
from mam2_server.io.mask import read_mask
from mam2_server.prompts import Prompt, PromptError, load_prompts

W, H = 64, 48


def _plates(folder, frames=(1, 2, 3), suffix="exr"):
    """A bright square (the object) over a textured background; returns the pattern and the object mask."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    truth = np.zeros((H, W), np.float32)
    truth[14:34, 20:44] = 1
    for f in frames:
        plate = (0.05 + 0.1 * rng.random((H, W, 3))).astype(np.float32)
        plate[truth > 0] = (0.9, 0.3, 0.1)
        write_image(folder / f"plate.{f:04d}.{suffix}", plate, channels=("R", "G", "B"))
    return str(folder / f"plate.####.{suffix}"), truth


def test_read_mask_uses_alpha_else_first_channel_and_the_display_window(tmp_path):
    rgba = np.zeros((H, W, 4), np.float32)
    rgba[..., 0] = 1.0  # red everywhere: not the mask when there is an A channel
    rgba[10:20, 5:15, 3] = 1.0
    write_image(tmp_path / "rgba.exr", rgba, channels=("R", "G", "B", "A"))
    m = read_mask(tmp_path / "rgba.exr")
    assert m.shape == (H, W) and m.sum() == 100 and m[15, 10] == 1
    grey = np.zeros((H, W, 1), np.float32)
    grey[0:4, 0:4] = 0.7
    write_image(tmp_path / "grey.png", grey, channels=("Y",))
    assert read_mask(tmp_path / "grey.png").sum() == 16
    # a mask with a bbox (data window) inside its format lands where it belongs
    info = ImageInfo(30, 20, 10, 8, 0, 0, W, H, ("A",), "half")
    write_image(tmp_path / "bbox.exr", np.ones((8, 10, 1), np.float32), channels=("A",), info=info)
    m = read_mask(tmp_path / "bbox.exr")
    assert m.shape == (H, W) and m.sum() == 80 and m[20:28, 30:40].all()
    # a rectangular roto shape filling its bbox, with colour: its uniform A is the shape, not the colour
    rgba_box = np.ones((8, 10, 4), np.float32)
    rgba_box[..., 0] = np.linspace(0.0, 1.0, 10)[None, :]
    info4 = ImageInfo(30, 20, 10, 8, 0, 0, W, H, ("R", "G", "B", "A"), "half")
    write_image(tmp_path / "bbox_rgba.exr", rgba_box, channels=("R", "G", "B", "A"), info=info4)
    assert read_mask(tmp_path / "bbox_rgba.exr").sum() == 80


def test_prompt_json_reads_mask_paths_relative_to_the_file(tmp_path):
    (tmp_path / "masks").mkdir()
    write_image(tmp_path / "masks" / "key.png", np.ones((H, W, 1), np.float32), channels=("Y",))
    (tmp_path / "keys.json").write_text(json.dumps([{"frame": 3, "mask": "masks/key.png"}, {"frame": 1, "box": [1, 2, 30, 40]}]))
    prompts = {p.frame: p for p in load_prompts(tmp_path / "keys.json")}
    assert prompts[3].mask.shape == (H, W) and prompts[3].mask.all()
    assert prompts[3].to_json() == {"frame": 3, "mask": str((tmp_path / "masks" / "key.png").resolve())}
    (tmp_path / "bad.json").write_text(json.dumps([{"frame": 1, "mask": "nope.png"}]))
    with pytest.raises(PromptError, match="nope.png"):
        load_prompts(tmp_path / "bad.json")
    with pytest.raises(PromptError, match="path of a mask image"):
        Prompt.from_json({"frame": 1, "mask": 3})


def test_matte_with_a_mask_prompt_from_the_command_line(tmp_path, capsys):
    pattern, truth = _plates(tmp_path / "plates")
    write_image(tmp_path / "roto.exr", truth[..., None], channels=("A",))
    out = tmp_path / "out" / "alpha.####.exr"
    assert main(["matte", pattern, "-o", str(out), "--mask", str(tmp_path / "roto.exr"), "--prompt-frame", "2",
                 "--quiet"]) == 0
    for f in (1, 2, 3):
        alpha = read_image(tmp_path / "out" / f"alpha.{f:04d}.exr").pixels[..., 0]
        assert np.abs(alpha - truth).mean() < 0.02, f
    # a mask of the wrong size is refused with both sizes named
    write_image(tmp_path / "small.exr", np.ones((10, 10, 1), np.float32), channels=("A",))
    assert main(["matte", pattern, "-o", str(out), "--mask", str(tmp_path / "small.exr"), "--quiet"]) == 2
    assert "10x10" in capsys.readouterr().err


def test_batch_manifest_takes_mask_prompts(tmp_path):
    pattern, truth = _plates(tmp_path / "sh010")
    write_image(tmp_path / "sh010" / "roto.exr", truth[..., None], channels=("A",))
    manifest = {"shots": [{"name": "sh010", "input": pattern, "output": str(tmp_path / "sh010" / "a.####.exr"),
                           "prompts": [{"frame": 1, "mask": "sh010/roto.exr"}]}]}
    (tmp_path / "shots.json").write_text(json.dumps(manifest))
    assert main(["batch", str(tmp_path / "shots.json"), "--quiet"]) == 0
    alpha = read_image(tmp_path / "sh010" / "a.0003.exr").pixels[..., 0]
    assert np.abs(alpha - truth).mean() < 0.02


def test_integer_plates_default_to_srgb_and_float_plates_to_linear(tmp_path):
    from mam2_server.io import SequenceSource
    from mam2_server.io.colour import ColourConverter
    grey = np.full((H, W, 3), 0.5, np.float32)  # 0.5 as stored
    write_image(tmp_path / "p.0001.png", grey, channels=("R", "G", "B"))
    write_image(tmp_path / "e.0001.exr", grey, channels=("R", "G", "B"))
    png = SequenceSource(str(tmp_path / "p.####.png"))
    exr = SequenceSource(str(tmp_path / "e.####.exr"))
    assert abs(float(png.linear(1)[0, 0, 0]) - 0.214) < 2e-3  # sRGB 0.5 decoded to linear
    assert abs(float(png.display(1)[0, 0, 0]) - 0.5) < 2e-3
    assert abs(float(exr.linear(1)[0, 0, 0]) - 0.5) < 1e-3  # float: already scene-linear
    # an explicit colour space wins over the default
    raw = SequenceSource(str(tmp_path / "p.####.png"), colour=ColourConverter(colorspace="lin_rec709"))
    assert abs(float(raw.linear(1)[0, 0, 0]) - 0.5) < 2e-3


def test_a_mask_saved_with_an_opaque_alpha_uses_its_colour_and_a_full_frame_mask_is_refused(tmp_path):
    shape = np.zeros((H, W, 4), np.float32)
    shape[10:20, 5:15, :3] = 1.0  # a white shape on black ...
    shape[..., 3] = 1.0  # ... saved with alpha 255 everywhere (a PNG export with no transparency)
    write_image(tmp_path / "opaque_alpha.png", shape, channels=("R", "G", "B", "A"))
    m = read_mask(tmp_path / "opaque_alpha.png")
    assert m.sum() == 100 and m[15, 10] == 1
    write_image(tmp_path / "all.png", np.ones((H, W, 1), np.float32), channels=("Y",))
    full = Prompt(frame=1, mask=read_mask(tmp_path / "all.png"), mask_path=str(tmp_path / "all.png"))
    with pytest.raises(PromptError, match="all.png covers the whole frame"):
        full.validate(W, H)


def test_matte_refuses_an_output_over_its_plates_and_leaves_nothing_when_refused(tmp_path, capsys):
    pattern, truth = _plates(tmp_path / "plates")
    write_image(tmp_path / "roto.exr", truth[..., None], channels=("A",))
    before = (tmp_path / "plates" / "plate.0001.exr").read_bytes()
    same = str(tmp_path / "plates" / "plate.%04d.exr")  # the input under another spelling
    assert main(["matte", pattern, "-o", same, "--mask", str(tmp_path / "roto.exr"), "--quiet"]) == 2
    assert "overwrite the plates" in capsys.readouterr().err
    assert (tmp_path / "plates" / "plate.0001.exr").read_bytes() == before
    # a prompt refused once the plates are read (an empty mask, named) leaves no output folder behind
    write_image(tmp_path / "empty.exr", np.zeros((H, W, 1), np.float32), channels=("A",))
    out = tmp_path / "out" / "alpha.####.exr"
    assert main(["matte", pattern, "-o", str(out), "--mask", str(tmp_path / "empty.exr"), "--quiet"]) == 2
    assert "empty.exr is empty" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_prompt_files_take_a_bom_and_refuse_frames_that_are_not_whole_numbers(tmp_path):
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([{"frame": 2, "box": [1, 2, 30, 40]}]).encode())
    assert load_prompts(tmp_path / "bom.json")[0].frame == 2
    for bad in (1001.7, "1001", True):
        (tmp_path / "bad.json").write_text(json.dumps([{"frame": bad, "box": [1, 2, 30, 40]}]))
        with pytest.raises(PromptError, match="whole frame number"):
            load_prompts(tmp_path / "bad.json")


def test_outputs_of_srgb_plates_carry_no_plate_colour_tag(tmp_path):
    pattern, truth = _plates(tmp_path / "plates", suffix="png")
    write_image(tmp_path / "roto.png", truth[..., None], channels=("Y",))
    assert "srgb" in read_image(tmp_path / "plates" / "plate.0001.png").info.metadata.get("oiio:ColorSpace", "").lower()
    out, rgba = tmp_path / "out" / "alpha.####.exr", tmp_path / "out" / "rgba.####.exr"
    assert main(["matte", pattern, "-o", str(out), "--rgba", str(rgba), "--mask", str(tmp_path / "roto.png"),
                 "--quiet"]) == 0
    alpha_tags = read_image(tmp_path / "out" / "alpha.0001.exr").info.metadata
    assert "oiio:ColorSpace" not in alpha_tags and "colorInteropID" not in alpha_tags  # a matte is data
    rgba_tags = read_image(tmp_path / "out" / "rgba.0001.exr").info.metadata
    assert "lin_rec709" in rgba_tags.get("oiio:ColorSpace", "")  # decoded to linear, and tagged so
    # the same files declared linear: used as they are, and the RGBA says so, not the PNG's sRGB tag
    rgba = tmp_path / "declared" / "rgba.####.exr"
    assert main(["matte", pattern, "-o", str(tmp_path / "declared" / "alpha.####.exr"), "--rgba", str(rgba),
                 "--mask", str(tmp_path / "roto.png"), "--colorspace", "lin_rec709", "--quiet"]) == 0
    declared = read_image(tmp_path / "declared" / "rgba.0001.exr").info.metadata
    assert "lin_rec709" in declared.get("oiio:ColorSpace", "") and "srgb" not in str(declared).lower()


def test_batch_check_finds_masks_that_do_not_fit_the_plates(tmp_path, capsys):
    pattern, truth = _plates(tmp_path / "sh010")
    write_image(tmp_path / "small.exr", np.ones((10, 10, 1), np.float32), channels=("A",))
    write_image(tmp_path / "empty.exr", np.zeros((H, W, 1), np.float32), channels=("A",))
    manifest = {"shots": [{"name": f"s{i}", "input": pattern, "output": str(tmp_path / f"o{i}" / "a.####.exr"),
                           "prompts": [{"frame": 1, "mask": m}]} for i, m in enumerate(("small.exr", "empty.exr"))]}
    (tmp_path / "shots.json").write_text(json.dumps(manifest))
    assert main(["batch", str(tmp_path / "shots.json"), "--check"]) == 2
    out = capsys.readouterr()
    text = out.out + out.err
    assert "10x10" in text and "empty.exr is empty" in text  # before any task starts, not at render time


def test_the_rgba_keeps_a_linear_plates_own_colour_tag_unless_told_otherwise(tmp_path):
    from mam2_server.io.colour import ColourConverter
    from mam2_server.io.image import read_info
    from mam2_server.shot import rgba_info
    write_image(tmp_path / "p.exr", np.zeros((4, 4, 3), np.float32))
    plain = read_info(tmp_path / "p.exr")
    tagged = plain.copy()
    tagged.metadata["oiio:ColorSpace"] = "ACEScg"
    assert rgba_info(tagged, ColourConverter()).metadata["oiio:ColorSpace"] == "ACEScg"  # its values, its tag
    assert "lin_rec709" in rgba_info(tagged, ColourConverter("lin_rec709")).metadata["oiio:ColorSpace"]  # named
    assert "lin_rec709" in rgba_info(plain, ColourConverter()).metadata["oiio:ColorSpace"]  # untagged: the default
