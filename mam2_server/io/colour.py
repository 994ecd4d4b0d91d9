"""Scene-linear plate <-> display-encoded copy for networks, through OCIO (inside OIIO).

The config is `config` when given, else ``$OCIO``, else OIIO's built-in OCIO
config (27 spaces: ACEScg, "sRGB Encoded Rec.709 (sRGB)", ...). Note that in the
built-in config the *role* ``scene_linear`` is ACEScg, while ``linear`` /
``lin_rec709`` are Rec.709-primaries linear: grey is the same in both (0.18 ->
0.4614 sRGB) but saturated colours are not, so pass the plate's real space.

Cost (measured 2026-11-25, 2 shared CPU cores, OIIO 3.2.2 built-in config,
1920x1080x3 float32 noise): `to_display` ~100-160 ms per frame = numpy -> ImageBuf
copy ~30 ms (the binding's set_pixels is slow) + colorconvert ~55 ms + get_pixels
~5-10 ms + clip ~3 ms; `from_display` about the same; the very first conversion
~0.2-0.3 s more (OCIO builds the processor); an explicit config file ~+20 ms per
call. The Python binding exposes no ColorProcessor object, but OIIO caches
processors per (config, from, to) internally, which is what makes later calls
cheap. Building a ColourConverter (parsing the config) costs ~20 ms: make one per shot.
"""
from __future__ import annotations

import os

import numpy as np
import OpenImageIO as oiio

__all__ = ["ColourConverter", "SRGB_NAMES"]

# The sRGB-encoded Rec.709 space under the names configs give it: OCIO 2 ACES studio/CG configs and
# OIIO's built-in config (srgb_tx, "sRGB - Texture"), ACES 1.x ("Utility - sRGB - Texture"), the
# built-in config's full name, Nuke's nuke-default config ("sRGB").
SRGB_NAMES = ("srgb_tx", "sRGB - Texture", "Utility - sRGB - Texture", "sRGB Encoded Rec.709 (sRGB)", "sRGB")
_FLOAT_TYPES = ("half", "float", "double")


class ColourConverter:
    """Converts (H, W, 3) float32 between a plate colour space and a display encoding.

    colorspace: the plate's space (a colour space, alias or role name of the config);
        None -> the default, which `for_pixel_type` makes per file type like Nuke does: integer
        files (8/16-bit PNG, JPEG, TIFF, DPX) are sRGB-encoded, float files scene-linear: the
        config's ``scene_linear`` role with a studio config ($OCIO or `config`), else
        Rec.709-primaries linear (``lin_rec709``), Nuke's default working space.
    display: the encoding networks see (default "sRGB" = sRGB-encoded Rec.709).
    config: an OCIO config path (or ``ocio://...`` name); None -> $OCIO or built-in.
    """

    def __init__(self, colorspace: str | None = None, display: str = "sRGB", config: str | None = None) -> None:
        self.config = config or os.environ.get("OCIO") or None
        self.explicit = colorspace is not None  # given by the user: no per-file default applies
        if colorspace is None:
            # The built-in config's scene_linear role is ACEScg, which would skew Rec.709 plates.
            colorspace = "scene_linear" if self.config else "lin_rec709"
        self.colorspace = colorspace
        self.display_space = display
        # what the engines call linear: the working space of the config
        self.linear_space = "scene_linear" if self.config else "lin_rec709"
        # Named explicitly (even from $OCIO) so a later change of $OCIO cannot switch configs under us;
        # "" = OIIO's built-in config.
        self._config_arg = self.config or ""
        cfg = oiio.ColorConfig(self._config_arg)
        error = cfg.geterror()
        if error:
            raise ValueError(f"OCIO config {self.config!r} cannot be used: {error}")
        self.config_name = cfg.configname()
        # plates in a linear (or data) space are used as they are; others are converted for the engines
        self.is_linear = bool(cfg.isColorSpaceLinear(colorspace) or cfg.isData(colorspace))
        for what, name in (("colour space", colorspace), ("display colour space", display)):
            if cfg.getColorSpaceIndex(name) < 0:
                known = ", ".join(cfg.getColorSpaceNames())
                roles = ", ".join(cfg.getRoles())
                raise ValueError(f"unknown {what} {name!r} in OCIO config {self.config_name!r}; "
                                 f"known colour spaces: {known}; roles: {roles}")

    def for_pixel_type(self, pixel_type: str) -> "ColourConverter":
        """The converter for plates stored as `pixel_type` ('uint8', 'uint16', 'half', 'float', ...):
        itself for float files or an explicit colour space, else one from the sRGB-encoded space."""
        if self.explicit or pixel_type in _FLOAT_TYPES:
            return self
        cfg = oiio.ColorConfig(self._config_arg)
        for name in SRGB_NAMES:
            if cfg.getColorSpaceIndex(name) >= 0:
                return ColourConverter(name, self.display_space, self.config)
        raise ValueError(f"{pixel_type} plates are sRGB-encoded by default, but OCIO config {self.config_name!r} has "
                         f"none of the usual sRGB names ({', '.join(SRGB_NAMES)}): give the plates' colour space "
                         "(--colorspace)")

    def __repr__(self) -> str:
        return (f"ColourConverter(colorspace={self.colorspace!r}, display={self.display_space!r}, "
                f"config={self.config!r})")

    def _convert(self, pixels: np.ndarray, src: str, dst: str) -> np.ndarray:
        arr = np.asarray(pixels, dtype=np.float32)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {arr.shape}")
        buf = oiio.ImageBuf(np.ascontiguousarray(arr))
        # unpremult=False: these are RGB-only images, there is no alpha to divide by.
        out = oiio.ImageBufAlgo.colorconvert(buf, src, dst, False, "", "", self._config_arg)
        if out.has_error:
            raise RuntimeError(f"colour conversion {src!r} -> {dst!r} failed: {out.geterror()}")
        return np.asarray(out.get_pixels(oiio.FLOAT), np.float32).reshape(arr.shape)

    def to_display(self, linear: np.ndarray) -> np.ndarray:
        """(H, W, 3) in the plate's colour space (`colorspace`: scene-linear, or display-encoded for
        integer files) -> (H, W, 3) float32 display-encoded, clipped to [0, 1].

        The clip is fine because this copy only feeds networks and colour models;
        the linear plate itself is never clipped.
        """
        out = self._convert(linear, self.colorspace, self.display_space)
        np.clip(out, 0.0, 1.0, out=out)
        out[np.isnan(out)] = 0.0  # e.g. a power curve of a negative value
        return out

    def to_linear(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, 3) plate values -> scene-linear for the engines: unchanged for a linear plate, decoded
        (e.g. sRGB -> linear Rec.709) for a display-encoded one. Never clipped."""
        if self.is_linear:
            return np.asarray(pixels, np.float32)
        return self._convert(pixels, self.colorspace, self.linear_space)

    def from_display(self, display: np.ndarray) -> np.ndarray:
        """(H, W, 3) display-encoded -> (H, W, 3) float32 scene-linear (for synthetic data)."""
        return self._convert(display, self.display_space, self.colorspace)
