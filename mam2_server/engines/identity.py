"""What an engine's results depend on besides their inputs: its code and its weights.

The server's alpha cache keys carry this identity, and a restarted server serves finished frames
from disk: without it an upgraded install, or a checkpoint retrained in place, would keep serving
mattes that the engine now running did not make.
"""
from __future__ import annotations

import functools
import hashlib
import os
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


def content_digest(path: str | Path) -> str:
    """Digest of a file's content (a checkpoint rewritten at the same path gets another; the same file
    mounted elsewhere the same one). Read once per file version and process: a checkpoint may be a
    gigabyte, and a batch asks once per shot. (Not server.files.file_digest, which names a shared
    plate by its path and stat without reading it.)"""
    real = os.path.realpath(Path(path).expanduser())
    st = os.stat(real)
    return _content_digest(real, st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=16)
def _content_digest(real: str, size: int, mtime_ns: int, inode: int, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(real, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def engine_identity(name: str, checkpoint: str | None = None) -> str:
    """`name`, the installed code's digest and, with a checkpoint, its content's digest."""
    parts = [name, code_digest()]
    if checkpoint:
        parts.append(content_digest(checkpoint))
    return ":".join(parts)
