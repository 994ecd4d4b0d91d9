"""`mam2 package blender DIR`: the Blender add-on as installable extension zips, one per platform.

Each zip holds the add-on (host_plugins/blender) with the MAM2 client vendored inside it
(`mam2_matte/mam2_client`, imported relatively), the pyzmq and msgpack wheels for that
platform, unmodified from PyPI, and a `blender_manifest.toml` that lists them. Install
with Edit > Preferences > Get Extensions > Install from Disk (or drag the zip into Blender).
Blender 4.2-5.0 embed Python 3.11, so the wheels are cp311. Offline: `--find-links DIR --offline`
takes them from a folder of wheels (e.g. one `python -m mam2_server.package.prefetch DIR` filled).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

from mam2_server import __version__
from mam2_server.package.wheels import add_source_arguments, fetch_wheels, source_args

ADDON_ID = "mam2_matte"
PYTHON = "3.11"  # Blender 4.2-5.0; 5.1+ embeds 3.13 (blender_version_max below)
REQUIREMENTS = ("pyzmq", "msgpack")
# Blender's platform name -> the newest pip platform tag that Blender build runs
# (Linux: glibc 2.28; macOS: 11.2+).
PLATFORMS = {
    "linux-x64": "manylinux_2_28_x86_64",
    "macos-arm64": "macosx_11_0_arm64",
    "macos-x64": "macosx_11_0_x86_64",
    "windows-x64": "win_amd64",
    "windows-arm64": "win_arm64",
}
_ZIP_DATE = (2024, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same zip


def _sources() -> tuple[Path, Path]:
    import host_plugins
    root = Path(host_plugins.__file__).resolve().parent
    return root / "blender", root / "mam2_client"


def _python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if p.is_file())


def manifest(platform: str | None, wheels: list[str]) -> str:
    """The blender_manifest.toml text (Blender's extension schema 1.0.0)."""
    lines = [
        'schema_version = "1.0.0"',
        f'id = "{ADDON_ID}"',
        f'version = "{__version__}"',
        'name = "MAM2 Matte"',
        'tagline = "Video mattes from box, point and Mask prompts via a MAM2 server"',
        'maintainer = "MAM2"',
        'type = "add-on"',
        'blender_version_min = "4.2.0"',
        f'blender_version_max = "5.1.0"  # 5.1 embeds Python 3.13; these wheels are cp{PYTHON.replace(".", "")}',
        'license = ["SPDX:GPL-3.0-or-later"]',
        'tags = ["Compositing", "Node"]',
    ]
    if platform:
        lines.append(f'platforms = ["{platform}"]')
    if wheels:
        lines.append("wheels = [" + ", ".join(f'"./wheels/{name}"' for name in wheels) + "]")
    lines += [
        "",
        "[permissions]",
        'network = "Talks to the MAM2 matting server (by default on this machine)"',
        'files = "Reads the plate images and writes the alpha images"',
        "",
    ]
    return "\n".join(lines)


def stage_addon(dest: Path, platform: str | None = None, wheels: list[Path] = ()) -> Path:
    """Lay out the add-on package in `dest/mam2_matte` (the client vendored, the wheels copied in)."""
    addon, client = _sources()
    root = Path(dest) / ADDON_ID
    if root.exists():
        shutil.rmtree(root)
    (root / "mam2_client").mkdir(parents=True)
    for path in _python_files(addon):
        shutil.copy2(path, root / path.name)
    for path in _python_files(client):
        shutil.copy2(path, root / "mam2_client" / path.name)
    if wheels:
        (root / "wheels").mkdir()
        for wheel in wheels:
            shutil.copy2(wheel, root / "wheels" / Path(wheel).name)
    (root / "blender_manifest.toml").write_text(manifest(platform, [Path(w).name for w in wheels]))
    return root


def zip_folder(folder: Path, target: Path) -> Path:
    """Zip the package's contents (manifest at the zip's root, as Blender's `extension build` does)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), _ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, path.read_bytes())
    return target


def build(dest: Path, platforms: list[str], wheel_cache: Path | None = None,
          pip_args: Sequence[str] = ()) -> list[Path]:
    """One extension zip per Blender platform in `dest`; returns their paths. pip_args: added to pip's
    (e.g. ["--find-links", DIR, "--no-index"])."""
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown:
        raise ValueError(f"unknown Blender platform(s) {', '.join(unknown)}; known: {', '.join(PLATFORMS)}")
    dest = Path(dest)
    zips = []
    with tempfile.TemporaryDirectory(prefix="mam2-blender-") as tmp:
        cache = Path(wheel_cache) if wheel_cache else Path(tmp) / "wheels"
        for platform in platforms:
            wheels = fetch_wheels(REQUIREMENTS, [PLATFORMS[platform]], [PYTHON], cache, pip_args=pip_args)
            root = stage_addon(Path(tmp) / platform, platform, wheels)
            name = f"{ADDON_ID}-{__version__}-{platform.replace('-', '_')}.zip"
            zips.append(zip_folder(root, dest / name))
    return zips


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--platform", action="append", choices=sorted(PLATFORMS), metavar="PLATFORM",
                        help=f"build only for PLATFORM (repeatable; default all: {', '.join(PLATFORMS)})")
    parser.add_argument("--wheel-cache", type=Path, metavar="DIR",
                        help="keep the downloaded wheels in DIR and reuse them (default: a temporary folder)")
    add_source_arguments(parser)


def run(args: argparse.Namespace) -> int:
    for path in build(args.directory, args.platform or list(PLATFORMS), args.wheel_cache, source_args(args)):
        print(f"{path}  ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
