"""Who may use a local MAM2 server: the user who started it, proven by a secret only that user can read.

A server on a loopback or ``ipc://`` address creates (or reuses) a token file readable
by its user only (0600, in a 0700 directory) and accepts a connection only when the
client's ZeroMQ PLAIN handshake carries username ``mam2`` and the token as password
(ZeroMQ's authenticator checks it before the connection may send a single message).
Every client of the same user finds the same file, so Nuke, Blender and the `mam2`
CLI use it without any setup; other local users cannot read it, so they can neither
use nor stop the server. The file is ``$MAM2_TOKEN_FILE``, else
``~/.cache/mam2/token`` (beside the default cache). A server that several people
share uses CURVE keys instead (`mam2 serve --curve`).
"""
from __future__ import annotations

import os
from pathlib import Path

TOKEN_FILE_ENV = "MAM2_TOKEN_FILE"
PLAIN_USERNAME = "mam2"  # the PLAIN username; the token is the password


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


def use_token(socket, token: str | None) -> None:
    """Make a ZeroMQ socket (before `connect`) log in to a local server with `token`.

    Without a token it still speaks PLAIN, with a password no server accepts, so the
    server refuses the handshake (the client then reports it) rather than the request
    waiting for an answer that never comes.
    """
    socket.plain_username = PLAIN_USERNAME.encode()
    socket.plain_password = (token or "-").encode()


def refused_message(address: str, path: str | os.PathLike | None, token: str | None) -> str:
    """What to tell a user whose token a local server refused."""
    where = token_file(path)
    held = f"the token in {where}" if token else f"no token ({where} does not exist or cannot be read)"
    return (f"the MAM2 server at {address} refused this client: it serves only the user who started it, who "
            f"logs in with the token in that user's token file, and this client has {held}. If that is your "
            f"server, give the client the file it was started with (--token-file, ${TOKEN_FILE_ENV} or "
            f"token_file=); otherwise start your own on another address")
