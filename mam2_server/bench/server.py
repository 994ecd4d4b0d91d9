"""`mam2 bench server`: what the server adds per frame, and its memory over a long shot.

Part 1, overhead. For each size, plates go to a `mam2 serve` subprocess three ways
(raw half buffers, EXR bytes, shared-disk paths) and come back as float32 alphas
from a `propagate` whose engine (`null_engine` below) only reads the frame: so
the time per frame is protocol + transport + spill to disk + read back + alpha
reply, i.e. all the server adds. It is set against the real engine's own time
per frame (`engine.run` on an in-memory source, as `mam2 matte` runs it).

Part 2, memory. A --long-frames shot of small frames is uploaded, propagated and
read back; the server's RSS is sampled (status op) along the way.

Part 3, soak (--soak-minutes M, off by default). --soak-clients clients x M minutes of
mixed uploads, prompts, propagations, cancels and malformed messages against one
server running --soak-engine (see `server_soak`): requests answered / lost / wrong,
the server's RSS, open files and threads.

    mam2 bench server --sizes 1920x1080,3840x2160 --frames 4 --engine classic
    mam2 bench server --long-frames 1000 --long-size 320x180 --sizes ''
    mam2 bench server --sizes '' --long-frames 0 --soak-minutes 30

Measured, never asserted.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from mam2_server.engines.base import Engine, EngineConfig, FrameResult


class NullEngine(Engine):
    """Reads each frame (so the server's spill + read-back is measured) and returns alpha 0."""

    name = "null"

    def run_pass(self, source, plan, prompts: Mapping) -> Iterator[FrameResult]:
        for frame in plan.frames:
            linear = source.linear(frame)
            yield FrameResult(frame, np.zeros(linear.shape[:2], np.float32))


def null_engine(config: EngineConfig) -> NullEngine:
    return NullEngine()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="1920x1080,3840x2160", help="comma-separated WxH ('' skips part 1)")
    parser.add_argument("--frames", type=int, default=4, help="frames per size and transport")
    parser.add_argument("--engine", default="classic", help="engine whose own time is the reference")
    parser.add_argument("--engine-frames", type=int, default=2, help="frames timed on the engine per size")
    parser.add_argument("--long-frames", type=int, default=1000, help="frames of the memory run (0 skips it)")
    parser.add_argument("--long-size", default="320x180", help="WxH of the memory run's frames")
    parser.add_argument("--soak-minutes", type=float, default=0.0, help="minutes of the soak run (0 skips it)")
    parser.add_argument("--soak-clients", type=int, default=3, help="clients of the soak run")
    parser.add_argument("--soak-engine", default="classic", help="engine of the soak run's server")
    parser.add_argument("--soak-size", default="96x64", help="WxH of the soak run's frames")


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def _plates(n: int, w: int, h: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.random((h, w, 3), dtype=np.float32) * 0.3
    out = []
    for i in range(n):
        img = base.copy()
        y0, x0 = h // 4, w // 4 + i * max(1, w // 200)
        img[y0:y0 + h // 2, x0:x0 + w // 3] += 0.6
        out.append(img)
    return out


class _Server:
    def __init__(self, cache: Path, engine: str | None = None) -> None:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{port}"
        engine_args = ["--engine", engine] if engine else ["--engine-factory", "mam2_server.bench.server:null_engine"]
        self.proc = subprocess.Popen([sys.executable, "-m", "mam2_server.cli", "serve", "--address", self.address,
                                      "--cache-dir", str(cache), *engine_args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from host_plugins.mam2_client import Client
        from host_plugins.mam2_client.client import wait_for_server
        self.client = Client(self.address, timeout=120, retries=1)
        with Client(self.address, timeout=1, retries=1) as probe:  # closed: open sockets block ctx.term()
            wait_for_server(probe, 60)

    def close(self) -> None:
        try:
            self.client.shutdown()
            self.proc.wait(30)
        except Exception:  # noqa: BLE001
            self.proc.kill()
        self.client.close()


def _disk_costs(w: int, h: int, tmp: Path, spill_compression: str = "none") -> dict[str, float]:
    """The server's own disk work per frame, timed in this process (median of 3)."""
    from mam2_server.server.store import ShotDisk
    disk = ShotDisk(tmp / "disk-costs", "x", spill_compression)
    disk.create()
    plate = _plates(1, w, h)[0].astype(np.float16)
    alpha = np.zeros((h, w), np.float32)
    alpha[h // 4:h * 3 // 4, w // 4:w // 2] = 1
    path = disk.put_frame(1, "0" * 32, plate, None)

    def median(fn) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return sorted(times)[1]

    out = {"spill raw frame (EXR write)": median(lambda: disk.put_frame(1, "0" * 32, plate, None)),
           "read stored frame": median(lambda: ShotDisk.read_frame(path)),
           "write alpha to cache": median(lambda: disk.save_alpha(1, "0" * 32, alpha))}
    disk.purge()
    return out


def _engine_time(name: str, plates: list[np.ndarray], frames: int) -> float:
    from mam2_server.engines import create_engine
    from mam2_server.io import ArraySource
    from mam2_server.prompts import Prompt
    h, w = plates[0].shape[:2]
    engine = create_engine(name)
    source = ArraySource(plates[:frames], frames=list(range(1, frames + 1)))
    prompt = Prompt(frame=1, box=(w / 4, h / 4, w / 4 + w / 3, h * 3 / 4))
    start = time.perf_counter()
    for _ in engine.run(source, [prompt]):
        pass
    return (time.perf_counter() - start) / frames


def _overhead(server: _Server, w: int, h: int, n: int, tmp: Path) -> dict[str, float]:
    from mam2_server.io import encode_image, write_image
    plates = [p.astype(np.float16) for p in _plates(n, w, h)]
    payloads = {
        "raw half": ("raw", {i + 1: p for i, p in enumerate(plates)}),
        "EXR bytes (half, zip)": ("exr", {i + 1: encode_image(p.astype(np.float32), channels=("R", "G", "B"),
                                                              pixel_type="half") for i, p in enumerate(plates)}),
    }
    paths = {}
    for i, p in enumerate(plates):
        paths[i + 1] = str(tmp / f"plate_{w}.{i + 1:04d}.exr")
        write_image(paths[i + 1], p.astype(np.float32), channels=("R", "G", "B"), pixel_type="half")
    payloads["shared path"] = ("path", paths)
    c = server.client
    out = {}
    for label, (encoding, frames) in payloads.items():
        shot = f"bench_{w}x{h}_{encoding}"
        c.open_shot(shot, first=1, last=n, width=w, height=h)
        c.add_prompt(shot, 1, box=(w / 4, h / 4, w / 2, h * 3 / 4))
        start = time.perf_counter()
        for f, value in frames.items():
            c.put_frames(shot, {f: value}, encoding=encoding)
        put = time.perf_counter() - start
        start = time.perf_counter()
        result = c.propagate(shot)
        prop = time.perf_counter() - start
        assert len(result.alphas) == n
        times = []
        for _ in range(5):  # a cached alpha back: EXR read + protocol + transport
            start = time.perf_counter()
            c.get_alpha(shot, [2])
            times.append(time.perf_counter() - start)
        c.close_shot(shot, purge=True)
        out[label] = (put / n, prop / n, sorted(times)[2])
    return out


def _hello_rt(server: _Server) -> float:
    times = []
    for _ in range(21):
        start = time.perf_counter()
        server.client.hello()
        times.append(time.perf_counter() - start)
    return sorted(times)[10]


def _memory(server: _Server, n: int, w: int, h: int) -> list[tuple[str, int]]:
    from host_plugins.mam2_client import Client
    c = server.client
    watcher = Client(server.address, timeout=60, retries=1)  # status while c is busy propagating
    samples = [("start", c.status()["rss_bytes"])]
    plates = _plates(8, w, h)
    c.open_shot("bench_long", first=1, last=n, width=w, height=h)
    c.add_prompt("bench_long", 1, box=(w / 4, h / 4, w / 2, h * 3 / 4))
    every = max(1, n // 4)
    batch_size = max(1, min(50, every))
    for start in range(1, n + 1, batch_size):
        end = min(n, start + batch_size - 1)
        c.put_frames("bench_long", {f: plates[f % 8].astype(np.float16) for f in range(start, end + 1)})
        if end // every != (start - 1) // every or end == n:
            samples.append((f"after put {end}", c.status()["rss_bytes"]))
    done = []
    c.propagate("bench_long", on_alpha=lambda a: done.append(a.frame),
                on_progress=lambda d, t, f: samples.append((f"propagate {d}", watcher.status()["rss_bytes"]))
                if d % every == 0 else None)
    samples.append(("after propagate", c.status()["rss_bytes"]))
    for start in range(1, n + 1, 32):
        c.get_alpha("bench_long", range(start, min(n, start + 31) + 1))
    samples.append(("after get_alpha of all", c.status()["rss_bytes"]))
    watcher.close()
    return samples


def _soak(args: argparse.Namespace, tmp: Path) -> None:
    from mam2_server.bench.server_soak import report, run_soak
    server = _Server(tmp / "soak-cache", engine=args.soak_engine)
    try:
        print(f"\nsoak: engine {args.soak_engine}, {args.soak_size} frames, server pid {server.proc.pid}; "
              "samples: minute, RSS MiB, open files, threads", flush=True)
        result = run_soak(server.address, server.proc.pid, args.soak_minutes * 60, tmp, clients=args.soak_clients,
                          size=_size(args.soak_size), sample_every=min(60.0, max(1.0, args.soak_minutes * 2)),
                          on_sample=lambda s: print(f"  {s.seconds / 60:6.1f} {s.rss_bytes / 2**20:8.1f} "
                                                    f"{s.open_files:5d} {s.threads:4d}", flush=True))
        print("\n".join(report(result)))
    finally:
        server.close()


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="mam2-bench-server-"))
    try:
        if args.sizes.strip() or args.long_frames:
            _overhead_and_memory(args, tmp)
        if args.soak_minutes:
            _soak(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _overhead_and_memory(args: argparse.Namespace, tmp: Path) -> None:
    server = _Server(tmp / "cache")
    try:
        print(f"mam2 bench server: {os.cpu_count()} CPUs, server {server.address}, cache {tmp / 'cache'}")
        sizes = [_size(s) for s in args.sizes.split(",") if s.strip()]
        if sizes:
            _overhead(server, 64, 48, 2, tmp)  # warm-up: imports and OCIO set-up in the server
            print(f"hello round trip (protocol only): {_hello_rt(server) * 1000:.2f} ms")
        for w, h in sizes:
            engine_s = _engine_time(args.engine, _plates(args.engine_frames, w, h), args.engine_frames)
            print(f"\n{w}x{h}: engine {args.engine} {engine_s * 1000:.0f} ms/frame "
                  f"(engine.run, {args.engine_frames} frames)")
            disk = _disk_costs(w, h, tmp)
            print("  server disk work per frame (in-process): " +
                  ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in disk.items()))
            own = {"raw half": sum(disk.values()),
                   "EXR bytes (half, zip)": disk["read stored frame"] + disk["write alpha to cache"],
                   "shared path": disk["read stored frame"] + disk["write alpha to cache"]}
            print(f"  {'transport':24s} {'put ms':>8s} {'propagate ms':>13s} {'total ms':>9s} {'% engine':>9s}"
                  f" {'of which disk':>14s} {'protocol+transport':>19s} {'% engine':>9s}")
            for label, (put, prop, get_rt) in _overhead(server, w, h, args.frames, tmp).items():
                total = put + prop
                rest = max(0.0, total - own[label])
                print(f"  {label:24s} {put * 1000:8.1f} {prop * 1000:13.1f} {total * 1000:9.1f} "
                      f"{100 * total / engine_s:8.1f}% {own[label] * 1000:14.1f} {rest * 1000:19.1f} "
                      f"{100 * rest / engine_s:8.1f}%   get_alpha RT {get_rt * 1000:.1f} ms")
        if args.long_frames:
            w, h = _size(args.long_size)
            print(f"\nmemory: {args.long_frames} frames of {w}x{h} half (server RSS via status)")
            for label, rss in _memory(server, args.long_frames, w, h):
                print(f"  {label:28s} {rss / 2**20:8.1f} MiB")
    finally:
        server.close()
