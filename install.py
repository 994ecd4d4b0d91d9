#!/usr/bin/env python3
"""Set up MAM2 in ./.venv with one command (standard library only).

    python3 install.py            # runtime: torch (CPU), sam2, I/O, classic matting
    python3 install.py --dev      # + test dependencies (and .venv-bpy, .venv-bpy45 for the Blender add-on tests);
                                  #   ray + openjd-cli for the farm tests: ~80 MB download, ~270 MB, no torch
    python3 install.py --cuda     # torch from PyPI's default (CUDA) build instead of the CPU wheel

Order matters. torch is installed first and pinned; sam2 1.1.0 is an sdist whose
build and whose `torchvision` dependency would otherwise pull a newer CUDA torch
(several GB), so it is built without build isolation, without its CUDA extension
and without dependencies, and its real runtime dependencies are added by name.
Every step is idempotent: re-running skips what is already installed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TORCH = "torch==2.13.0"
SAM2 = "sam2==1.1.0"
# sam2's runtime imports, minus torchvision (only its image predictor and mask
# generator need it, and the matching wheel is a CUDA build that cannot import here).
SAM2_DEPS = ["hydra-core>=1.3.2", "iopath>=0.1.10", "pillow>=9.4.0", "tqdm>=4.66.1"]
# Blender as a Python module for tests/test_blender_*.py: its own venvs, as bpy pins Python 3.11
# and numpy<2 (the main venv has numpy 2); 5.0 and the 4.5 LTS (the old compositor API).
# Optional: the tests skip without them.
BPY_VENV = ROOT / ".venv-bpy"
BPY = "bpy==5.0.1"
BPY45_VENV = ROOT / ".venv-bpy45"
BPY45 = "bpy==4.5.15"
EXTENSION_WHEELS = ["pyzmq", "msgpack"]


class StepFailed(RuntimeError):
    pass


def step(title: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
    print(f"[install] {title}\n          $ {' '.join(cmd)}", flush=True)
    t0 = time.monotonic()
    result = subprocess.run(cmd, env={**os.environ, **(env or {})}, cwd=ROOT)
    if result.returncode != 0:
        raise StepFailed(f"step '{title}' failed (exit {result.returncode}); see the output above")
    print(f"          done in {time.monotonic() - t0:.1f} s", flush=True)


def installed_version(python: Path, dist: str) -> str | None:
    code = f"import importlib.metadata as m\ntry: print(m.version({dist!r}))\nexcept m.PackageNotFoundError: pass"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or None


def blender_test_venv(env_dir: Path = BPY_VENV, bpy: str = BPY) -> None:
    """Create `env_dir` with bpy + pyzmq + msgpack; on failure warn and go on (never raises)."""
    python = env_dir / "bin" / "python"
    deps = [bpy, *EXTENSION_WHEELS]
    if python.exists() and all(installed_version(python, d.split("==")[0]) for d in deps) \
            and installed_version(python, "bpy") == bpy.split("==")[1]:
        print(f"[install] {bpy} already installed in {env_dir}", flush=True)
        return
    python311 = sys.executable if sys.version_info[:2] == (3, 11) else shutil.which("python3.11")
    try:
        if python311 is None:
            raise StepFailed("bpy 4.2-5.0 wheels need Python 3.11 and there is no python3.11 on PATH")
        if not python.exists():
            step(f"virtual environment {env_dir.name} for the Blender add-on tests",
                 [python311, "-m", "venv", str(env_dir)])
        step(f"Blender as a module ({bpy}, ~375 MB) for the Blender add-on tests",
             [str(python), "-m", "pip", "install", "--disable-pip-version-check"] + deps)
    except (StepFailed, OSError) as exc:
        print(f"[install] WARNING: no Blender test environment in {env_dir.name} ({exc}); "
              "its Blender add-on tests will be skipped", file=sys.stderr, flush=True)


def host_wheels(python: Path, dest: Path) -> None:
    """pyzmq + msgpack wheels of every Nuke and Blender Python and platform `mam2 package` builds for,
    downloaded once into `dest` (<venv>/host-wheels), so that the packaging tests build offline."""
    try:
        step("the host plugins' wheels (Nuke 14-16, Blender 4.2-5.0; ~12 MB) for the packaging tests",
             [str(python), "-m", "mam2_server.package.prefetch", str(dest)])
    except (StepFailed, OSError) as exc:
        print(f"[install] WARNING: not every host wheel was fetched ({exc}); the packaging tests need them",
              file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev", action="store_true", help="also install the test dependencies")
    parser.add_argument("--cuda", action="store_true", help="install PyPI's CUDA build of torch (GPU machines)")
    parser.add_argument("--venv", default=str(ROOT / ".venv"), help="where to create the environment (default: .venv)")
    args = parser.parse_args(argv)

    if sys.version_info < (3, 10):
        print("[install] MAM2 needs Python >= 3.10 (sam2 requires it)", file=sys.stderr)
        return 2
    env_dir = Path(args.venv)
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    try:
        if not python.exists():
            print(f"[install] creating virtual environment {env_dir}", flush=True)
            venv.EnvBuilder(with_pip=True).create(env_dir)
        else:
            print(f"[install] using existing virtual environment {env_dir}", flush=True)

        step("build tools (setuptools, wheel) for building sam2 without isolation",
             pip + ["--upgrade", "pip", "setuptools", "wheel"])

        torch_version = installed_version(python, "torch")
        if torch_version and torch_version.split("+")[0] == TORCH.split("==")[1]:
            print(f"[install] torch {torch_version} already installed", flush=True)
        elif args.cuda:
            # Ignore machine-wide pip config (e.g. a find-links folder holding the CPU wheel).
            step("torch (CUDA build from PyPI)", pip + [TORCH], env={"PIP_CONFIG_FILE": os.devnull})
        else:
            step("torch (CPU wheel)", pip + [TORCH])

        if installed_version(python, "sam2") != SAM2.split("==")[1]:
            step("sam2 without its CUDA extension, dependencies or build isolation",
                 pip + ["--no-build-isolation", "--no-deps", SAM2], env={"SAM2_BUILD_CUDA": "0"})
        else:
            print(f"[install] {SAM2} already installed", flush=True)
        step("sam2's runtime dependencies (without torchvision)", pip + SAM2_DEPS)

        target = ".[dev]" if args.dev else "."
        step(f"mam2 and its dependencies ({target})", pip + ["--editable", target])

        # pymatting JIT-compiles with numba on first import (~40 s); pay it once here.
        step("warm pymatting's numba cache", [str(python), "-c", "import pymatting"])
        step("check the installation", [str(python), "-m", "mam2_server.cli", "--version"])
        if args.dev:
            blender_test_venv()
            blender_test_venv(BPY45_VENV, BPY45)
            host_wheels(python, env_dir / "host-wheels")
    except StepFailed as exc:
        print(f"[install] FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"[install] ready: {env_dir / 'bin' / 'mam2'} --help", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
