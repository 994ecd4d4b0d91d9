"""Running a batch: resume, one shot after another, failures as records, clean stop (see `mam2_server.batch`)."""
from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence, TextIO

from mam2_server.engines import Engine, EngineConfig, create_engine
from mam2_server.io.colour import ColourConverter
from mam2_server.io.image import read_info
from mam2_server.io.sequence import SequencePattern, format_frame_range
from mam2_server.io.source import SequenceSource
from mam2_server.batch.manifest import Shot, check_shot
from mam2_server.shot import matte_shot

log = logging.getLogger(__name__)

def _frame_done(pattern: SequencePattern, frame: int) -> bool:
    path = pattern.path(frame)
    if not path.is_file():
        return False
    try:
        read_info(path)
    except (OSError, ValueError):  # unreadable or truncated: not done, it is rewritten (atomically)
        return False
    return True


def finished_frames(shot: Shot, frames: Sequence[int]) -> list[int]:
    """The frames whose output files (alpha, and RGBA with `rgba`) exist with a readable header."""
    patterns = [SequencePattern(shot.output)] + ([SequencePattern(shot.rgba)] if shot.rgba else [])
    return [f for f in frames if all(_frame_done(p, f) for p in patterns)]


@dataclass
class ShotResult:
    name: str
    status: str  # "done", "skipped", "failed", "interrupted"
    frames: list[int] = field(default_factory=list)  # the shot's frames
    written: list[int] = field(default_factory=list)
    kept: int = 0  # frames already there (resume)
    seconds: float = 0.0
    engine: str = ""
    output: str = ""
    error: str | None = None

    @property
    def seconds_per_frame(self) -> float:
        return self.seconds / max(1, len(self.written))

    def record(self) -> dict:
        return {"shot": self.name, "status": self.status, "frames": format_frame_range(self.frames),
                "frame_count": len(self.frames), "written": len(self.written), "kept": self.kept,
                "seconds": round(self.seconds, 3), "seconds_per_frame": round(self.seconds_per_frame, 4),
                "engine": self.engine, "output": self.output, "error": self.error,
                "host": socket.gethostname(), "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def line(self) -> str:
        span = format_frame_range(self.frames) or "-"
        if self.status == "failed":
            return f"{self.name}: failed: {self.error}"
        if self.status == "skipped":
            return f"{self.name}: skipped, all {len(self.frames)} frames ({span}) already done"
        kept = f", {self.kept} already done" if self.kept else ""
        return (f"{self.name}: {self.status}, {len(self.written)} frames written of {len(self.frames)} ({span})"
                f"{kept} in {self.seconds:.1f} s, {self.seconds_per_frame:.2f} s/frame [{self.engine}]")


class _Stoppable:
    """Wraps an engine: once `stop` is set, ends the run after the frame being written."""

    def __init__(self, engine: Engine, stop: threading.Event) -> None:
        self.engine, self.stop, self.name = engine, stop, engine.name

    def run(self, source, prompts, only=None) -> Iterator:
        for result in self.engine.run(source, prompts, only=only):
            yield result  # matte_shot writes it before asking for the next one
            if self.stop.is_set():
                return


class _StopOnInterrupt:
    """First Ctrl-C sets `stop` (finish the current frame, then stop); a second one interrupts at once."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop, self.previous = stop, None

    def _handle(self, signum, frame) -> None:
        self.stop.set()
        print("mam2 batch: stopping after the current frame (Ctrl-C again to abort now)", file=sys.stderr)
        signal.signal(signal.SIGINT, self.previous or signal.default_int_handler)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


@dataclass
class BatchReport:
    results: list[ShotResult] = field(default_factory=list)
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.count("failed") else 0

    def summary(self) -> str:
        failed = [r.name for r in self.results if r.status == "failed"]
        frames = sum(len(r.written) for r in self.results)
        seconds = sum(r.seconds for r in self.results)
        text = (f"{len(self.results)} shots: {self.count('done')} done, {self.count('skipped')} skipped, "
                f"{len(failed)} failed; {frames} frames written in {seconds:.1f} s")
        if failed:
            text += f"; failed: {', '.join(failed)}"
        if self.interrupted:
            text += "; interrupted"
        return text


def run_batch(shots: Sequence[Shot], *, resume: bool = True, progress: bool = True,
              jobs_log: str | Path | None = None, echo: Callable[[str, bool], None] | None = None,
              stop: threading.Event | None = None) -> BatchReport:
    """Matte `shots` one after the other; a failing shot is recorded and the batch goes on.

    echo(line, is_error) gets one line per shot; jobs_log gets one JSON record per shot (appended).
    Setting `stop` (Ctrl-C does) ends the batch after the frame being written.
    """
    echo = echo or (lambda line, error: print(f"mam2 batch: {line}", file=sys.stderr if error else sys.stdout))
    stop = stop or threading.Event()
    engines: dict[EngineConfig, Engine] = {}
    report = BatchReport()
    with contextlib.ExitStack() as stack:
        log_file: TextIO | None = None
        if jobs_log:
            Path(jobs_log).parent.mkdir(parents=True, exist_ok=True)
            log_file = stack.enter_context(open(jobs_log, "a", encoding="utf-8"))
        with _StopOnInterrupt(stop):
            for shot in shots:
                if stop.is_set():
                    report.interrupted = True
                    break
                result = _run_shot(shot, engines, resume=resume, progress=progress, stop=stop)
                report.results.append(result)
                echo(result.line(), result.status == "failed")
                if log_file is not None:
                    log_file.write(json.dumps(result.record()) + "\n")
                    log_file.flush()
                if result.status == "interrupted":
                    report.interrupted = True
                    break
    return report


def _run_shot(shot: Shot, engines: dict[EngineConfig, Engine], *, resume: bool, progress: bool,
              stop: threading.Event) -> ShotResult:
    result = ShotResult(name=shot.name, status="failed", engine=shot.engine.name, output=shot.output,
                        frames=list(shot.frames or []))
    start = time.perf_counter()
    try:
        problems = check_shot(shot)
        if problems:
            raise ValueError("; ".join(problems))
        source = SequenceSource(shot.input, frames=shot.frames, colour=ColourConverter(colorspace=shot.colorspace))
        result.frames = list(source.frames)
        only = None
        if resume:
            done = finished_frames(shot, source.frames)
            result.kept = len(done)
            if len(done) == len(source.frames):
                result.status = "skipped"
                result.seconds = time.perf_counter() - start
                return result
            if done:
                only = sorted(set(source.frames) - set(done))
        engine = engines.get(shot.engine)
        if engine is None:
            engine = engines[shot.engine] = create_engine(shot.engine)
        matte = matte_shot(source, shot.prompts, _Stoppable(engine, stop), shot.output,
                           only=only, progress=progress, rgba=shot.rgba)
        result.written = matte.written
        expected = len(only) if only is not None else len(source.frames)
        result.status = "interrupted" if stop.is_set() and len(matte.written) < expected else "done"
    except KeyboardInterrupt:
        stop.set()
        result.status = "interrupted"
    except Exception as exc:  # one shot's failure must not stop the batch
        log.debug("shot %s failed", shot.name, exc_info=True)
        result.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, (ValueError, OSError)) else str(exc)
    result.seconds = time.perf_counter() - start
    return result
