"""Quick looks for review: a contact sheet of plate | alpha | comp over a checkerboard."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from mam2_server.io.colour import ColourConverter


def checkerboard(height: int, width: int, square: int = 16, levels: tuple[float, float] = (0.05, 0.25)) -> np.ndarray:
    """(H, W, 3) scene-linear grey checkerboard."""
    yy, xx = np.mgrid[0:height, 0:width]
    board = np.where(((yy // square) + (xx // square)) % 2 == 0, levels[0], levels[1]).astype(np.float32)
    return np.repeat(board[..., None], 3, axis=2)


def comp_over(linear: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Plate premultiplied by alpha over a background, in linear light (how the comp will use it)."""
    a = alpha[..., None]
    return linear * a + background * (1.0 - a)


def contact_sheet(rows: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | Path,
                  colour: ColourConverter | None = None, max_width: int = 480) -> Path:
    """Write a PNG with one row per frame: plate | alpha | comp over checkerboard.

    rows: (label, linear (H, W, 3) scene-linear plate, alpha (H, W) in [0, 1]).
    """
    if not rows:
        raise ValueError("contact sheet needs at least one frame")
    colour = colour or ColourConverter()
    tiles = []
    for label, linear, alpha in rows:
        height, width = alpha.shape
        board = checkerboard(height, width, square=max(4, width // 24))
        panels = [colour.to_display(linear),
                  np.repeat(np.clip(alpha, 0, 1)[..., None], 3, axis=2),
                  colour.to_display(comp_over(linear, alpha, board))]
        scale = min(1.0, max_width / width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        panels = [cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in panels]
        row = np.concatenate([np.pad(p, ((0, 2), (0, 2), (0, 0)), constant_values=1.0) for p in panels], axis=1)
        row = (np.clip(row, 0, 1) * 255 + 0.5).astype(np.uint8)
        for text, x in ((label, 4), ("alpha", size[0] + 6), ("comp", 2 * size[0] + 8)):
            cv2.putText(row, text, (x, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        tiles.append(row)
    width = max(t.shape[1] for t in tiles)
    sheet = np.concatenate([np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0))) for t in tiles], axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write contact sheet {path}")
    return path
