"""Binary wheels from PyPI for another platform and Python, unmodified (for host plugin packages).

`pip download --only-binary=:all: --platform TAG --python-version X.Y` resolves the
requirements and their dependencies for that platform. pip reads its usual settings,
so `PIP_FIND_LINKS=DIR PIP_NO_INDEX=1` builds offline from a local wheel folder.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path


class WheelError(RuntimeError):
    """pip could not provide a wheel (no network, no wheel for that platform, ...)."""


def fetch_wheels(requirements: Sequence[str], platforms: Sequence[str], python_versions: Sequence[str],
                 dest: Path) -> list[Path]:
    """Download the wheels of `requirements` for every (platform tag, Python version) into `dest`.

    platforms: pip platform tags such as "manylinux_2_28_x86_64", "macosx_11_0_arm64", "win_amd64";
    python_versions: "3.11". Returns the wheel files in `dest` (each once), in download order.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    found: list[Path] = []
    for platform in platforms:
        for version in python_versions:
            with tempfile.TemporaryDirectory(dir=dest, prefix=".pip-") as tmp:
                cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
                       "--only-binary=:all:", "--implementation", "cp", "--platform", platform,
                       "--python-version", version, "--dest", tmp, *requirements]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise WheelError(f"no wheels of {' '.join(requirements)} for {platform} / Python {version}:\n"
                                     f"$ {' '.join(cmd)}\n{proc.stderr.strip()[-2000:]}")
                for wheel in sorted(Path(tmp).glob("*.whl")):
                    target = dest / wheel.name
                    if not target.exists():
                        shutil.move(str(wheel), target)
                    if target not in found:
                        found.append(target)
    return found
