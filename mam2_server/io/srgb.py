"""The sRGB transfer curve (IEC 61966-2-1) as plain numpy, for 8-bit photographs and network inputs.

Plates go through OCIO (`ColourConverter`), which knows every colour space; these two curves are
for the many small arrays where only sRGB occurs and a processor per call would cost more than
the pixels: dataset images, synthetic backgrounds, a grey image for feature matching.
tests/test_data_mix.py checks them against OCIO's sRGB.
"""
from __future__ import annotations

import numpy as np

__all__ = ["srgb_to_linear", "linear_to_srgb"]

_CODES = np.arange(256) / 255.0
_LUT = np.where(_CODES <= 0.04045, _CODES / 12.92, ((_CODES + 0.055) / 1.055) ** 2.4).astype(np.float32)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values (uint8 codes, or floats where 1.0 is white) -> linear float32.

    Floats are not clipped: below 0 the linear segment continues, above 1 the power curve."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return _LUT[x]
    x = x.astype(np.float32, copy=False)
    return np.where(x <= 0.04045, x / 12.92, ((np.maximum(x, 0.04045) + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear values -> sRGB-encoded float32 in [0, 1], clipped: for images shown to a network or a detector,
    never for plates written back (those keep their range)."""
    x = np.clip(np.asarray(x, np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(np.maximum(x, 0.0031308), 1 / 2.4) - 0.055
                    ).astype(np.float32)
