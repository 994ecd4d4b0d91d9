"""`mam2 bench stills DIR`: the engines on still photographs with ground-truth alpha (one frame each).

DIR holds one folder per image in the alphamatting.com layout: `NAME/image.png` (8-bit sRGB),
`NAME/alpha.png` (ground truth; first channel) and optionally `NAME/trimap.png` (a user trimap:
0 / 128 / 255). Nothing is bundled: point it at a folder you have. Each image is decoded to
scene-linear light (what the engines get from a plate) and prompted like a user would:

* `box`: the box of ground-truth alpha > 0.02, padded by 3 % of the image's long side;
* `mask`: ground-truth alpha > 0.5, eroded 2 px (a good SAM2 mask, what `hybrid` hands the
  trimap and matte stages).

Beside the engines it scores three references: `mask` (the mask prompt itself as the matte),
`zero` (an all-zero matte) and, where a trimap exists, `trimap-cf` (closed-form matting with the
user's trimap: what a hand-drawn trimap buys). MAD, MSE x1e3, Grad, Conn /1e3 per image and mean.

    mam2 bench stills ../shared/data/real-stills --prompt mask --engines baseline,classic
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from mam2_server.bench.engines import PROMPT_KINDS

METRIC_NAMES = ("MAD", "MSE", "Grad", "Conn")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, help="folder of NAME/image.png + NAME/alpha.png [+ NAME/trimap.png]")
    parser.add_argument("--engines", default="baseline,classic", help="comma-separated engine names")
    parser.add_argument("--prompt", choices=PROMPT_KINDS, default="box", help="how each image is prompted")
    parser.add_argument("--only", help="comma-separated image folder names (default: all)")
    parser.add_argument("--max-side", type=int, default=0, help="downscale images whose long side is larger")
    parser.add_argument("--json", dest="json_out", help="write all numbers to this JSON file")


def load_still(folder: Path, max_side: int = 0):
    """(linear RGB (H, W, 3), gt alpha (H, W), user trimap or None) of one image folder."""
    from mam2_server.io.image import read_image
    from mam2_server.synth.background import srgb_to_linear

    def read(name: str) -> np.ndarray:
        return np.asarray(read_image(folder / name).pixels, np.float32)

    rgb = read("image.png")[..., :3]
    lin = srgb_to_linear(np.clip(rgb, 0, 1))
    gt = read("alpha.png")[..., 0]
    tri = read("trimap.png")[..., 0] if (folder / "trimap.png").exists() else None
    if max_side and max(gt.shape) > max_side:
        s = max_side / max(gt.shape)
        size = (max(1, round(gt.shape[1] * s)), max(1, round(gt.shape[0] * s)))
        lin = cv2.resize(lin, size, interpolation=cv2.INTER_AREA)
        gt = cv2.resize(gt, size, interpolation=cv2.INTER_AREA)
        tri = None if tri is None else cv2.resize(tri, size, interpolation=cv2.INTER_NEAREST)
    return lin.astype(np.float32), np.clip(gt, 0, 1).astype(np.float32), tri


def still_prompt(gt: np.ndarray, kind: str, frame: int = 1):
    """The box of alpha > 0.02 padded by 3 % of the long side, or the good-segmentation mask or the
    click of `bench.engines.make_prompt`."""
    from mam2_server.bench.engines import make_prompt
    from mam2_server.prompts import Prompt
    if kind in ("mask", "point"):
        return make_prompt(kind, frame, gt)
    ys, xs = np.nonzero(gt > 0.02)
    h, w = gt.shape
    pad = 0.03 * max(h, w)
    return Prompt(frame=frame, box=(max(0.0, xs.min() - pad), max(0.0, ys.min() - pad),
                                    min(float(w), xs.max() + 1 + pad), min(float(h), ys.max() + 1 + pad)))


def score(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    from mam2_server.eval.metrics import conn, grad, mad, mse
    return {"MAD": mad(pred, gt), "MSE": mse(pred, gt), "Grad": grad(pred, gt), "Conn": conn(pred, gt)}


def run(args: argparse.Namespace) -> int:
    from mam2_server.engines import EngineConfig, create_engine
    from mam2_server.eval.metrics import format_table
    from mam2_server.io import ArraySource
    from mam2_server.stages.matte.closed_form import solve_alpha
    from mam2_server.synth.background import linear_to_srgb

    folders = sorted(p for p in args.folder.iterdir() if (p / "image.png").exists() and (p / "alpha.png").exists())
    if args.only:
        keep = {n.strip() for n in args.only.split(",")}
        folders = [p for p in folders if p.name in keep]
    if not folders:
        raise SystemExit(f"{args.folder}: no NAME/image.png + NAME/alpha.png folders")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    built = {name: create_engine(EngineConfig(name=name)) for name in engines}
    rows = []
    for folder in folders:
        lin, gt, tri = load_still(folder, args.max_side)
        if not (gt > 0.02).any():
            print(f"{folder.name}: skipped, its alpha is empty (nothing to prompt)", flush=True)
            continue
        prompt = still_prompt(gt, args.prompt)
        row = {"image": folder.name, "zero": score(np.zeros_like(gt), gt)}
        if prompt.mask is not None:
            row["mask"] = score(prompt.mask, gt)
        if tri is not None:
            trimap = np.where(tri < 0.25, 0.0, np.where(tri > 0.75, 1.0, 0.5)).astype(np.float32)
            row["trimap-cf"] = score(solve_alpha(linear_to_srgb(lin), trimap), gt)
        for name, engine in built.items():
            t0 = time.perf_counter()
            result = next(iter(engine.run(ArraySource([lin], frames=[1]), [prompt])))
            row[name] = score(result.alpha, gt)
            row[name]["s"] = time.perf_counter() - t0
        rows.append(row)
        print(f"{folder.name}: " + "  ".join(f"{k} {v['MAD']:.1f}" for k, v in row.items() if isinstance(v, dict)),
              flush=True)
    if not rows:
        raise SystemExit(f"{args.folder}: every still's alpha is empty")
    names = list(dict.fromkeys(k for r in rows for k in r if k != "image"))  # some stills have no trimap
    table = {}
    for name in names:
        have = [r[name] for r in rows if name in r]
        table[name] = {m: float(np.mean([h[m] for h in have])) for m in METRIC_NAMES}
    print(f"\n{len(rows)} stills from {args.folder}, {args.prompt} prompt (mean)")
    print(format_table(table, columns=list(METRIC_NAMES), precision=2, name_header="engine"))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"prompt": args.prompt, "images": rows, "mean": table}, indent=2))
    return 0
