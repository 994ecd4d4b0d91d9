"""`mam2 synth OUTDIR`: synthetic shots with exact ground-truth alpha.

Each clip is written as OUTDIR/<kind>_<seed>/plate/plate.####.exr (scene-linear RGB),
alpha/alpha.####.exr (ground truth), prompts.json (a box and a point on the first frame)
and clip.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from mam2_server.synth import KINDS, make_clip, write_clip


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size is WIDTHxHEIGHT, e.g. 256x144, got {text!r}") from None
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16x16, got {text!r}")
    return width, height


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("synth", help="write synthetic clips with ground truth", description=__doc__)
    parser.add_argument("outdir", help="folder to write the clips into")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, from: {', '.join(KINDS)}")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    parser.add_argument("--size", type=parse_size, default=(256, 144), help="WIDTHxHEIGHT (default 256x144)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; one clip per kind and seed")
    parser.add_argument("--camera", choices=("moving", "locked"), default="moving")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown kind(s) {unknown}; known: {', '.join(KINDS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.frames < 1:
        raise ValueError("--frames must be at least 1")
    width, height = args.size
    for kind in kinds:
        for seed in seeds:
            clip = make_clip(kind, num_frames=args.frames, width=width, height=height, seed=seed, camera=args.camera)
            paths = write_clip(clip, Path(args.outdir) / f"{kind}_{seed}")
            print(f"{kind:8s} seed {seed}: {paths.plates}  gt {paths.alphas}  prompts {paths.prompts}")
    return 0
