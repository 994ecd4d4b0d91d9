"""The wheels of every host package, downloaded once into one folder, so that packages build offline.

    python -m mam2_server.package.prefetch DIR     # install.py --dev: DIR = <venv>/host-wheels
    mam2 package nuke OUT --find-links DIR --offline
    mam2 package blender OUT --find-links DIR --offline

DIR gets pyzmq and msgpack for every Python and platform `mam2 package` builds for (Nuke 14/15/16
and Blender 4.2-5.0) and a list of what is in it (`prefetched.json`): a later run fetches only what
is missing. A combination PyPI has no wheel for is reported, not fatal.
"""
from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from mam2_server.package import blender, nuke
from mam2_server.package.wheels import PARALLEL, WheelError, fetch_wheels

DEFAULT_DIR = Path(sys.prefix) / "host-wheels"  # where install.py --dev puts them (the tests look there)
DONE = "prefetched.json"


def combinations() -> list[tuple[str, str, str]]:
    """(requirements, Python version, pip platform tag) of every package `mam2 package` builds."""
    return sorted({*((" ".join(nuke.REQUIREMENTS), version, tag) for version in nuke.NUKE_PYTHONS
                     for tag in nuke.PLATFORMS.values()),
                   *((" ".join(blender.REQUIREMENTS), blender.PYTHON, tag) for tag in blender.PLATFORMS.values())})


def prefetch(dest: str | Path = DEFAULT_DIR, *, pip_args: Sequence[str] = ()) -> list[str]:
    """Download what DIR lacks; returns the problems (one line each, empty when it has everything)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    done_file = dest / DONE
    done = set(map(tuple, json.loads(done_file.read_text()))) if done_file.is_file() else set()
    todo = [c for c in combinations() if c not in done]

    def fetch(combo: tuple[str, str, str]) -> str:
        requirements, version, tag = combo
        try:
            fetch_wheels(requirements.split(), [tag], [version], dest, pip_args=pip_args)
        except WheelError as exc:
            return str(exc).splitlines()[0]
        return ""
    with ThreadPoolExecutor(PARALLEL) as pool:
        problems = dict(zip(todo, pool.map(fetch, todo)))
    done |= {c for c, problem in problems.items() if not problem}
    done_file.write_text(json.dumps(sorted(done), indent=1) + "\n")
    return [problem for problem in problems.values() if problem]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    dest = Path(args[0]) if args else DEFAULT_DIR
    problems = prefetch(dest, pip_args=args[1:])
    count = len(list(dest.glob("*.whl")))
    print(f"{dest}: {count} wheels for {len(combinations())} Python/platform combinations"
          + ("; missing:\n  " + "\n  ".join(problems) if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
