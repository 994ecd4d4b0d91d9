"""`mam2 matte INPUT -o OUTPUT`: alpha for every frame of a plate sequence from prompts on keyframes.

INPUT and OUTPUT are sequence patterns (plate.####.exr, plate.%04d.exr, plate.@@@@.exr).
Coordinates are pixels of the full image, origin top-left; point labels: 1 = foreground,
0 = background. A mask (--mask, the roto workflow) is any image OpenImageIO reads, over the
plate's full frame; its A channel (else its first channel) > 0.5 marks the object. Prompts on
several keyframes come from --prompts (JSON list of {"frame": N, "box": [x0, y0, x1, y1],
"points": [[x, y, label], ...], "mask": "path"}, mask paths relative to the JSON file);
--box/--point/--mask add or replace the prompt on --prompt-frame (default: the first frame).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mam2_server.cli import CLIError
from mam2_server.engines import DEFAULT_ENGINE, EngineConfig, available_engines, create_engine
from mam2_server.io.colour import ColourConverter
from mam2_server.io.atomic import unwritable_folder
from mam2_server.io.sequence import SequencePattern, format_frame_range, holes, parse_frame_range
from mam2_server.io.source import ALPHA_SUFFIXES, RGBA_SUFFIXES, SequenceSource
from mam2_server.prompts import Point, Prompt, keyframes, load_mask, load_prompts
from mam2_server.shot import matte_shot


def _floats(text: str, count: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} takes comma-separated numbers, got {text!r}") from None
    if len(values) not in count:
        raise argparse.ArgumentTypeError(f"{what} takes {' or '.join(map(str, count))} numbers, got {text!r}")
    return values


def parse_box(text: str) -> tuple[float, float, float, float]:
    return tuple(_floats(text, (4,), "--box x0,y0,x1,y1"))


def parse_point(text: str) -> Point:
    values = _floats(text, (2, 3), "--point x,y[,label]")
    label = int(values[2]) if len(values) == 3 else 1
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"--point label is 1 (foreground) or 0 (background), got {label}")
    return Point(values[0], values[1], label)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", default=DEFAULT_ENGINE,
                        help=f"engine: {', '.join(available_engines())} (default: {DEFAULT_ENGINE})")
    parser.add_argument("--checkpoint", help="weights for the mam2/hybrid engines")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: CUDA when present, else CPU)")


def engine_config(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(name=args.engine, checkpoint=args.checkpoint, device=args.device)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("matte", help="matte a plate sequence", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="plate sequence pattern, e.g. shot/plate.####.exr")
    parser.add_argument("-o", "--output", required=True, help="alpha sequence pattern (.exr: half 'A'; .png: 16-bit)")
    parser.add_argument("--frames", help="frame range, e.g. 1001-1100 (default: every frame found)")
    parser.add_argument("--box", type=parse_box, help="x0,y0,x1,y1 around the object")
    parser.add_argument("--point", type=parse_point, action="append", default=[], help="x,y[,label]; repeatable")
    parser.add_argument("--mask", help="mask image of the object (A channel, else the first; > 0.5 is the object)")
    parser.add_argument("--prompt-frame", type=int, help="frame of --box/--point/--mask (default: first frame)")
    parser.add_argument("--prompts", help="JSON file with prompts on one or more keyframes")
    parser.add_argument("--colorspace",
                        help="the plates' colour space in the OCIO config ($OCIO, else OIIO's built-in config); "
                             "default for float files (EXR): the scene_linear role with $OCIO, else lin_rec709; "
                             "for 8/16-bit integer files (PNG, JPEG, TIFF, DPX): sRGB, as Nuke's Read does")
    parser.add_argument("--rgba", help="also write premultiplied RGBA to this sequence pattern (.exr): the "
                                       "foreground's colour unmixed from the background, times alpha, scene-linear "
                                       "(an sRGB plate is decoded first; command line only: the server returns alpha)")
    add_engine_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def collect_prompts(args: argparse.Namespace, first_frame: int) -> list[Prompt]:
    prompts = load_prompts(args.prompts) if args.prompts else []
    if args.box is not None or args.point or args.mask:
        frame = first_frame if args.prompt_frame is None else args.prompt_frame
        mask = load_mask(args.mask) if args.mask else None
        mask_path = str(Path(args.mask).resolve()) if args.mask else None  # as prompt JSON files store it
        prompts.append(Prompt(frame=frame, box=args.box, points=tuple(args.point), mask=mask, mask_path=mask_path))
    elif args.prompt_frame is not None:
        raise CLIError("--prompt-frame needs --box, --point or --mask")
    if not prompts:
        raise CLIError("no prompt: give --box, --point, --mask or --prompts")
    return list(keyframes(prompts).values())


def check_outputs(args: argparse.Namespace) -> None:
    plates = SequencePattern(args.input).files_key()
    for flag, value in (("-o", args.output), ("--rgba", args.rgba)):
        if value and SequencePattern(value).files_key() == plates:
            raise CLIError(f"{flag} {value} is the input {args.input}: it would overwrite the plates")
        if value and (why := unwritable_folder(SequencePattern(value).directory)):
            raise CLIError(f"{flag} {value}: {why}")
    suffix = SequencePattern(args.output).path(1).suffix.lower()
    if suffix not in ALPHA_SUFFIXES:  # as a batch manifest: a matte in 8-bit or lossy formats loses its edges
        raise CLIError(f"-o {args.output}: mattes are written as .exr (half-float A) or .png (16-bit), not {suffix}")
    if not args.rgba:
        return
    rgba, alpha = SequencePattern(args.rgba), SequencePattern(args.output)
    if rgba.path(1).suffix.lower() not in RGBA_SUFFIXES:
        raise CLIError(f"--rgba {args.rgba}: premultiplied scene-linear RGBA needs an .exr pattern")
    if rgba.path(1).resolve() == alpha.path(1).resolve():
        raise CLIError(f"--rgba {args.rgba} is the alpha output -o {args.output}: give them different names")


def run(args: argparse.Namespace) -> int:
    check_outputs(args)  # before anything is read or loaded
    pattern = SequencePattern(args.input)
    frames = parse_frame_range(args.frames) if args.frames else None
    source = SequenceSource(pattern, frames=frames, colour=ColourConverter(colorspace=args.colorspace))
    if frames is None and (gaps := holes(source.frames)):
        print(f"mam2: warning: no plates for frames {format_frame_range(gaps)} inside the sequence; they are "
              "skipped (give --frames to make that an error)", file=sys.stderr)
    prompts = collect_prompts(args, source.frames[0])
    engine = create_engine(engine_config(args))
    report = matte_shot(source, prompts, engine, args.output, progress=not args.quiet, rgba=args.rgba)
    also = f" and {args.rgba}" if args.rgba else ""
    print(f"mam2: {len(report.written)} frames ({format_frame_range(report.written)}) -> {args.output}{also} "
          f"[{engine.name}, {report.seconds_per_frame:.2f} s/frame]")
    return 0
