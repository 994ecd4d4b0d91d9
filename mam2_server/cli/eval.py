"""`mam2 eval --pred PATTERN --gt PATTERN`: MAD, MSE, Grad, Conn and dtSSD of an alpha sequence.

Scales follow the MAM2 paper and RobustVideoMatting's evaluation: MAD and MSE x1e3,
Grad and Conn /1e3, dtSSD x1e2.
"""
from __future__ import annotations

import argparse

from mam2_server.eval.evaluate import evaluate_sequences, format_report, write_json
from mam2_server.io.sequence import parse_frame_range


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="compare an alpha sequence with ground truth", description=__doc__)
    parser.add_argument("--pred", required=True, help="predicted alpha pattern, e.g. out/alpha.####.exr")
    parser.add_argument("--gt", required=True, help="ground-truth alpha pattern")
    parser.add_argument("--frames", help="frame range (default: the frames of the ground truth)")
    parser.add_argument("--json", help="also write the per-frame and summary figures to this JSON file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    frames = parse_frame_range(args.frames) if args.frames else None
    report = evaluate_sequences(args.pred, args.gt, frames=frames)
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
    return 0
