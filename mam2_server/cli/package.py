"""`mam2 package TARGET DIR`: build installable host plugin packages into DIR.

    mam2 package blender ~/dist/mam2     # extension zips: Blender > Preferences > Get Extensions > Install from Disk
    mam2 package nuke ~/nuke/mam2        # then NUKE_PATH=~/nuke/mam2 (see its README.md)

Each target is a module `mam2_server.package.<target>` with `add_arguments(parser)`
and `run(args) -> int`; `args.directory` is DIR.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

TARGETS = {
    "blender": "Blender extension zips (Blender 4.2-5.0), one per platform, wheels included",
    "nuke": "a folder for NUKE_PATH: the MAM2 node, its Python and pyzmq/msgpack for Nuke 14/15/16",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("package", help="build installable host plugin packages", description=__doc__)
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, help_text in TARGETS.items():
        module = importlib.import_module(f"mam2_server.package.{name}")
        sub = targets.add_parser(name, help=help_text, description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("directory", type=Path, metavar="DIR", help="where the packages are written")
        module.add_arguments(sub)
        sub.set_defaults(func=module.run)
