"""What an engine's results depend on besides their inputs: its code and its weights.

The server's alpha cache keys carry this identity, and a restarted server serves finished frames
from disk: without it an upgraded install, or a checkpoint retrained in place, would keep serving
mattes that the engine now running did not make.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import mam2_server

PACKAGE_ROOT = Path(mam2_server.__file__).resolve().parent


def code_digest(root: Path = PACKAGE_ROOT) -> str:
    """Digest of every Python source under `root` (path and content): any change to the installed
    code gives another digest, the same install always the same one."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def file_digest(path: str | Path, chunk: int = 1 << 22) -> str:
    """Digest of a file's content (a checkpoint rewritten at the same path gets another)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def engine_identity(name: str, checkpoint: str | None = None) -> str:
    """`name`, the installed code's digest and, with a checkpoint, its content's digest."""
    parts = [name, code_digest()]
    if checkpoint:
        parts.append(file_digest(Path(checkpoint).expanduser()))
    return ":".join(parts)
