"""`mam2 package TARGET DIR`: write a host plugin folder, ready to install, with its Python wheels.

    mam2 package nuke ~/nuke/mam2       # then NUKE_PATH=~/nuke/mam2 (see its README.md)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("package", help="write a host plugin folder ready to install",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    from mam2_server.package.nuke import NUKE_PYTHONS, PLATFORMS
    nuke = targets.add_parser("nuke", help="a folder for NUKE_PATH: the MAM2 node, its Python and pyzmq/msgpack "
                                           "for Nuke 14/15/16 on Linux, macOS and Windows")
    nuke.add_argument("dest", type=Path, metavar="DIR", help="the folder to write (new, empty, or an earlier package)")
    nuke.add_argument("--python", nargs="+", default=list(NUKE_PYTHONS), metavar="X.Y",
                      help="Nuke Python versions (default: %(default)s = Nuke 14, 15, 16)")
    nuke.add_argument("--platform", nargs="+", default=list(PLATFORMS), choices=list(PLATFORMS),
                      help="platforms (default: all)")
    nuke.add_argument("--find-links", metavar="DIR", help="a folder of wheels pip looks in first")
    nuke.add_argument("--offline", action="store_true", help="do not ask PyPI: only --find-links / pip's config")
    nuke.add_argument("--server-python", default=sys.executable,
                      help="the Python with MAM2 that the node uses to start `mam2 serve` (default: this one)")
    nuke.set_defaults(func=run_nuke)


def run_nuke(args: argparse.Namespace) -> int:
    from mam2_server.package import nuke
    pip_args = (["--find-links", str(args.find_links)] if args.find_links else []) + (
        ["--no-index"] if args.offline else [])
    manifest = nuke.build(args.dest, pythons=args.python, platforms=args.platform, pip_args=pip_args,
                          server_python=args.server_python)
    dest = args.dest.resolve()
    wheels = sorted({w for names in manifest["sites"].values() for w in names})
    print(f"wrote {dest}: the MAM2 node (gizmos/MAM2.gizmo), its Python (python/), and for "
          f"{', '.join(f'{v} ({n})' for v, n in manifest['nuke'].items())} on {', '.join(args.platform)}:")
    for wheel in wheels:
        print(f"  {wheel}")
    print(f"Next: put {dest} on NUKE_PATH (or nuke.pluginAddPath('{dest.as_posix()}') in ~/.nuke/init.py) and "
          f"start Nuke; then Nodes > MAM2 > MAM2 matte. Walkthrough: {dest / 'README.md'}")
    return 0
