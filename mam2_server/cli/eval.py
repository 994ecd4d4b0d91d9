"""`mam2 eval`: MAD, MSE, Grad, Conn and dtSSD of alpha mattes against ground truth.

Two modes:

* ``mam2 eval --pred PATTERN --gt PATTERN``: score an alpha sequence already on disk;
* ``mam2 eval --benchmark DIR --engine mam2 --checkpoint W.safetensors --prompt mask``: run an
  engine on a benchmark in the paper's layouts (VideoMatte240K test composites
  ``<set>/<clip>/com|pha/``, YouTubeMatte ``<set>/<clip>/har|pha/``), prompted on each clip's first
  frame from its ground truth (mask, box, point or box+point, as in the paper's Table 2), and
  print a table like the paper's (per clip and the mean; ``--json`` for everything).

Scales follow the MAM2 paper and RobustVideoMatting's evaluation: MAD and MSE x1e3,
Grad and Conn /1e3, dtSSD x1e2.
"""
from __future__ import annotations

import argparse

from mam2_server.cli import CLIError
from mam2_server.eval.evaluate import evaluate_sequences, format_report, write_json
from mam2_server.eval.metrics import METRICS
from mam2_server.io.sequence import parse_frame_range


def register(subparsers: argparse._SubParsersAction) -> None:
    from mam2_server.cli.matte import add_engine_arguments
    from mam2_server.eval.benchmark import PROMPT_KINDS

    parser = subparsers.add_parser("eval", help="score alpha mattes against ground truth, or run a benchmark",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", help="predicted alpha pattern, e.g. out/alpha.####.exr")
    parser.add_argument("--gt", help="ground-truth alpha pattern")
    parser.add_argument("--frames", help="frame range (default: the frames of the ground truth)")
    parser.add_argument("--benchmark", metavar="DIR", help="benchmark folder (clips with pha/ and har/ or com/)")
    parser.add_argument("--prompt", choices=PROMPT_KINDS, default="mask",
                        help="first-frame prompt derived from the ground truth (default mask)")
    parser.add_argument("--metrics", default=",".join(METRICS),
                        help=f"comma-separated subset of {','.join(METRICS)} (default all; Conn is the slowest)")
    parser.add_argument("--save-pred", metavar="DIR", help="benchmark: also write the predicted alphas (8-bit PNG, "
                                                           "the ground truth's layout)")
    parser.add_argument("--json", help="also write the per-frame and summary figures to this JSON file")
    add_engine_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise CLIError(f"--metrics: choose from {', '.join(METRICS)} (got {args.metrics!r})")
    if args.benchmark:
        if args.pred or args.gt:
            raise CLIError("give either --benchmark or --pred/--gt")
        return _benchmark(args, metrics)
    if not (args.pred and args.gt):
        raise CLIError("give --pred and --gt (an alpha sequence and its ground truth), or --benchmark DIR")
    frames = parse_frame_range(args.frames) if args.frames else None
    report = evaluate_sequences(args.pred, args.gt, frames=frames, metrics=metrics)
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
    return 0


def _benchmark(args: argparse.Namespace, metrics: list[str]) -> int:
    from mam2_server.cli.matte import engine_config
    from mam2_server.engines import create_engine
    from mam2_server.eval.benchmark import evaluate_benchmark, find_clips, format_benchmark

    clips = find_clips(args.benchmark)  # a wrong layout fails before any model is loaded
    engine = create_engine(engine_config(args))
    report = evaluate_benchmark(args.benchmark, engine, prompt=args.prompt, metrics=metrics, clips=clips,
                                save_dir=args.save_pred)
    print(format_benchmark(report))
    if args.json:
        write_json(report, args.json)
    return 0
