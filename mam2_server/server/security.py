"""Who may talk to the server: the starting user's token on loopback, CURVE keys otherwise.

Both are checked by ZeroMQ's authenticator (`zmq.auth`) during the connection's
handshake, so a peer that fails it never gets a message into the server, let alone
into its memory. On a loopback or ``ipc://`` address a client logs in with ZeroMQ
PLAIN: username ``mam2``, password the token of the user who started the server
(`load_or_create_token`; see `host_plugins.mam2_client.auth`). Binding any address
that is not loopback (127.0.0.0/8, ::1, localhost) or ``ipc://`` requires a CURVE key
directory made by ``mam2 keys DIR``::

    DIR/server.key_secret     the server's key pair (keep private)
    DIR/server.key            the server's public key (give to clients)
    DIR/client.key_secret     a client key pair (copy to the artist's machine)
    DIR/authorized/*.key      public keys of the clients allowed in
"""
from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import stat
import sys
from abc import ABC, abstractmethod
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from host_plugins.mam2_client.auth import PLAIN_USERNAME
from host_plugins.mam2_client.wire import is_loopback


class SecurityError(ValueError):
    """The server refuses to start with this address / key configuration."""


def check_bind_address(address: str, curve_dir: Path | None) -> None:
    if not address.startswith(("tcp://", "ipc://", "inproc://")):
        raise SecurityError(f"address {address!r}: use tcp://HOST:PORT or ipc://PATH")
    if is_loopback(address):
        return
    if curve_dir is None:
        raise SecurityError(f"refusing to bind {address}: it is reachable from other machines and needs CURVE "
                            "encryption. Generate keys "
                            "with `mam2 keys DIR` and start with `--curve DIR`, or bind tcp://127.0.0.1:PORT")
    missing = [p for p in ("server.key_secret", "authorized") if not (Path(curve_dir) / p).exists()]
    if missing:
        raise SecurityError(f"CURVE directory {curve_dir} lacks {', '.join(missing)} (create it with `mam2 keys`)")
    if not any((Path(curve_dir) / "authorized").glob("*.key")):
        raise SecurityError(f"no client public keys in {curve_dir}/authorized: nobody could connect")


def load_or_create_token(path: Path) -> str:
    """The token in `path`, created (0600, parent 0700) if missing.

    Creation is atomic (written aside, then hard-linked into place), so servers that start
    together all end up with the one token. The file is opened without following a
    symbolic link, and refused unless the opened file is a regular file of this user that
    no one else may read or write (mode 0600 or 0400).
    """
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not os.path.lexists(path):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_urlsafe(32).encode("ascii") + b"\n")
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another server created it first: use theirs
        finally:
            tmp.unlink()
    # O_NONBLOCK: a FIFO planted there opens at once (and is then refused) instead of blocking
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SecurityError(f"token file {path} is a symbolic link: refused (the server reads only a file of "
                                "its own there); delete the link or choose another --token-file") from None
        raise SecurityError(f"cannot read token file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        _check_private(path, os.fstat(f.fileno()))
        token = f.read(4096).decode("ascii", "replace").strip()
    if len(token) < 16:
        raise SecurityError(f"token file {path} holds no usable token (delete it to get a new one)")
    return token


def _check_private(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise SecurityError(f"token file {path} is not a regular file: refused")
    if sys.platform == "win32":
        return
    if st.st_uid != os.getuid():
        raise SecurityError(f"token file {path} belongs to another user (uid {st.st_uid}); use your own "
                            "(--token-file)")
    mode = stat.S_IMODE(st.st_mode)
    if mode & ~0o600:
        raise SecurityError(f"token file {path} has mode {mode:04o}: anyone who can read it can use and stop this "
                            f"server, so it must be 0600 (run `chmod 600 {path}`, or delete it to get a new one). "
                            "To share a server, start it with --curve and give each user a client key")


def generate_keys(directory: Path, client_name: str = "client") -> dict[str, Path]:
    """Create server and client key pairs; authorise the client. Returns the files written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    authorized = directory / "authorized"
    authorized.mkdir(exist_ok=True)
    for name in ("server", client_name):
        if (directory / f"{name}.key_secret").exists():
            raise FileExistsError(f"{directory / (name + '.key_secret')} exists; not overwriting keys")
    server_public, server_secret = zmq.auth.create_certificates(directory, "server")
    client_public, client_secret = zmq.auth.create_certificates(directory, client_name)
    shutil.copy(client_public, authorized / Path(client_public).name)
    for secret in (server_secret, client_secret):
        Path(secret).chmod(0o600)
    return {"server_public": Path(server_public), "server_secret": Path(server_secret),
            "client_public": Path(client_public), "client_secret": Path(client_secret)}


class _AtLeastInfo(logging.Filter):
    """Drops records below INFO: pyzmq's authenticator logs the PLAIN password (the token) at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


def zap_logger() -> logging.Logger:
    """The authenticator's logger, which never logs below INFO, even under `mam2 -vv` (root at DEBUG)."""
    logger = logging.getLogger(f"{__name__}.zap")
    logger.setLevel(logging.INFO)
    if not any(isinstance(f, _AtLeastInfo) for f in logger.filters):
        logger.addFilter(_AtLeastInfo())  # holds even if something sets the level back to DEBUG
    return logger


class _Authenticator(ABC):
    """ZeroMQ's authenticator thread (ZAP) for the context; `apply_server` sets up a server socket."""

    def __init__(self, context: zmq.Context) -> None:
        self.auth = ThreadAuthenticator(context, log=zap_logger())
        self.auth.start()

    @abstractmethod
    def apply_server(self, socket: zmq.Socket) -> None:
        """Make `socket` a server of this mechanism (PLAIN with the owner's token, or CURVE)."""

    def stop(self) -> None:
        self.auth.stop()


class OwnerToken(_Authenticator):
    """PLAIN server side: a connection is accepted only with username `mam2` and the owner's token."""

    def __init__(self, context: zmq.Context, token: str) -> None:
        super().__init__(context)
        self.auth.configure_plain(domain="*", passwords={PLAIN_USERNAME: token})

    def apply_server(self, socket: zmq.Socket) -> None:
        socket.plain_server = True


class Curve(_Authenticator):
    """CURVE server side: clients whose public key is in DIR/authorized."""

    def __init__(self, context: zmq.Context, directory: Path) -> None:
        super().__init__(context)
        self.directory = Path(directory)
        self.auth.configure_curve(domain="*", location=str(self.directory / "authorized"))

    def apply_server(self, socket: zmq.Socket) -> None:
        public, secret = zmq.auth.load_certificate(self.directory / "server.key_secret")
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_server = True
