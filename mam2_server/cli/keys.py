"""`mam2 keys DIR`: CURVE key pairs so `mam2 serve --curve DIR` may bind a non-loopback address.

Writes DIR/server.key(_secret), DIR/client.key(_secret) and DIR/authorized/client.key.
Give clients server.key and client.key_secret; keep server.key_secret on the server.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="generate CURVE keys for a remote server", description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--client-name", default="client", help="name of the client key pair (default client)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mam2_server.server.security import generate_keys
    files = generate_keys(args.directory, args.client_name)
    for label, path in files.items():
        print(f"{label:14s} {path}")
    return 0
