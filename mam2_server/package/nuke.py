"""`mam2 package nuke DIR`: a folder to put on NUKE_PATH, with everything the MAM2 node needs.

    DIR/init.py, menu.py            host_plugins/nuke/init.py, menu.py (init.py picks DIR/site/<tag>)
    DIR/README.md                    gizmos/README.md: from here to a matte in Nuke
    DIR/gizmos/MAM2.gizmo
    DIR/python/mam2_nuke/, mam2_client/
    DIR/site/cp311-linux-x86_64/...  pyzmq + msgpack from PyPI wheels (pip install --target), one
                                     folder per Nuke Python (14: 3.9, 15: 3.10, 16: 3.11) and platform
    DIR/config.json                  the Python that runs `mam2 serve` when the node starts a server
    DIR/manifest.json                what was packaged

Nuke never puts a `pip --target` folder on sys.path; nuke.pluginAddPath does (Foundry's
Python reference), which is what init.py uses. DIR is written next to itself and swapped in,
so a failed run leaves the previous package as it was.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from mam2_server import __version__
from mam2_server.package.wheels import PARALLEL, add_source_arguments, install_wheels, source_args

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ("pyzmq", "msgpack")
NUKE_PYTHONS = {"3.9": "Nuke 14", "3.10": "Nuke 15", "3.11": "Nuke 16"}
# init.py's platform names -> pip platform tags (manylinux2014 = glibc 2.17: Nuke 14 runs on CentOS 7)
PLATFORMS = {"linux-x86_64": "manylinux2014_x86_64", "macos-x86_64": "macosx_10_15_x86_64",
             "macos-arm64": "macosx_11_0_arm64", "windows-x86_64": "win_amd64"}
MANIFEST = "manifest.json"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def build(dest: str | Path, *, pythons: Sequence[str] = tuple(NUKE_PYTHONS),
          platforms: Sequence[str] = tuple(PLATFORMS), pip_args: Sequence[str] = (),
          server_python: str | None = None) -> dict:
    """Write the package into `dest` (replacing an earlier package there); returns the manifest."""
    dest = Path(dest).resolve()
    if not (ROOT / "gizmos" / "MAM2.gizmo").is_file():
        raise RuntimeError(f"the MAM2 sources are not next to this installation ({ROOT}): `mam2 package` runs from "
                           "a source checkout installed with install.py")
    unknown = sorted(set(platforms) - set(PLATFORMS))
    if unknown:
        raise ValueError(f"unknown platform(s) {', '.join(unknown)}; known: {', '.join(PLATFORMS)}")
    if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not (dest / MANIFEST).exists())):
        raise ValueError(f"{dest} exists and is not a MAM2 package folder: choose a new or empty folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        manifest = _write(stage, pythons, platforms, pip_args, server_python)
        if dest.exists():
            shutil.rmtree(dest)
        stage.rename(dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return manifest


def _write(stage: Path, pythons, platforms, pip_args, server_python) -> dict:
    plugin = ROOT / "host_plugins" / "nuke"
    for name in ("init.py", "menu.py"):
        shutil.copy2(plugin / name, stage / name)
    shutil.copy2(ROOT / "gizmos" / "README.md", stage / "README.md")
    (stage / "gizmos").mkdir()
    shutil.copy2(ROOT / "gizmos" / "MAM2.gizmo", stage / "gizmos" / "MAM2.gizmo")
    shutil.copytree(plugin / "mam2_nuke", stage / "python" / "mam2_nuke", ignore=IGNORE)
    shutil.copytree(ROOT / "host_plugins" / "mam2_client", stage / "python" / "mam2_client", ignore=IGNORE)
    combos = {f"cp{v.replace('.', '')}-{p}": (v, p) for v in pythons for p in platforms}

    def install(site: str) -> list[str]:
        version, platform = combos[site]
        return install_wheels(REQUIREMENTS, PLATFORMS[platform], version, stage / "site" / site, pip_args=pip_args)
    with ThreadPoolExecutor(PARALLEL) as pool:
        sites = dict(zip(combos, pool.map(install, combos)))
    (stage / "config.json").write_text(json.dumps({"server_python": server_python}, indent=1) + "\n")
    manifest = {"mam2": __version__, "requirements": list(REQUIREMENTS),
                "nuke": {v: NUKE_PYTHONS.get(v, "?") for v in pythons}, "sites": sites}
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--python", nargs="+", default=list(NUKE_PYTHONS), metavar="X.Y",
                        help="Nuke Python versions (default: %(default)s = Nuke 14, 15, 16)")
    parser.add_argument("--platform", nargs="+", default=list(PLATFORMS), choices=list(PLATFORMS),
                        help="platforms (default: all)")
    add_source_arguments(parser)
    parser.add_argument("--server-python", default=sys.executable,
                        help="the Python with MAM2 that the node uses to start `mam2 serve` (default: this one)")


def run(args: argparse.Namespace) -> int:
    """Write the folder DIR (new, empty, or an earlier package) and say what is next."""
    manifest = build(args.directory, pythons=args.python, platforms=args.platform, pip_args=source_args(args),
                     server_python=args.server_python)
    dest = args.directory.resolve()
    wheels = sorted({w for names in manifest["sites"].values() for w in names})
    print(f"wrote {dest}: the MAM2 node (gizmos/MAM2.gizmo), its Python (python/), and for "
          f"{', '.join(f'{v} ({n})' for v, n in manifest['nuke'].items())} on {', '.join(args.platform)}:")
    for wheel in wheels:
        print(f"  {wheel}")
    print(f"Next: put {dest} on NUKE_PATH (or nuke.pluginAddPath('{dest.as_posix()}') in ~/.nuke/init.py) and "
          f"start Nuke; then Nodes > MAM2 > MAM2 matte. Walkthrough: {dest / 'README.md'}")
    return 0
