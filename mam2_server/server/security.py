"""Who may talk to the server: the starting user's token on loopback, CURVE keys otherwise.

On a loopback or ``ipc://`` address every request must carry the token of the user
who started the server (`load_or_create_token`; see `host_plugins.mam2_client.auth`).
Binding any address that is not loopback (127.0.0.0/8, ::1, localhost) or
``ipc://`` requires a CURVE key directory made by ``mam2 keys DIR``::

    DIR/server.key_secret     the server's key pair (keep private)
    DIR/server.key            the server's public key (give to clients)
    DIR/client.key_secret     a client key pair (copy to the artist's machine)
    DIR/authorized/*.key      public keys of the clients allowed in
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import stat
import sys
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from host_plugins.mam2_client.wire import is_loopback

log = logging.getLogger(__name__)


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
    """The token in `path`, created (0600, parent 0700) if missing. Refuses a file of another user.

    Creation is atomic (written aside, then hard-linked into place), so servers that start
    together all end up with the one token.
    """
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
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
    st = path.stat()
    if sys.platform != "win32":
        if st.st_uid != os.getuid():
            raise SecurityError(f"token file {path} belongs to another user (uid {st.st_uid}); "
                                "use your own (--token-file)")
        if stat.S_IMODE(st.st_mode) & 0o077:
            log.warning("token file %s is readable by other users: they can use this server", path)
    token = path.read_text(encoding="ascii").strip()
    if len(token) < 16:
        raise SecurityError(f"token file {path} holds no usable token (delete it to get a new one)")
    return token


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


class Curve:
    """CURVE server side: the authenticator thread plus the socket options."""

    def __init__(self, context: zmq.Context, directory: Path) -> None:
        self.directory = Path(directory)
        self.auth = ThreadAuthenticator(context)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=str(self.directory / "authorized"))

    def apply_server(self, socket: zmq.Socket) -> None:
        public, secret = zmq.auth.load_certificate(self.directory / "server.key_secret")
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_server = True

    def stop(self) -> None:
        self.auth.stop()
