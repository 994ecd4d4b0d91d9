"""`mam2 batch MANIFEST`: matte every shot of a JSON manifest, for render farms.

Farm use: `--chunk I/N` runs the I-th of N slices of the shots (every N-th shot from the
I-th, after --only), so N tasks with --chunk 1/N .. N/N cover the manifest exactly once;
`--openjd DIR` writes an Open Job Description job bundle instead (one task per shot or
chunk; Deadline Cloud and other farms run it), and `--ray ADDRESS` runs the shots as tasks
on a Ray cluster (`local` starts one on this machine). docs/farm.md has the recipes.
Exit code: 0 when every shot is done or skipped, 1 when any shot failed (the others still
run), 2 for a manifest that cannot be run (every problem is listed, nothing runs), 130 on
Ctrl-C or SIGTERM (the first one stops after the frame being written, or cancels the Ray
tasks; finished frames are kept).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mam2_server import batch
from mam2_server.batch import openjd
from mam2_server.cli import CLIError
from mam2_server.engines import DEFAULT_ENGINE, available_engines
from mam2_server.io.sequence import format_frame_range, parse_frame_range


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("batch", help="matte every shot of a JSON manifest (render farms)",
                                   description=f"{__doc__}\n{batch.__doc__}",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", help="JSON manifest of shots (schema above)")
    parser.add_argument("--only", help="comma-separated shot names to run (default: all)")
    parser.add_argument("--chunk", help="I/N: run the I-th of N slices of the shots (farm tasks)")
    parser.add_argument("--frames", help="write only these frames of the selected shots, e.g. 1001-1050 (a farm "
                                         "task's chunk); they are tracked from their keyframes as in a whole run")
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
    scale = parser.add_argument_group("farms and clusters")
    where = scale.add_mutually_exclusive_group()
    where.add_argument("--ray", metavar="ADDRESS",
                       help="run the shots as tasks on a Ray cluster: auto (the cluster this machine belongs "
                            "to), HOST:PORT, ray://HOST:PORT, or local (start one here)")
    where.add_argument("--openjd", metavar="DIR",
                       help="write an Open Job Description job bundle (template.json, parameter_values.json) "
                            "to DIR instead of running anything")
    scale.add_argument("--chunk-frames", type=_count, default=0, metavar="N",
                       help="split shots into chunks of up to N frames, only where the engine allows it "
                            "(between passes; a chained engine only before its first keyframe); default 0: "
                            "one task per shot")
    scale.add_argument("--cpus-per-shot", type=_amount, default=1.0, metavar="N",
                       help="CPUs each task declares (default 1)")
    scale.add_argument("--gpus-per-shot", type=_amount, metavar="N",
                       help="GPUs each task declares (default: 1 for the mam2/hybrid engines when the cluster "
                            "has GPUs, else 0)")
    scale.add_argument("--max-retries", type=_count, default=3, metavar="N",
                       help="Ray: re-run a task whose worker or node died up to N times (default 3); "
                            "a retry writes only the frames still missing")
    parser.set_defaults(func=run)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"a whole number >= 0, got {text!r}")
    return int(text)


def _amount(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"a number >= 0, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    chunk = batch.parse_chunk(args.chunk) if args.chunk else None
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    if args.only is not None and not only:
        raise CLIError("--only needs shot names, e.g. --only sh010,sh020")
    manifest = batch.load_manifest(args.manifest, engine=args.engine, checkpoint=args.checkpoint,
                                   device=args.device)
    shots = batch.select_shots(manifest.shots, only=only, chunk=chunk)
    part = parse_frame_range(args.frames) if args.frames else None
    scale_options = {"--chunk-frames": args.chunk_frames != 0, "--cpus-per-shot": args.cpus_per_shot != 1.0,
                     "--gpus-per-shot": args.gpus_per_shot is not None, "--max-retries": args.max_retries != 3}
    unused = [name for name, given in scale_options.items() if given and not (args.ray or args.openjd)]
    if unused:
        raise CLIError(f"{', '.join(unused)}: only with --ray or --openjd (one machine runs one shot at a time)")
    if args.openjd and args.frames:
        raise CLIError("--frames: a job bundle has every frame of its shots; its tasks use --frames themselves")
    if args.openjd and args.chunk:
        raise CLIError("--chunk: a job bundle has every shot (of --only, if given); the farm runs them as tasks")
    if args.openjd and not args.check:
        options = openjd.task_options(engine=args.engine, checkpoint=args.checkpoint, device=args.device,
                                      resume=args.resume)  # each task loads the manifest as it was here
        template = openjd.write_bundle(manifest, shots, args.openjd, chunk_frames=args.chunk_frames,
                                       cpus=args.cpus_per_shot, gpus=args.gpus_per_shot, options=options)
        print(f"mam2 batch: wrote the job bundle {template.parent} ({template.name}, parameter_values.json); "
              f"check it with `openjd check {template}`")
        return 0
    # for a bundle, as the bundle is checked: the farm may mount weights and folders this machine has not
    problems = [f"shot {s.name}: {p}" for s in shots for p in batch.check_shot(s, part, here=not args.openjd)]
    for problem in problems:  # all of them before any work; these shots fail, the others run
        print(f"mam2 batch: {problem}", file=sys.stderr)
    for shot in shots:  # not a problem, but rarely meant: a render that failed to write some frames
        if gaps := batch.sequence_gaps(shot):
            print(f"mam2 batch: shot {shot.name}: warning: no plates for frames {format_frame_range(gaps)} inside "
                  f"its span; they are skipped (give the shot \"frames\" to make that an error)", file=sys.stderr)
    if args.check:
        print(f"mam2 batch: {len(shots)} shots checked, {len(problems)} problem(s)")
        return 2 if problems else 0
    if not shots:
        print(f"mam2 batch: no shots in this selection (chunk {args.chunk} of {len(manifest.shots)} shots)")
        return 0
    if args.jobs_log:  # refused now, not after the first shot's work
        try:
            Path(args.jobs_log).parent.mkdir(parents=True, exist_ok=True)
            with open(args.jobs_log, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise CLIError(f"--jobs-log {args.jobs_log}: cannot append to it ({exc.strerror or exc})") from None
    if args.ray:
        from mam2_server.batch.ray_runner import RayBatchError, run_batch_on_ray
        try:
            report = run_batch_on_ray(shots, address=args.ray, resume=args.resume, progress=not args.quiet,
                                      jobs_log=args.jobs_log, cpus_per_shot=args.cpus_per_shot,
                                      gpus_per_shot=args.gpus_per_shot, chunk_frames=args.chunk_frames,
                                      max_retries=args.max_retries, part=part)
        except RayBatchError as exc:
            raise CLIError(str(exc)) from None
    else:
        report = batch.run_batch(shots, resume=args.resume, progress=not args.quiet, jobs_log=args.jobs_log,
                                 part=part)
    print(f"mam2 batch: {report.summary()}", file=sys.stderr if report.exit_code else sys.stdout)
    return report.exit_code
