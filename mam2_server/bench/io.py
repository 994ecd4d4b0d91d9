"""`mam2 bench io`: per-frame cost of reading, writing, encoding and colour-converting plates, and of
the premultiplied RGBA output (`mam2 matte --rgba`: foreground estimation + write)."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from mam2_server.eval.metrics import format_table
from mam2_server.io.colour import ColourConverter
from mam2_server.io.image import decode_image, encode_image, read_image, read_info, write_alpha, write_image
from mam2_server.stages.matte.foreground import premultiplied_rgba


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT (default 1920x1080)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per operation (median reported)")


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm caches (OCIO processors, allocations)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def run(args: argparse.Namespace) -> int:
    width, height = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(0)
    # Smooth content with film-like noise: compresses like a real plate, not like pure noise.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    plate = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin(xx / 37.0)], axis=2) * 2.0
    plate += rng.normal(0, 0.01, plate.shape).astype(np.float32)
    alpha = np.clip(xx / width, 0, 1)
    colour = ColourConverter()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        exr, matte = Path(tmp) / "plate.exr", Path(tmp) / "alpha.exr"
        data = encode_image(plate, channels=("R", "G", "B"))
        ops = {
            "write_image RGB half ZIP": lambda: write_image(exr, plate, channels=("R", "G", "B")),
            "read_image RGB half ZIP": lambda: read_image(exr),
            "read_info (header)": lambda: read_info(exr),
            "write_alpha A half ZIP": lambda: write_alpha(matte, alpha),
            "encode_image (EXR bytes)": lambda: encode_image(plate, channels=("R", "G", "B")),
            "decode_image (EXR bytes)": lambda: decode_image(data),
            "to_display (OCIO -> sRGB)": lambda: colour.to_display(plate),
            "premultiplied_rgba (pymatting foreground)": lambda: premultiplied_rgba(plate, alpha),
        }
        for name, fn in ops.items():
            rows[name] = {"ms/frame": _median_ms(fn, args.repeat)}
    print(f"I/O at {width}x{height}, median of {args.repeat} runs")
    print(format_table(rows, ["ms/frame"], precision=1, name_header="operation"))
    return 0
