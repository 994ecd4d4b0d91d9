"""`mam2 demo`: make a small synthetic shot, matte it from a box on its first frame, and score it.

Writes OUT/shot/plate/plate.####.exr (scene-linear plates), OUT/alpha/alpha.####.exr
(the matte), OUT/contact_sheet.png (plate | alpha | comp over a checkerboard) and
prints MAD, MSE, Grad, Conn and dtSSD against the exact ground truth.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mam2_server.cli.matte import add_engine_arguments, engine_config
from mam2_server.cli.synth import parse_size
from mam2_server.engines import create_engine
from mam2_server.eval.evaluate import evaluate_sequences, format_report, read_alpha, write_json
from mam2_server.eval.metrics import mad
from mam2_server.io.source import SequenceSource
from mam2_server.io.sequence import SequencePattern
from mam2_server.prompts import Prompt
from mam2_server.review import contact_sheet
from mam2_server.shot import matte_shot
from mam2_server.synth import KINDS, make_clip, write_clip


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="matte a synthetic shot and print its metrics", description=__doc__)
    parser.add_argument("--out", default="mam2_demo", help="output folder (default: ./mam2_demo)")
    parser.add_argument("--kind", choices=KINDS, default="hair", help="what the synthetic foreground is")
    parser.add_argument("--frames", type=int, default=12, help="number of frames (default 12)")
    parser.add_argument("--size", type=parse_size, default=(480, 270), help="WIDTHxHEIGHT (default 480x270)")
    parser.add_argument("--seed", type=int, default=0)
    add_engine_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    width, height = args.size
    clip = make_clip(args.kind, num_frames=args.frames, width=width, height=height, seed=args.seed)
    paths = write_clip(clip, out / "shot")
    print(f"mam2 demo: {args.kind} shot, {len(clip.frames)} frames {width}x{height} -> {paths.plates}")

    source = SequenceSource(SequencePattern(paths.plates))
    prompt = Prompt(frame=clip.frames[0], box=clip.prompt.box)
    print(f"mam2 demo: box prompt {tuple(round(v) for v in prompt.box)} on frame {prompt.frame}")
    engine = create_engine(engine_config(args))
    alphas = str(out / "alpha" / "alpha.####.exr")
    report = matte_shot(source, [prompt], engine, alphas)
    print(f"mam2 demo: {engine.name} engine, {report.seconds_per_frame:.2f} s/frame -> {alphas}")

    picks = sorted({clip.frames[i] for i in (0, len(clip.frames) // 3, 2 * len(clip.frames) // 3, -1)})
    rows = [(f"frame {f}", source.linear(f), read_alpha(SequencePattern(alphas).path(f))) for f in picks]
    sheet = contact_sheet(rows, out / "contact_sheet.png")
    print(f"mam2 demo: contact sheet -> {sheet}")

    metrics = evaluate_sequences(alphas, paths.alphas)
    write_json(metrics, out / "metrics.json")
    print(format_report(metrics))
    # An all-zero matte is the floor a matte must beat: soft objects make it deceptively good.
    gt_pattern = SequencePattern(paths.alphas)
    zero_mad = np.mean([mad(np.zeros_like(gt), gt) for gt in (read_alpha(gt_pattern.path(f)) for f in clip.frames)])
    print(f"for reference, an all-zero matte scores MAD {zero_mad:.3f}")
    return 0
