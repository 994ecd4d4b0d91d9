"""Helpers for the server tests (no tests here): a tiny deterministic engine, clips, server processes.

`fast_engine` is loaded by `mam2 serve --engine-factory test_server_support:fast_engine`
(tests/ on PYTHONPATH); MAM2_TEST_FRAME_DELAY (seconds) slows every frame down so
that cancel and kill -9 can land mid-propagate, MAM2_TEST_FAIL_FRAME makes the engine
fail on that frame, and while the file MAM2_TEST_BUG_FILE exists the engine's `chained`
attribute raises (a bug outside propagate: the server's `internal` error).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from mam2_server.engines.base import Engine, EngineConfig, FrameResult
from mam2_server.engines.plan import Pass
from mam2_server.prompts import Prompt

ROOT = Path(__file__).resolve().parents[1]
W, H = 64, 48


class FastEngine(Engine):
    """alpha = 0.5 * display luminance + 0.5 inside the keyframe's box (or near its points)."""

    name = "testfast"

    def __init__(self, delay: float = 0.0, fail_frame: int | None = None, bug_file: str | None = None) -> None:
        self.delay = delay
        self.fail_frame = fail_frame
        self.bug_file = bug_file

    @property
    def chained(self) -> bool:
        if self.bug_file and os.path.exists(self.bug_file):
            raise RuntimeError("test engine bug: 'chained' is broken")
        return False

    def run_pass(self, source, plan: Pass, prompts: Mapping[int, Prompt]) -> Iterator[FrameResult]:
        prompt = prompts[plan.keyframe]
        region = np.zeros((source.height, source.width), np.float32)
        box = prompt.clipped_box(source.width, source.height)
        if box is not None:
            x0, y0, x1, y1 = box
            region[y0:y1, x0:x1] = 1.0
        for p in prompt.points:
            region[max(0, int(p.y) - 4):int(p.y) + 4, max(0, int(p.x) - 4):int(p.x) + 4] = float(p.label)
        for frame in plan.frames:
            if self.delay:
                time.sleep(self.delay)
            if frame == self.fail_frame:
                raise RuntimeError(f"test engine told to fail on frame {frame}")
            luma = source.display(frame).mean(axis=2)
            alpha = np.clip(0.5 * luma + 0.5 * region + 0.01 * (frame - plan.keyframe), 0, 1).astype(np.float32)
            yield FrameResult(frame, alpha)


def fast_engine(config: EngineConfig) -> FastEngine:
    fail = os.environ.get("MAM2_TEST_FAIL_FRAME")
    return FastEngine(float(os.environ.get("MAM2_TEST_FRAME_DELAY", "0")), int(fail) if fail else None,
                      os.environ.get("MAM2_TEST_BUG_FILE"))


def clip(n: int = 6, seed: int = 0, w: int = W, h: int = H) -> list[np.ndarray]:
    """n (h, w, 3) float32 scene-linear frames: a bright square moving over noise."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        img = (rng.random((h, w, 3)) * 0.2).astype(np.float32)
        img[10:30, 8 + 2 * i:28 + 2 * i] += 0.7
        frames.append(img)
    return frames


def owner_socket(address: str, token_file: Path | None = None):
    """A raw DEALER socket that logs in as the server's owner (PLAIN, the token from `token_file`)."""
    import zmq

    from host_plugins.mam2_client.auth import read_token, use_token
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    use_token(sock, read_token(token_file))
    sock.connect(address)
    return sock


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`mam2 serve` in a subprocess on a random loopback port (host "[::1]" for IPv6).

    token_file: the server's --token-file, which `client()` then reads too (default: $MAM2_TOKEN_FILE,
    which tests/conftest.py points at a file of the pytest session)."""

    def __init__(self, cache_dir: Path, *, engine: str | None = None, delay: float = 0.0,
                 extra: tuple[str, ...] = (), port: int | None = None, env: dict | None = None,
                 host: str = "127.0.0.1", token_file: Path | None = None) -> None:
        self.port = port or free_port()
        self.address = f"tcp://{host}:{self.port}"
        self.cache_dir = cache_dir
        self.token_file = token_file
        if token_file is not None:
            extra = (*extra, "--token-file", str(token_file))
        self.log_path = cache_dir.parent / f"serve-{self.port}.log"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
                   MAM2_TEST_FRAME_DELAY=str(delay), **(env or {}))
        engine_args = ["--engine", engine] if engine else ["--engine-factory", "test_server_support:fast_engine"]
        self.cmd = [sys.executable, "-m", "mam2_server.cli", "-v", "serve", "--address", self.address,
                    "--cache-dir", str(cache_dir), *engine_args, *extra]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def __enter__(self) -> "ServerProcess":
        """Wait until it answers (stopping it if it never does); `with` stops it on the way out."""
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def client(self, **kwargs):
        from host_plugins.mam2_client import Client
        kwargs.setdefault("timeout", 20.0)
        kwargs.setdefault("token_file", self.token_file)
        return Client(self.address, **kwargs)

    def wait_ready(self, seconds: float = 60.0) -> None:
        from host_plugins.mam2_client import Client, ServerUnavailable
        client = Client(self.address, timeout=0.5, retries=1, token_file=self.token_file)
        deadline = time.monotonic() + seconds
        try:
            while True:
                try:
                    client.hello()
                    return
                except ServerUnavailable:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"server did not start: {self.tail()}") from None
        finally:
            client.close()

    def tail(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode


@contextmanager
def in_process_server(tmp_path: Path, engine: FastEngine | None = None, **config):
    """A Server on a thread of this process (so tests can slow its disk down); yields a Client factory
    whose `.address` and `.token_file` let raw sockets in too."""
    from mam2_server.server import Server, ServerConfig
    cfg = ServerConfig(address=f"tcp://127.0.0.1:{free_port()}", cache_dir=tmp_path / "cache",
                       token_file=tmp_path / "token", **config)
    server = Server(engine or FastEngine(), cfg)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def client(**kwargs):
        from host_plugins.mam2_client import Client
        return Client(cfg.address, token_file=tmp_path / "token", **{"timeout": 20.0, **kwargs})
    client.address, client.token_file = cfg.address, tmp_path / "token"
    try:
        with client(timeout=0.5, retries=40) as c:
            c.hello()
        yield client
    finally:
        server.stop()
        thread.join(30)


def direct_alphas(engine: Engine, frames: list[np.ndarray], prompts: list[Prompt], first: int = 1) -> dict:
    from mam2_server.io import ArraySource
    source = ArraySource(frames, frames=list(range(first, first + len(frames))))
    return {r.frame: r.alpha for r in engine.run(source, prompts)}
