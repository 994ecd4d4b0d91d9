"""Atomic file writes: a hidden temp file beside the target, renamed onto it only on success.

A crash at any point (even `kill -9`) leaves the old file or the new one, never part
of one, and the temp name (``.<name>.<hex>.tmp``) never matches a frame pattern.
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path in `path`'s directory; it replaces `path` when the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there when the block failed


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def unwritable_folder(folder: str | os.PathLike) -> str | None:
    """Why files cannot be written into `folder` (made as needed), or None."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None
