"""Who may use a local MAM2 server: the user who started it, proven by a secret only that user can read.

A server on a loopback or ``ipc://`` address creates (or reuses) a token file readable
by its user only (0600, in a 0700 directory) and answers only requests that carry the
token (header key ``token``). Every client of the same user finds the same file, so
Nuke, Blender and the `mam2` CLI use it without any setup; other local users cannot
read it, so they can neither use nor stop the server. The file is
``$MAM2_TOKEN_FILE``, else ``~/.cache/mam2/token`` (beside the default cache).
A team that wants to share one server points every member at a group-readable file.
"""
from __future__ import annotations

import os
from pathlib import Path

TOKEN_FILE_ENV = "MAM2_TOKEN_FILE"


def token_file(path: str | os.PathLike | None = None) -> Path:
    """`path`, else $MAM2_TOKEN_FILE, else ~/.cache/mam2/token."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(TOKEN_FILE_ENV):
        return Path(os.environ[TOKEN_FILE_ENV]).expanduser()
    return Path.home() / ".cache" / "mam2" / "token"


def read_token(path: str | os.PathLike | None = None) -> str | None:
    """The token in `token_file(path)`, or None when there is none (yet) or it cannot be read."""
    try:
        return token_file(path).read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None
