"""`mam2 synth OUTDIR`: synthetic shots with exact ground-truth alpha.

Each clip is written as OUTDIR/<kind>_<seed>/plate/plate.####.exr (scene-linear RGB),
alpha/alpha.####.exr (ground truth), prompts.json (a box and a point on the first frame)
and clip.json; under a condition other than standard as OUTDIR/<kind>_<condition>_<seed>/.
Conditions (`mam2_server.synth.conditions`): standard, static (locked-off, the foreground frozen),
srgb (composited on display-encoded values), large (the foreground magnified 1.8x), camouflage
(the object in its background's colours), parallax (a midground layer passing in front),
still (one frame).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from mam2_server.synth import CONDITIONS, KINDS, make_clip, write_clip


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
    parser.add_argument("--conditions", default="standard",
                        help=f"comma-separated shooting conditions, from: {', '.join(CONDITIONS)} (default standard)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown kind(s) {unknown}; known: {', '.join(KINDS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.frames < 1:
        raise ValueError("--frames must be at least 1")
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; known: {', '.join(CONDITIONS)}")
    width, height = args.size
    for condition in conditions:
        for kind in kinds:
            for seed in seeds:
                clip = make_clip(kind, num_frames=args.frames, width=width, height=height, seed=seed,
                                 camera=args.camera, condition=condition)
                name = f"{kind}_{seed}" if condition == "standard" else f"{kind}_{condition}_{seed}"
                paths = write_clip(clip, Path(args.outdir) / name)
                print(f"{name:20s}: {paths.plates}  gt {paths.alphas}  prompts {paths.prompts}")
    return 0
