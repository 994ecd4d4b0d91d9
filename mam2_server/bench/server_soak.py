"""The soak run of `mam2 bench server --soak-minutes M`: clients x M minutes against one server.

Each client (a thread with its own `mam2_client.Client` and a raw DEALER socket) owns
a shot and loops over a random mix: uploads (raw, EXR bytes, shared paths), prompts
(box, points, masks, removals), propagations (some cancelled mid-way), get_alpha,
status, close + purge + reopen, and malformed messages (garbage, wrong version,
unknown op, a token in the header, too many buffers, wrong sizes, truncated EXR, relative paths,
stray buffers, frames outside the shot), each of which must get its own error code.
A sampler records the server's RSS, open files and threads. A request is *answered*
when it gets the reply (or, for a malformed one, the error) it should, *wrong* when it
gets another, *lost* when nothing comes within the timeout.
"""
from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import msgpack
import numpy as np
import zmq

from host_plugins.mam2_client import Client, MAM2Error, ServerError, ServerUnavailable, wire
from host_plugins.mam2_client.auth import read_token, use_token

ACTIONS = {"upload": 25, "prompt": 15, "propagate": 20, "get_alpha": 15, "malformed": 15, "status": 5,
           "reopen": 5}


@dataclass
class Sample:
    seconds: float
    rss_bytes: int
    open_files: int
    threads: int


@dataclass
class SoakResult:
    seconds: float
    clients: int
    sent: Counter = field(default_factory=Counter)
    answered: Counter = field(default_factory=Counter)
    lost: Counter = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    def growth(self) -> tuple[int, int]:
        """Growth of RSS bytes from the sample after the first tenth of the run (warm-up) to the last, and
        of open files from before the clients connected to after they left."""
        base = next((s for s in self.samples if s.seconds >= self.seconds / 10), self.samples[0])
        first, last = self.samples[0], self.samples[-1]
        return last.rss_bytes - base.rss_bytes, last.open_files - first.open_files


def process_sample(pid: int, start: float) -> Sample:
    """RSS, open file descriptors and threads of process `pid` (Linux /proc)."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return Sample(time.monotonic() - start, int(status["VmRSS"].split()[0]) * 1024,
                  len(list(Path(f"/proc/{pid}/fd").iterdir())), int(status["Threads"]))


def run_soak(address: str, pid: int, seconds: float, workdir: Path, *, clients: int = 3,
             size: tuple[int, int] = (96, 64), frames: int = 16, seed: int = 0, timeout: float = 120.0,
             sample_every: float = 30.0, on_sample: Callable[[Sample], None] | None = None) -> SoakResult:
    """Run the soak against the server `pid` at `address` (loopback) for `seconds`; returns the tally."""
    from mam2_server.bench.server import _plates
    from mam2_server.io import encode_image, write_image
    w, h = size
    plates = _plates(8, w, h, seed)
    paths = []
    for i, plate in enumerate(plates):
        paths.append(str(workdir / f"soak_plate.{i:04d}.exr"))
        write_image(paths[-1], plate, channels=("R", "G", "B"), pixel_type="half")
    exrs = [encode_image(p, channels=("R", "G", "B"), pixel_type="half") for p in plates]
    result = SoakResult(seconds=seconds, clients=clients)
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + seconds

    def count(action: str, outcome: str, detail: str = "") -> None:
        with lock:
            result.sent[action] += 1
            if outcome == "answered":
                result.answered[action] += 1
            elif outcome == "lost":
                result.lost[action] += 1
            else:
                result.wrong.append(f"{action}: {detail}"[:300])

    def client_loop(index: int) -> None:
        worker = _SoakClient(address, f"soak{index}", (w, h), frames, plates, exrs, paths, random.Random(seed + index),
                             timeout)
        try:
            worker.setup()
            while time.monotonic() < deadline:
                action = worker.rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
                count(action, *worker.do(action))
        except MAM2Error as exc:  # setup failed: the rest of this client's run is lost
            count("setup", "lost" if isinstance(exc, ServerUnavailable) else "wrong", str(exc))
        finally:
            worker.close()

    result.samples.append(process_sample(pid, start))  # before any client connects
    threads = [threading.Thread(target=client_loop, args=(i,), name=f"soak-client-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        sample = process_sample(pid, start)
        result.samples.append(sample)
        if on_sample is not None:
            on_sample(sample)
        next_at = time.monotonic() + sample_every
        while any(t.is_alive() for t in threads) and time.monotonic() < next_at:
            time.sleep(0.2)
    for t in threads:
        t.join()
    time.sleep(1.0)  # the server notices the clients' closed connections
    result.samples.append(process_sample(pid, start))
    return result


class _SoakClient:
    """One client's shot and the actions on it; `do` returns (outcome, detail)."""

    def __init__(self, address: str, shot: str, size: tuple[int, int], frames: int, plates: list, exrs: list,
                 paths: list, rng: random.Random, timeout: float) -> None:
        self.shot, self.size, self.frames = shot, size, frames
        self.plates, self.exrs, self.paths, self.rng = plates, exrs, paths, rng
        self.client = Client(address, timeout=timeout, retries=1, frame_timeout=timeout)
        self.raw = zmq.Context.instance().socket(zmq.DEALER)
        self.raw.setsockopt(zmq.LINGER, 0)
        use_token(self.raw, read_token())  # logs in as the owner, as `Client` does
        self.raw.connect(address)
        self.timeout = timeout
        self.keyframes: set[int] = set()

    def close(self) -> None:
        self.client.close()
        self.raw.close()

    def setup(self) -> None:
        w, h = self.size
        self.client.open_shot(self.shot, first=1, last=self.frames, width=w, height=h)
        self.client.put_frames(self.shot, {f: self.plates[f % 8].astype(np.float16) for f in range(1, self.frames + 1)})
        self.client.add_prompt(self.shot, 1, box=(w / 4, h / 4, w / 2, h * 3 / 4))
        self.keyframes = {1}

    def do(self, action: str) -> tuple[str, str]:
        try:
            if action == "malformed":
                return self._malformed()
            getattr(self, f"_{action}")()
            return "answered", ""
        except ServerUnavailable as exc:
            return "lost", str(exc)
        except (ServerError, AssertionError) as exc:
            return "wrong", f"{type(exc).__name__}: {exc}"

    # -- well-formed work ------------------------------------------------------------------
    def _upload(self) -> None:
        frames = self.rng.sample(range(1, self.frames + 1), self.rng.randint(1, 4))
        encoding = self.rng.choice([wire.ENC_RAW, wire.ENC_EXR, wire.ENC_PATH])
        pick = {wire.ENC_RAW: lambda f: self.plates[f % 8], wire.ENC_EXR: lambda f: self.exrs[f % 8],
                wire.ENC_PATH: lambda f: self.paths[f % 8]}[encoding]
        assert sorted(self.client.put_frames(self.shot, {f: pick(f) for f in frames}, encoding=encoding)) == sorted(frames)

    def _prompt(self) -> None:
        w, h = self.size
        frame = self.rng.randint(1, self.frames)
        if frame in self.keyframes and len(self.keyframes) > 1 and self.rng.random() < 0.4:
            self.client.remove_prompt(self.shot, frame)
            self.keyframes.discard(frame)
            return
        x0, y0 = self.rng.uniform(0, w / 2), self.rng.uniform(0, h / 2)
        mask = None
        if self.rng.random() < 0.3:
            mask = np.zeros((h, w), np.float32)
            mask[int(y0):int(y0) + h // 3, int(x0):int(x0) + w // 3] = 1
        self.client.add_prompt(self.shot, frame, box=(x0, y0, x0 + w / 3, y0 + h / 3),
                               points=[(x0 + 2, y0 + 2, 1)], mask=mask)
        self.keyframes.add(frame)

    def _propagate(self) -> None:
        stop_after = self.rng.randint(1, 4) if self.rng.random() < 0.33 else None
        result = self.client.propagate(self.shot, include_cached=self.rng.random() < 0.2,
                                       on_progress=None if stop_after is None else
                                       lambda done, total, frame: done < stop_after)
        assert result.cancelled or not set(range(1, self.frames + 1)) - set(result.computed) - set(result.cached)

    def _get_alpha(self) -> None:
        found, missing = self.client.get_alpha(self.shot, range(1, self.frames + 1))
        assert sorted([*found, *missing]) == list(range(1, self.frames + 1))

    def _status(self) -> None:
        if self.rng.random() < 0.5:
            self.client.status()
        else:
            self.client.hello()

    def _reopen(self) -> None:
        self.client.close_shot(self.shot, purge=True)
        self.setup()

    # -- malformed messages: each must get its own error code ------------------------------------
    def _malformed(self) -> tuple[str, str]:
        w, h = self.size
        head = {"v": 1, "id": uuid.uuid4().hex}
        raw = {"frame": 1, "encoding": "raw", "buffer": 1, "dtype": "<f4", "shape": [h, w, 3]}
        good = self.plates[0].tobytes()
        cases = [
            ([b"\xc1" + bytes(self.rng.randrange(256) for _ in range(20))], wire.E_BAD_MESSAGE),
            ([msgpack.packb([1, 2, 3])], wire.E_BAD_MESSAGE),
            ([msgpack.packb({**head, "v": 1.0, "op": "hello"})], wire.E_BAD_VERSION),
            ([msgpack.packb({**head, "op": "format_disk"})], wire.E_UNKNOWN_OP),
            ([msgpack.packb({**head, "op": "shutdown", "token": "x"})], wire.E_BAD_MESSAGE),  # logins are handshakes
            ([msgpack.packb({**head, "op": "status"}), *[b""] * (wire.MAX_BUFFERS + 1)], wire.E_TOO_LARGE),
            ([msgpack.packb({**head, "op": "status"}), b"stray"], wire.E_BAD_MESSAGE),
            ([msgpack.packb({**head, "op": "put_frames", "shot": self.shot, "frames": [raw]}), good[:-4]],
             wire.E_BAD_FRAME),
            ([msgpack.packb({**head, "op": "put_frames", "shot": self.shot, "frames": [
                {"frame": 1, "encoding": "exr", "buffer": 1}]}), self.exrs[0][:-64]], wire.E_BAD_FRAME),
            ([msgpack.packb({**head, "op": "put_frames", "shot": self.shot, "frames": [
                {"frame": 1, "encoding": "path", "path": "plates/relative.exr"}]})], wire.E_BAD_FRAME),
            ([msgpack.packb({**head, "op": "put_frames", "shot": self.shot, "frames": [{**raw, "frame": 10 ** 6}]}),
              good], wire.E_BAD_FRAME),
            ([msgpack.packb({**head, "op": "hello", "client": msgpack.ExtType(1, b"x")})], wire.E_BAD_MESSAGE),
        ]
        message, code = self.rng.choice(cases)
        self.raw.send_multipart(message)
        while True:
            if not self.raw.poll(int(self.timeout * 1000)):
                return "lost", code
            reply = msgpack.unpackb(self.raw.recv_multipart()[0])
            if reply.get("id") in (head["id"], None):  # else a late answer to one given up on
                break
        if reply.get("kind") == wire.KIND_ERROR and reply.get("code") == code:
            return "answered", ""
        return "wrong", f"expected {code}, got {reply.get('kind')} {reply.get('code')}: {reply.get('message')}"


def report(result: SoakResult) -> list[str]:
    """The lines `mam2 bench server` prints for a soak run."""
    rss = [s.rss_bytes for s in result.samples]
    fds = [s.open_files for s in result.samples]
    growth_rss, growth_fds = result.growth()
    length = f"{result.seconds / 60:g} min" if result.seconds >= 60 else f"{result.seconds:g} s"
    lines = [f"soak: {result.clients} clients x {length} against one server",
             f"  {'action':10s} {'sent':>7s} {'answered':>9s} {'lost':>5s} {'wrong':>6s}"]
    wrong = Counter(w.split(":", 1)[0] for w in result.wrong)
    for action in sorted(result.sent):
        lines.append(f"  {action:10s} {result.sent[action]:7d} {result.answered[action]:9d} "
                     f"{result.lost[action]:5d} {wrong[action]:6d}")
    total = sum(result.sent.values())
    lines.append(f"  {'all':10s} {total:7d} {sum(result.answered.values()):9d} {sum(result.lost.values()):5d} "
                 f"{len(result.wrong):6d}")
    lines.append(f"  server RSS MiB: first {rss[0] / 2**20:.1f}, max {max(rss) / 2**20:.1f}, last {rss[-1] / 2**20:.1f} "
                 f"(after the first tenth: {growth_rss / 2**20:+.1f}); open files: before the clients {fds[0]}, "
                 f"max {max(fds)}, after they left {fds[-1]} ({growth_fds:+d}); threads: before "
                 f"{result.samples[0].threads}, after {result.samples[-1].threads}")
    lines += [f"  wrong: {w}" for w in result.wrong[:10]]
    return lines
