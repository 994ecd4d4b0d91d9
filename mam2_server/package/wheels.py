"""Binary wheels from PyPI for other Pythons and platforms than this one, done by pip.

Host applications embed their own Python (Nuke 14/15/16: 3.9/3.10/3.11; Blender 4.2-5.0: 3.11),
so their plugins ship wheels of exactly that version and of every platform artists use. pip
picks them with --only-binary/--platform/--python-version/--implementation/--abi, downloads
them (`fetch_wheels`) or installs them into a folder (`install_wheels`, pip install --target).
It honours its own configuration (PIP_FIND_LINKS, PIP_NO_INDEX, pip.conf), and `pip_args` adds
to it (e.g. ["--find-links", DIR, "--no-index"] to build offline from a folder of wheels).
At most PARALLEL pip processes run at once in this process, however the callers nest.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence
from urllib.parse import unquote, urlparse

PARALLEL = max(2, min(4, os.cpu_count() or 2))  # pip processes at once (they mostly wait on the network)
_PIP_SLOTS = threading.BoundedSemaphore(PARALLEL)


def add_source_arguments(parser) -> None:
    """`--find-links DIR` and `--offline` for a `mam2 package` target (see `source_args`)."""
    parser.add_argument("--find-links", metavar="DIR", help="a folder of wheels pip looks in first")
    parser.add_argument("--offline", action="store_true", help="do not ask PyPI: only --find-links / pip's config")


def source_args(args) -> list[str]:
    """pip's arguments for the parsed --find-links / --offline."""
    return (["--find-links", str(args.find_links)] if args.find_links else []) + (
        ["--no-index"] if args.offline else [])


class WheelError(RuntimeError):
    """pip found no wheel for a requirement, Python and platform (the message says which)."""


def fetch_wheels(requirements: Sequence[str], platforms: Sequence[str], python_versions: Sequence[str],
                 dest: str | Path, *, pip_args: Sequence[str] = ()) -> list[Path]:
    """Download wheels of `requirements` (and their dependencies) for every Python version
    ("3.11") x pip platform tag ("manylinux2014_x86_64", "win_amd64", ...) into `dest`.

    Returns the wheel files in `dest`, each once (a universal2 or abi3 wheel serves several).
    Raises WheelError naming the Python/platform pip could not satisfy.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    combos = [(version, platform) for version in python_versions for platform in platforms]
    with tempfile.TemporaryDirectory(prefix=".wheels-", dir=dest) as scratch, \
            ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        def download(combo: tuple[str, str]) -> Path:
            folder = Path(scratch) / f"{combo[0]}-{combo[1]}"
            _pip("download", requirements, *combo, ["--dest", str(folder), *pip_args])
            return folder
        folders = list(pool.map(download, combos))
        found: dict[str, Path] = {}
        for folder in folders:
            for wheel in sorted(folder.glob("*.whl")):
                target = dest / wheel.name
                if not target.exists():
                    shutil.move(str(wheel), target)
                found[wheel.name] = target
    return sorted(found.values())


def install_wheels(requirements: Sequence[str], platform: str, python_version: str, target: str | Path, *,
                   pip_args: Sequence[str] = ()) -> list[str]:
    """`pip install --target`: `requirements` (and their dependencies) for one Python version and pip
    platform tag, laid out in `target` as that Python imports them. Returns the wheels' file names.
    Raises WheelError naming the Python/platform pip could not satisfy."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-report-", dir=target.parent) as scratch:
        report = Path(scratch) / "report.json"
        _pip("install", requirements, python_version, platform,
             ["--target", str(target), "--no-compile", "--report", str(report), *pip_args])
        installed = json.loads(report.read_text())["install"]
    return sorted(Path(unquote(urlparse(item["download_info"]["url"]).path)).name for item in installed)


def _pip(command: str, requirements: Sequence[str], version: str, platform: str, extra: Sequence[str]) -> None:
    major, minor = version.split(".")[:2]
    cmd = [sys.executable, "-m", "pip", command, "--disable-pip-version-check", "--quiet", "--only-binary=:all:",
           "--platform", platform, "--python-version", f"{major}.{minor}", "--implementation", "cp",
           "--abi", f"cp{major}{minor}", *extra, *requirements]
    with _PIP_SLOTS:
        out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        tail = "\n".join((out.stderr or out.stdout).strip().splitlines()[-6:])
        raise WheelError(f"no wheels of {' '.join(requirements)} for Python {major}.{minor} on {platform}:\n{tail}")
