"""Binary wheels from PyPI for other Pythons and platforms than this one (`pip download --only-binary`).

Host applications embed their own Python (Nuke 14/15/16: 3.9/3.10/3.11; Blender 4.2-5.0: 3.11),
so their plugins ship wheels of exactly that version and of every platform artists use. pip
picks them with --platform/--python-version/--implementation/--abi; it honours its own
configuration (PIP_FIND_LINKS, PIP_NO_INDEX, pip.conf), and `pip_args` adds to it (e.g.
["--find-links", DIR, "--no-index"] to package offline from a folder of wheels).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

PARALLEL = 4  # pip processes at once (they mostly wait on the network)


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
        folders = list(pool.map(lambda c: _download(requirements, *c, Path(scratch) / f"{c[0]}-{c[1]}", pip_args),
                                combos))
        found: dict[str, Path] = {}
        for folder in folders:
            for wheel in sorted(folder.glob("*.whl")):
                target = dest / wheel.name
                if not target.exists():
                    shutil.move(str(wheel), target)
                found[wheel.name] = target
    return sorted(found.values())


def _download(requirements: Sequence[str], version: str, platform: str, folder: Path,
              pip_args: Sequence[str]) -> Path:
    major, minor = version.split(".")[:2]
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet", "--only-binary=:all:",
           "--platform", platform, "--python-version", f"{major}.{minor}", "--implementation", "cp",
           "--abi", f"cp{major}{minor}", "--dest", str(folder), *pip_args, *requirements]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        tail = "\n".join((out.stderr or out.stdout).strip().splitlines()[-6:])
        raise WheelError(f"no wheels of {' '.join(requirements)} for Python {major}.{minor} on {platform}:\n{tail}")
    return folder
