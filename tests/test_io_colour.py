"""mam2_server.io.colour: OCIO conversions through OpenImageIO."""
from __future__ import annotations

import numpy as np
import pytest

from mam2_server.io.colour import ColourConverter

H, W = 48, 64

MINI_CONFIG = """\
ocio_profile_version: 2
roles:
  default: lin
  scene_linear: lin
displays:
  screen:
    - !<View> {name: gamma, colorspace: g22}
colorspaces:
  - !<ColorSpace>
    name: lin
  - !<ColorSpace>
    name: g22
    from_scene_reference: !<ExponentTransform> {value: 2.2, direction: inverse}
"""


@pytest.fixture(autouse=True)
def _no_studio_config(monkeypatch):
    monkeypatch.delenv("OCIO", raising=False)  # tests use OIIO's built-in config unless they say so


def test_mid_grey_to_srgb_and_no_clamp_in_linear():
    colour = ColourConverter()
    linear = np.full((H, W, 3), 0.18, np.float32)
    linear[0, 0] = 4.0
    linear[0, 1] = -0.5
    display = colour.to_display(linear)
    assert display.shape == (H, W, 3) and display.dtype == np.float32
    assert abs(display[5, 5, 0] - 0.4614) < 1e-3
    assert display[0, 0].tolist() == [1.0, 1.0, 1.0] and display[0, 1].tolist() == [0.0, 0.0, 0.0]
    assert linear[0, 0, 0] == 4.0  # the input is not modified
    # The linear path keeps values above 1: display -> linear of an unclipped encoding.
    unclipped = colour._convert(linear, colour.colorspace, colour.display_space)
    assert unclipped[0, 0, 0] > 1.5
    np.testing.assert_allclose(colour.from_display(unclipped)[0, 0], 4.0, rtol=1e-4)


@pytest.mark.parametrize("space", ["scene_linear", "lin_rec709", "ACEScg"])
def test_inverse_round_trip(space):
    rng = np.random.default_rng(1)
    colour = ColourConverter(colorspace=space)
    display = rng.uniform(0.02, 0.98, (H, W, 3)).astype(np.float32)
    linear = colour.from_display(display)
    back = colour.to_display(linear)
    np.testing.assert_allclose(back, display, atol=2e-4)


def test_default_is_rec709_linear_because_the_builtin_scene_linear_role_is_acescg(monkeypatch):
    monkeypatch.delenv("OCIO", raising=False)
    red = np.zeros((2, 2, 3), np.float32)
    red[..., 0] = 0.5
    rec709 = ColourConverter().to_display(red)
    assert rec709[0, 0, 1] == 0 and rec709[0, 0, 2] == 0
    acescg = ColourConverter(colorspace="ACEScg").to_display(red)
    np.testing.assert_allclose(ColourConverter(colorspace="scene_linear").to_display(red), acescg, atol=1e-6)


def test_unknown_colour_space_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown colour space 'nope'.*known colour spaces: .*ACEScg"):
        ColourConverter(colorspace="nope")
    with pytest.raises(ValueError, match=r"unknown display colour space 'sRGBX'"):
        ColourConverter(display="sRGBX")


def test_bad_shape():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        ColourConverter().to_display(np.zeros((4, 4), np.float32))


def test_explicit_and_environment_config(tmp_path, monkeypatch):
    config = tmp_path / "mini.ocio"
    config.write_text(MINI_CONFIG)
    grey = np.full((4, 4, 3), 0.18, np.float32)
    colour = ColourConverter(display="g22", config=str(config))
    assert abs(colour.to_display(grey)[0, 0, 0] - 0.18 ** (1 / 2.2)) < 1e-4
    with pytest.raises(ValueError, match=r"unknown colour space 'ACEScg'.*known colour spaces: lin, g22"):
        ColourConverter(colorspace="ACEScg", config=str(config))
    with pytest.raises(ValueError, match="cannot be used"):
        ColourConverter(config=str(tmp_path / "missing.ocio"))
    monkeypatch.setenv("OCIO", str(config))
    assert ColourConverter(display="g22").config == str(config)
