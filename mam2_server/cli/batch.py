"""`mam2 batch MANIFEST`: matte every shot of a JSON manifest, for render farms.

Farm use: `--chunk I/N` runs the I-th of N slices of the shots (every N-th shot from the
I-th, after --only), so N tasks with --chunk 1/N .. N/N cover the manifest exactly once.
Exit code: 0 when every shot is done or skipped, 1 when any shot failed (the others still
run), 2 for a manifest that cannot be run (every problem is listed, nothing runs), 130 on
Ctrl-C (the first one stops after the frame being written; finished frames are kept).
"""
from __future__ import annotations

import argparse
import sys

from mam2_server import batch
from mam2_server.cli import CLIError
from mam2_server.engines import DEFAULT_ENGINE, available_engines


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("batch", help="matte every shot of a JSON manifest (render farms)",
                                   description=f"{__doc__}\n{batch.__doc__}",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", help="JSON manifest of shots (schema above)")
    parser.add_argument("--only", help="comma-separated shot names to run (default: all)")
    parser.add_argument("--chunk", help="I/N: run the I-th of N slices of the shots (farm tasks)")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="skip finished shots and write only the missing frames of partly done ones "
                             "(default: on; --no-resume recomputes and overwrites every frame)")
    parser.add_argument("--check", action="store_true",
                        help="only validate the manifest and the selected shots' plates and prompts, run nothing")
    parser.add_argument("--engine", help=f"engine for shots that name none in the manifest: "
                                         f"{', '.join(available_engines())} (default: {DEFAULT_ENGINE})")
    parser.add_argument("--checkpoint", help="weights for the mam2/hybrid engines, unless the manifest gives them")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: the manifest's, else CUDA when present)")
    parser.add_argument("--jobs-log", help="append one JSON record per shot to this file (JSON lines)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    chunk = batch.parse_chunk(args.chunk) if args.chunk else None
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    if args.only is not None and not only:
        raise CLIError("--only needs shot names, e.g. --only sh010,sh020")
    manifest = batch.load_manifest(args.manifest, engine=args.engine, checkpoint=args.checkpoint,
                                   device=args.device)
    shots = batch.select_shots(manifest.shots, only=only, chunk=chunk)
    problems = [f"shot {s.name}: {p}" for s in shots for p in batch.check_shot(s)]
    for problem in problems:  # all of them before any work; these shots fail, the others run
        print(f"mam2 batch: {problem}", file=sys.stderr)
    if args.check:
        print(f"mam2 batch: {len(shots)} shots checked, {len(problems)} problem(s)")
        return 2 if problems else 0
    if not shots:
        print(f"mam2 batch: no shots in this selection (chunk {args.chunk} of {len(manifest.shots)} shots)")
        return 0
    report = batch.run_batch(shots, resume=args.resume, progress=not args.quiet, jobs_log=args.jobs_log)
    print(f"mam2 batch: {report.summary()}", file=sys.stderr if report.exit_code else sys.stdout)
    return report.exit_code
