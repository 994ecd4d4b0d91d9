"""`mam2 bench TARGET`: speed, memory and quality targets, measured, never asserted in tests.

Each target is a module `mam2_server.bench.<target>` with `add_arguments(parser)`
and `run(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib

TARGETS = {
    "io": "reading, writing, encoding and colour-converting plates",
    "engines": "quality and speed of the engines side by side on the synthetic benchmark",
    "stills": "the engines on still photographs with ground-truth alpha (a folder you point it at)",
    "model": "MAM2 network: parameters and ms per frame per stage",
    "server": "protocol/transport overhead and server memory over a long shot",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="measure speed, memory and quality", description=__doc__)
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, help_text in TARGETS.items():
        try:
            module = importlib.import_module(f"mam2_server.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mam2_server.bench.{name}":
                continue
            raise
        sub = targets.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(sub)
        sub.set_defaults(func=module.run)
