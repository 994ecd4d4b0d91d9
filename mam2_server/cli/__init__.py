"""The `mam2` command line: one module per subcommand, each with `register(subparsers)`.

A subcommand module adds its parser and sets `func=run`, where `run(args) -> int`
is the exit code. User errors are raised as `CLIError` (or the library's own
ValueError/OSError subclasses) and printed to stderr without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mam2_server import __version__

SUBCOMMANDS = ("matte", "batch", "eval", "synth", "demo", "serve", "keys", "bench", "train", "package")


class CLIError(Exception):
    """A user error: printed as `mam2: error: ...`, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mam2", description="MAM2: promptable video matting for compositing.")
    parser.add_argument("--version", action="version", version=f"mam2 {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"mam2_server.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mam2_server.cli.{name}":
                continue  # subcommand not part of this installation
            raise
        module.register(subparsers)
    _verbose_after_subcommands(parser)
    return parser


def _verbose_after_subcommands(parser: argparse.ArgumentParser) -> None:
    """`mam2 matte ... -v` as well as `mam2 -v matte ...`: every subcommand (and theirs) takes -v too,
    defaulting to nothing so that a -v before the subcommand still counts."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                                 help="more log output (-vv for debug)")
                _verbose_after_subcommands(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("mam2: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, OSError, RuntimeError) as exc:
        if args.verbose >= 2:
            raise
        print(f"mam2: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (CLIError, ValueError)) else 1


if __name__ == "__main__":
    sys.exit(main())
