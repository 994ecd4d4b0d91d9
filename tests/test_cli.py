"""The `mam2` CLI end to end on small synthetic clips, and its error paths."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mam2_server.cli import main
from mam2_server.io.image import read_image, read_info, write_image

KIND = "solid"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("clips")
    assert main(["synth", str(out), "--kinds", KIND, "--frames", "4", "--size", "96x64"]) == 0
    return out / f"{KIND}_0"


def test_synth_writes_plates_alpha_and_prompts(clip_dir):
    plates = sorted((clip_dir / "plate").glob("*.exr"))
    assert len(plates) == 4
    assert len(sorted((clip_dir / "alpha").glob("*.exr"))) == 4
    prompts = json.loads((clip_dir / "prompts.json").read_text())
    assert prompts[0]["frame"] == 1001 and len(prompts[0]["box"]) == 4
    assert read_info(plates[0]).channels[:3] == ("R", "G", "B")


def test_matte_then_eval(clip_dir, tmp_path, capsys):
    out = tmp_path / "alpha.####.exr"
    code = main(["matte", str(clip_dir / "plate" / "plate.####.exr"), "-o", str(out),
                 "--prompts", str(clip_dir / "prompts.json"), "--quiet"])
    assert code == 0
    written = sorted(tmp_path.glob("alpha.*.exr"))
    assert [p.name for p in written] == [f"alpha.{f}.exr" for f in range(1001, 1005)]
    alpha = read_image(written[0])
    assert alpha.info.channels == ("A",) and alpha.info.pixel_type == "half"
    assert 0.0 <= alpha.pixels.min() and alpha.pixels.max() <= 1.0
    assert not list(tmp_path.glob("*.tmp*")), "temp files left behind"

    report = tmp_path / "scores.json"
    assert main(["eval", "--pred", str(out), "--gt", str(clip_dir / "alpha" / "alpha.####.exr"),
                 "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    for name in ("MAD", "MSE", "Grad", "Conn", "dtSSD"):
        assert name in printed
    assert json.loads(report.read_text())


def test_matte_keeps_data_window_and_metadata(tmp_path):
    # A plate whose data window (bbox) is smaller than, and offset inside, its display window.
    from mam2_server.io.image import ImageInfo

    rng = np.random.default_rng(0)
    for frame in (1, 2):
        pixels = rng.uniform(0, 2, (40, 50, 3)).astype(np.float32)
        pixels[10:30, 15:35] = (3.0, 0.2, 0.1)  # a bright object, values above 1
        info = ImageInfo(x=6, y=4, width=50, height=40, full_x=0, full_y=0, full_width=64, full_height=48,
                         channels=("R", "G", "B"), pixel_type="half", metadata={"mam2:test": "kept"})
        write_image(tmp_path / f"plate.{frame:04d}.exr", pixels, channels=("R", "G", "B"), info=info)
    assert main(["matte", str(tmp_path / "plate.####.exr"), "-o", str(tmp_path / "a.####.exr"),
                 "--box", "18,12,44,36", "--engine", "baseline", "--quiet"]) == 0
    info = read_info(tmp_path / "a.0001.exr")
    assert (info.x, info.y, info.width, info.height) == (6, 4, 50, 40)
    assert (info.full_width, info.full_height) == (64, 48)
    assert info.metadata.get("mam2:test") == "kept"


def test_matte_rgba_is_premultiplied_unmixed_foreground_with_the_plates_windows(tmp_path):
    """--rgba: premultiplied RGBA in the plate's units, windows and metadata; A equals the alpha
    file; in the soft edge the colour is unmixed from the background (the estimator's accuracy
    with a known alpha is tested in test_stage_matte)."""
    from mam2_server.io.image import ImageInfo

    h, w = 48, 64
    yy, xx = np.mgrid[0:h, 0:w]
    truth = np.clip((14.0 - np.hypot(yy - 24, xx - 30)) / 4.0, 0, 1).astype(np.float32)  # soft-edged disc
    fg = np.array([2.5, 0.4, 0.1], np.float32)  # scene-linear, above 1
    checker = (((yy // 4) + (xx // 4)) % 2).astype(np.float32)
    bg = np.stack([0.05 + 0.3 * checker, 0.3 + 0.2 * checker, 0.6 - 0.3 * checker], 2).astype(np.float32)
    info = ImageInfo(x=0, y=0, width=w, height=h, full_x=0, full_y=0, full_width=w, full_height=h,
                     channels=("R", "G", "B"), pixel_type="float", metadata={"mam2:test": "kept"})
    for frame in (1, 2):
        plate = truth[..., None] * fg + (1 - truth[..., None]) * bg
        write_image(tmp_path / f"plate.{frame:04d}.exr", plate, channels=("R", "G", "B"), info=info,
                    pixel_type="float")
    assert main(["matte", str(tmp_path / "plate.####.exr"), "-o", str(tmp_path / "a.####.exr"),
                 "--rgba", str(tmp_path / "rgba.####.exr"), "--box", "10,4,52,44", "--quiet"]) == 0
    rgba = read_image(tmp_path / "rgba.0001.exr")
    alpha = read_image(tmp_path / "a.0001.exr").pixels[..., 0]
    assert rgba.info.channels == ("R", "G", "B", "A") and rgba.info.metadata.get("mam2:test") == "kept"
    px = rgba.pixels
    np.testing.assert_allclose(px[..., 3], alpha, atol=1e-3)
    assert px[..., :3].max() > 1.5, "scene-linear values above 1 are kept"
    assert np.all(np.abs(px[..., :3][alpha < 1e-3]) < 1e-3), "premultiplied: no colour where alpha is 0"
    edge = (alpha > 0.15) & (alpha < 0.85)
    assert edge.sum() > 20
    # in the soft edge, unmixed colour: closer to the true foreground than the plate's own colour
    plate = truth[..., None] * fg + (1 - truth[..., None]) * bg
    colour = px[..., :3][edge] / alpha[edge][:, None]
    assert np.abs(colour - fg).mean() < 0.8 * np.abs(plate[edge] - fg).mean()


@pytest.mark.parametrize("rgba, message", [("rgba.####.png", ".exr"), ("a.%04d.exr", "different names")])
def test_matte_rgba_bad_output_is_refused_before_work(clip_dir, tmp_path, capsys, rgba, message):
    code = main(["matte", str(clip_dir / "plate" / "plate.####.exr"), "-o", str(tmp_path / "a.####.exr"),
                 "--rgba", str(tmp_path / rgba), "--prompts", str(clip_dir / "prompts.json"), "--quiet"])
    assert code != 0 and message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.exr")), "nothing written"


@pytest.mark.parametrize("extra, message", [
    ([], "no prompt"),
    (["--box", "10,10,5,20"], "empty box"),
    (["--box", "1,1,20,20", "--prompt-frame", "2000"], "outside"),
    (["--box", "1,1,20,20", "--engine", "nope"], "unknown engine"),
    (["--box", "1,1,20,20", "--frames", "1001-1009"], "1005-1009"),
])
def test_matte_errors_are_clear(clip_dir, tmp_path, capsys, extra, message):
    code = main(["matte", str(clip_dir / "plate" / "plate.####.exr"), "-o", str(tmp_path / "a.####.exr"),
                 "--quiet"] + extra)
    assert code != 0
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("a.*")), "no output may be written when the input is bad"


def test_missing_input_names_the_pattern(tmp_path, capsys):
    code = main(["matte", str(tmp_path / "none.####.exr"), "-o", str(tmp_path / "a.####.exr"), "--box", "1,1,5,5"])
    assert code != 0
    assert "none.####.exr" in capsys.readouterr().err


def test_bad_box_syntax_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["matte", "in.####.exr", "-o", "out.####.exr", "--box", "1,2,3"])
    assert exc.value.code == 2
    assert "--box" in capsys.readouterr().err


def test_demo_writes_matte_contact_sheet_and_metrics(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "3", "--size", "96x64", "--kind", KIND]) == 0
    assert len(sorted((out / "alpha").glob("alpha.*.exr"))) == 3
    assert (out / "contact_sheet.png").stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics
    assert "MAD" in capsys.readouterr().out


def test_console_script_help_everywhere():
    exe = Path(sys.executable).with_name("mam2")
    for args in ([], ["matte"], ["eval"], ["synth"], ["demo"], ["bench"]):
        result = subprocess.run([str(exe), *args, "--help"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "usage: mam2" in result.stdout


def test_verbose_counts_before_or_after_the_subcommand():
    from mam2_server.cli import build_parser
    parser = build_parser()
    for argv, level in ((["-v", "synth", "out"], 1), (["synth", "out", "-v"], 1), (["synth", "out", "-vv"], 2),
                        (["synth", "out"], 0), (["bench", "engines", "--verbose"], 1), (["-vv", "bench", "engines"], 2)):
        assert parser.parse_args(argv).verbose == level, argv


def test_a_hole_in_the_plate_sequence_is_a_warning(clip_dir, tmp_path, capsys):
    import shutil
    plates = tmp_path / "plates"
    shutil.copytree(clip_dir / "plate", plates)
    (plates / "plate.1003.exr").unlink()  # a render that failed to write one frame
    out = tmp_path / "out" / "alpha.####.exr"
    assert main(["matte", str(plates / "plate.####.exr"), "-o", str(out), "--prompts",
                 str(clip_dir / "prompts.json"), "--quiet"]) == 0
    assert "warning: no plates for frames 1003 inside the sequence" in capsys.readouterr().err
    assert sorted(p.name for p in out.parent.iterdir()) == [f"alpha.{f}.exr" for f in (1001, 1002, 1004)]


def test_an_output_that_cannot_be_written_is_refused_before_any_work(clip_dir, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "sub" / "alpha.####.exr"
    assert main(["matte", str(clip_dir / "plate" / "plate.####.exr"), "-o", str(out), "--prompts",
                 str(clip_dir / "prompts.json"), "--quiet"]) == 2
    assert f"{tmp_path / 'afile'} is not a folder" in capsys.readouterr().err


def test_a_matte_in_a_lossy_or_8_bit_format_is_refused(clip_dir, tmp_path, capsys):
    out = tmp_path / "alpha.####.jpg"
    assert main(["matte", str(clip_dir / "plate" / "plate.####.exr"), "-o", str(out), "--prompts",
                 str(clip_dir / "prompts.json"), "--quiet"]) == 2
    assert "written as .exr (half-float A) or .png (16-bit), not .jpg" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
