"""Files that clients name (`path` plates and masks), read within a size and a time budget.

A named file is refused (`bad_frame`) unless its path is absolute, it lies under
`--allow-path` (when given), it is a regular file of at most `max_bytes`, its first
bytes are those of a format plates come in (OpenEXR, PNG, TIFF, DPX, JPEG), it is
complete (EXR: every chunk inside the file; PNG: it ends with its IEND chunk), and
its header reads within `seconds`. OpenImageIO tries every reader it has on a file
that none claims, which takes ~25 s on a 200 MB file of zeros: the signature check
refuses such a file at once. Each read runs on its own daemon thread, so a hung
disk costs the request its budget, never the thread that waits; the server's own
loops never call these directly (see `app.Server`: a files stage feeds the data thread).

A read that outlives its budget keeps its thread until the disk answers. Those are
counted per *lane*, the one that asked (a client, or a shot's propagate), and a lane
with `max_hung` reads still running is refused at once: a client whose files sit on
a dead mount uses up its own lane, not the reads of other clients or shots. A
server-wide ceiling (`max_hung_total`) bounds the threads a dead disk can pin.

A plate is accepted at put_frames under a digest of its real path, size, mtime and inode
(`file_digest`), which goes into the shot's cache keys; at propagate its pixels are read only
while the open file still has that digest (checked before and after decoding), else bad_frame.
"""
from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Iterator, Sequence, TypeVar

import numpy as np

from mam2_server import protocol as P
from mam2_server.io.image import read_image, read_info
from mam2_server.io.info import ImageInfo, to_display_window
from mam2_server.protocol import ProtocolError
from mam2_server.io.exr_layout import ExrLayoutError, check_complete, file_reader

T = TypeVar("T")
Lane = tuple[str, Hashable]  # ("client", ROUTER identity) or ("shot", shot id)

SIGNATURES = ((b"\x76\x2f\x31\x01", "OpenEXR"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"II*\x00", "TIFF"),
              (b"MM\x00*", "TIFF"), (b"II+\x00", "TIFF"), (b"MM\x00+", "TIFF"), (b"SDPX", "DPX"),
              (b"XPDS", "DPX"), (b"\xff\xd8\xff", "JPEG"))
FORMATS = tuple(dict.fromkeys(name for _, name in SIGNATURES))
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def sniff(head: bytes) -> str | None:
    """The image format that `head` (a file's first bytes) starts, if it is one plates come in."""
    return next((name for magic, name in SIGNATURES if head.startswith(magic)), None)


@dataclass
class SharedPlate:
    path: str  # the real path (symlinks resolved)
    digest: str  # of path, size, mtime and inode: a re-rendered plate is a new frame
    info: ImageInfo


class FileReader:
    """Reads client-named files within `max_bytes` and `seconds` each (None: no budget, for tests).

    `lane`: who asks, ("client", identity) or ("shot", shot id); see the module docstring."""

    def __init__(self, allowed_roots: Sequence[Path] | None, max_bytes: int, seconds: float | None,
                 max_hung: int = 4, max_hung_total: int = 64) -> None:
        self.allowed_roots = allowed_roots
        self.max_bytes = max_bytes
        self.seconds = seconds
        self.max_hung = max_hung
        self.max_hung_total = max_hung_total
        self._running: Counter[Lane] = Counter()  # reads not yet returned, by lane
        self._lock = threading.Lock()

    # -- what the server asks for -------------------------------------------------
    def plate(self, path: str, lane: Lane) -> SharedPlate:
        """A shared-disk plate checked from its header and size (pixels are read at propagate)."""
        def check() -> SharedPlate:
            with self._open_checked(path) as (real, st, source):
                info = self._header(source, path)
            return SharedPlate(str(real), file_digest(real, st), info)
        return self._within_budget(path, check, lane)

    def pixels(self, path: str, lane: Lane, check: Callable[[ImageInfo], None] | None = None,
               accepted: str | None = None) -> np.ndarray:
        """(H, W, C) float32 pixels over the display window (masks, and plates at propagate).

        check: called with the file's header before its pixels are decoded (raise to refuse it),
        so that a small compressed file declaring a huge image is refused unread.
        accepted: the digest `plate` gave the file at put_frames; the open file must still have it
        (real path, size, mtime, inode, from its fstat) before and after its pixels are decoded,
        else bad_frame: pixels of another file are never matted under the accepted file's digest."""
        def read() -> np.ndarray:
            with self._open_checked(path) as (real, st, source):
                if accepted is not None:
                    _check_unchanged(path, accepted, real, st)
                if check is not None:
                    check(self._header(source, path))
                try:
                    image = read_image(source)
                except Exception as exc:  # noqa: BLE001 - OIIO reports bad files in many ways
                    raise ProtocolError(P.E_BAD_FRAME, f"{path!r} could not be read: "
                                                       f"{str(exc).replace(source, path)}") from None
                if accepted is not None:  # rewritten in place while it was decoded? (/proc/self/fd/N: the open file)
                    try:
                        after = os.stat(source)
                    except OSError:
                        after = None
                    _check_unchanged(path, accepted, real, after)
            return image.pixels if image.info.data_is_display else to_display_window(image)
        return self._within_budget(path, read, lane)

    # -- checks ----------------------------------------------------------------------
    def _check_allowed(self, real: Path, path: str) -> None:
        if self.allowed_roots is not None and not any(real.is_relative_to(r) for r in self.allowed_roots):
            raise ProtocolError(P.E_BAD_FRAME, f"path {path!r} is outside the directories this server may read "
                                               "(see `mam2 serve --allow-path`)")

    @contextmanager
    def _open_checked(self, path: str) -> Iterator[tuple[Path, os.stat_result, str]]:
        """(real path, its stat, a name to read it by) of a file this server may read and that looks like a
        complete image, held open while the block runs.

        `--allow-path` is checked on the real path, then again on the file actually opened (Linux:
        /proc/self/fd), and the image library reads that open file (/proc/self/fd/N), so swapping a
        directory of the path for a symbolic link in between gains nothing. Size, time and inode come
        from the open file."""
        if "\0" in path or not os.path.isabs(path):
            raise ProtocolError(P.E_BAD_FRAME, f"path {path!r:.200} must be absolute and free of NUL characters")
        real = Path(os.path.realpath(path))
        self._check_allowed(real, path)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)  # a FIFO never blocks
        try:
            fd = os.open(real, flags)
        except FileNotFoundError:
            raise ProtocolError(P.E_BAD_FRAME, f"no such file on the server: {path!r}") from None
        except OSError as exc:
            raise ProtocolError(P.E_BAD_FRAME, f"{path!r} could not be read: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            opened = _opened_path(fd)
            if opened is not None:
                real = opened
                self._check_allowed(real, path)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ProtocolError(P.E_BAD_FRAME, f"no such file on the server: {path!r} (not a regular file)")
            if st.st_size > self.max_bytes:
                raise ProtocolError(P.E_BAD_FRAME, f"{path!r} is {st.st_size} bytes, over this server's limit of "
                                                   f"{self.max_bytes} (max_file_bytes)")
            try:
                kind = sniff(f.read(8))
                if kind is None:
                    raise ProtocolError(P.E_BAD_FRAME, f"{path!r} is not an image this server reads "
                                                       f"({', '.join(FORMATS)})")
                check_file_complete(kind, f, st.st_size, repr(path))
            except OSError as exc:
                raise ProtocolError(P.E_BAD_FRAME, f"{path!r} could not be read: {exc.strerror}") from None
            yield real, st, (f"/proc/self/fd/{fd}" if opened is not None else str(real))

    @staticmethod
    def _header(source: str, path: str) -> ImageInfo:
        try:
            return read_info(source)
        except Exception as exc:  # noqa: BLE001
            raise ProtocolError(P.E_BAD_FRAME, f"{path!r} could not be read: "
                                               f"{str(exc).replace(source, path)}") from None

    def _within_budget(self, path: str, fn: Callable[[], T], lane: Lane) -> T:
        if self.seconds is None:
            return fn()
        with self._lock:
            if self._running[lane] >= self.max_hung:
                who = "this client" if lane[0] == "client" else f"{lane[0]} {lane[1]!r}"
                raise ProtocolError(P.E_BAD_FRAME, f"{path!r} not read: {self._running[lane]} earlier file reads "
                                                   f"for {who} are still hanging on the server's disks (a dead "
                                                   "mount?); try again later")
            if self._running.total() >= self.max_hung_total:
                raise ProtocolError(P.E_BAD_FRAME, f"{path!r} not read: {self.max_hung_total} file reads are still "
                                                   "hanging on this server's disks; try again later")
            self._running[lane] += 1
        done = threading.Event()
        out: dict = {}

        def run() -> None:
            try:
                out["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                out["error"] = exc
            finally:
                with self._lock:
                    self._running[lane] -= 1
                    if not self._running[lane]:
                        del self._running[lane]
                done.set()

        threading.Thread(target=run, name="mam2-file", daemon=True).start()
        if not done.wait(self.seconds):
            raise ProtocolError(P.E_BAD_FRAME, f"{path!r} took longer than {self.seconds:g} s to read "
                                               "(a slow or hung disk?): refused")
        if "error" in out:
            raise out["error"]
        return out["value"]


def file_digest(real: Path | str, st: os.stat_result) -> str:
    """What identifies a shared file (`SharedPlate.digest`): its real path, size, mtime and inode."""
    return hashlib.sha256(f"{real}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}".encode()).hexdigest()[:32]


def _check_unchanged(path: str, accepted: str, real: Path, st: os.stat_result | None) -> None:
    """bad_frame unless the file (`st`: its stat, None when it could not be taken) still has the digest
    it was accepted with."""
    if st is None or file_digest(real, st) != accepted:
        raise ProtocolError(P.E_BAD_FRAME, f"{path!r} changed since put_frames (its size, modification time or "
                                           "inode differ, or the path now leads to another file): its pixels are "
                                           "not those accepted; upload it again with put_frames")


def _opened_path(fd: int) -> Path | None:
    """The real path of the file open as `fd` (Linux: /proc/self/fd), or None where that cannot be told."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None


def check_file_complete(kind: str, f, size: int, name: str) -> None:
    """Raise bad_frame when an open EXR or PNG file `f` of `size` bytes is cut short."""
    if kind == "OpenEXR":
        try:
            check_complete(file_reader(f), size)
        except ExrLayoutError as exc:
            raise ProtocolError(P.E_BAD_FRAME, f"{name}: {exc}") from None
    elif kind == "PNG":
        f.seek(max(0, size - len(_PNG_END)))
        if f.read() != _PNG_END:
            raise ProtocolError(P.E_BAD_FRAME, f"{name}: the PNG file does not end with its IEND chunk: truncated")
