"""Running a batch: resume, one shot after another, failures as records, clean stop (see `mam2_server.batch`)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Collection, Iterator, Mapping, Sequence, TextIO

from mam2_server.engines import Engine, EngineConfig, create_engine
from mam2_server.engines.identity import content_digest
from mam2_server.io.colour import ColourConverter
from mam2_server.io.exr_layout import check_file
from mam2_server.io.image import read_info
from mam2_server.io.sequence import SequencePattern, format_frame_range
from mam2_server.io.source import SequenceSource
from mam2_server.batch.manifest import Shot, check_shot
from mam2_server.batch.units import frames_to_compute
from mam2_server.shot import MatteReport, matte_shot

log = logging.getLogger(__name__)

FileStamp = tuple[int, int]  # (inode, mtime_ns): an atomic rename always gives a new inode


def file_stamp(path: str | Path) -> FileStamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


RECIPE = "mam2/recipe"  # header attribute of every file a batch writes: what made it (`recipe`)


def recipe(shot: Shot) -> str:
    """Digest of what a shot's mattes are made from besides the plates: engine, the weights' content
    (not their path: a farm may mount them elsewhere), colour space and prompts. A frame on disk with
    another recipe is matted again (the manifest changed)."""
    checkpoint = shot.engine.checkpoint
    weights = content_digest(checkpoint) if checkpoint and Path(checkpoint).expanduser().is_file() else None
    h = hashlib.sha256(json.dumps([shot.engine.name, weights, shot.colorspace]).encode())
    for prompt in sorted(shot.prompts, key=lambda p: p.frame):
        h.update(prompt.digest())
    return h.hexdigest()[:16]


def _file_state(path: Path, before: Mapping[str, FileStamp] | None, made_by: str | None) -> str:
    """"done", "missing" (absent, unreadable, or the file of an earlier run this one has yet to replace)
    or "stale" (it reads, but records another recipe than `made_by`; files without one count as done)."""
    if not path.is_file():
        return "missing"
    if before is not None and file_stamp(path) == before.get(str(path), ()):
        return "missing"  # the file of an earlier run, not yet replaced by this one
    try:
        info = read_info(path)
        if path.suffix.lower() == ".exr":
            check_file(path)  # a header reads from a file cut short (a copy interrupted): every chunk there?
    except (OSError, ValueError):  # unreadable or truncated: not done, it is rewritten (atomically)
        return "missing"
    found = info.metadata.get(RECIPE)
    return "stale" if made_by is not None and found is not None and found != made_by else "done"


def output_paths(shot: Shot, frame: int) -> list[Path]:
    """The files a finished frame has: its alpha, and its RGBA with "rgba"."""
    return [SequencePattern(p).path(frame) for p in (shot.output, shot.rgba) if p]


def frame_states(shot: Shot, frames: Sequence[int], before: Mapping[str, FileStamp] | None = None,
                 made_by: str | None = None) -> dict[int, list[str]]:
    """frame -> the state (`_file_state`) of each of its output files, alpha first; `made_by`: the
    shot's `recipe`, when the caller has it already."""
    made_by = made_by or recipe(shot)
    return {f: [_file_state(path, before, made_by) for path in output_paths(shot, f)] for f in frames}


def finished_frames(shot: Shot, frames: Sequence[int], before: Mapping[str, FileStamp] | None = None) -> list[int]:
    """The frames whose output files (alpha, and RGBA with `rgba`) exist with a readable header made
    from the shot's current recipe.

    With `before` (stamps of the files as they were when this run began), only files replaced
    since count: a run that recomputes everything (no resume) and is retried after a crash
    still writes each frame once.
    """
    return [f for f, states in frame_states(shot, frames, before).items() if all(s == "done" for s in states)]


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
    hosts: list[str] = field(default_factory=lambda: [socket.gethostname()])  # where it ran
    chunks: int = 1  # work units it was split into (cluster runs)
    nodes: list[str] = field(default_factory=list)  # Ray node ids (cluster runs)
    retried: int = 0  # chunks Ray ran again after their worker died (cluster runs)

    @property
    def seconds_per_frame(self) -> float:
        return self.seconds / max(1, len(self.written))

    def record(self) -> dict:
        return {"shot": self.name, "status": self.status, "frames": format_frame_range(self.frames),
                "frame_count": len(self.frames), "written": len(self.written), "kept": self.kept,
                "seconds": round(self.seconds, 3), "seconds_per_frame": round(self.seconds_per_frame, 4),
                "engine": self.engine, "output": self.output, "error": self.error,
                "host": ",".join(sorted(set(self.hosts))), "chunks": self.chunks,
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                **({"nodes": self.nodes, "retried": self.retried} if self.nodes else {})}

    def line(self) -> str:
        span = format_frame_range(self.frames) or "-"
        if self.status == "failed":
            return f"{self.name}: failed: {self.error}"
        if self.status == "skipped":
            return f"{self.name}: skipped, all {len(self.frames)} frames ({span}) already done"
        kept = f", {self.kept} already done" if self.kept else ""
        return (f"{self.name}: {self.status}, {len(self.written)} frames written of {len(self.frames)} ({span})"
                f"{kept} in {self.seconds:.1f} s, {self.seconds_per_frame:.2f} s/frame [{self.engine}]")


class _BatchEngine:
    """Wraps an engine for a batch: yields only the frames in `only`, computed as in a whole run
    (`units.frames_to_compute`), and once `stop` is set ends after the frame being written."""

    def __init__(self, engine: Engine, stop: threading.Event) -> None:
        self.engine, self.stop, self.name = engine, stop, engine.name

    def run(self, source, prompts, only=None) -> Iterator:
        compute = frames_to_compute(source.frames, prompts, only, continued=self.engine.passes_continue)
        for result in self.engine.run(source, prompts, only=compute):
            if only is None or result.frame in only:
                yield result  # matte_shot writes it before asking for the next one
            if self.stop.is_set():
                return


class StopOnInterrupt:
    """First Ctrl-C (or SIGTERM, which farms send to cancel a task) sets `stop`: finish the current
    frame, then stop; a second one interrupts at once (KeyboardInterrupt)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, stop: threading.Event,
                 message: str = "stopping after the current frame (Ctrl-C again to abort now)") -> None:
        self.stop, self.message, self.previous = stop, message, {}

    def _handle(self, signum, frame) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        print(f"mam2 batch: {self.message}", file=sys.stderr)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


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
              stop: threading.Event | None = None, part: Collection[int] | None = None) -> BatchReport:
    """Matte `shots` one after the other; a failing shot is recorded and the batch goes on.

    echo(line, is_error) gets one line per shot; jobs_log gets one JSON record per shot (appended).
    Setting `stop` (Ctrl-C or SIGTERM does) ends the batch after the frame being written.
    `part`: write only these frames of each shot (a farm task's chunk).
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
        with StopOnInterrupt(stop):
            for shot in shots:
                if stop.is_set():
                    report.interrupted = True
                    break
                result = run_shot(shot, engines, resume=resume, progress=progress, stop=stop, part=part)
                report.results.append(result)
                echo(result.line(), result.status == "failed")
                if log_file is not None:
                    log_file.write(json.dumps(result.record()) + "\n")
                    log_file.flush()
                if result.status == "interrupted":
                    report.interrupted = True
                    break
    return report


def run_shot(shot: Shot, engines: dict[EngineConfig, Engine], *, resume: bool = True, progress: bool = False,
             stop: threading.Event | None = None, part: Collection[int] | None = None,
             before: Mapping[str, FileStamp] | None = None) -> ShotResult:
    """Matte one shot, or with `part` only those of its frames; never raises (failures are records).

    Resume skips frames already done (`finished_frames`); without resume, `before` (when given)
    still skips frames this same run already replaced. `engines` caches engines by config.
    """
    stop = stop or threading.Event()
    result = ShotResult(name=shot.name, status="failed", engine=shot.engine.name, output=shot.output,
                        frames=sorted(part) if part is not None else list(shot.frames or []))
    start = time.perf_counter()
    try:
        problems = check_shot(shot, part)
        if problems:
            raise ValueError("; ".join(problems))
        source = SequenceSource(shot.input, frames=shot.frames, colour=ColourConverter(colorspace=shot.colorspace))
        frames = list(source.frames)
        if part is not None:  # a task's frames: those of them the shot has (shots differ in length)
            frames = sorted(set(part) & set(frames))
        result.frames = frames
        made_by = recipe(shot)  # hashes the prompts' masks: once per shot
        states = (frame_states(shot, frames, None if resume else before, made_by) if resume or before is not None
                  else {})
        done = [f for f, st in states.items() if all(s == "done" for s in st)]
        stale = [f for f, st in states.items() if "stale" in st]
        if stale:
            log.warning("%s: frames %s on disk were made with other prompts, engine, weights or colour space than the "
                        "manifest's: matting them again", shot.name, format_frame_range(stale))
        result.kept = len(done)
        if frames and len(done) == len(frames):
            result.status = "skipped"
            result.seconds = time.perf_counter() - start
            return result
        only = None if part is None and not done else sorted(set(frames) - set(done))
        engine = engines.get(shot.engine)
        if engine is None:
            engine = engines[shot.engine] = create_engine(shot.engine)
        matte = MatteReport(written=result.written)  # filled frame by frame: a failure keeps the count
        matte_shot(source, shot.prompts, _BatchEngine(engine, stop), shot.output,
                   only=only, progress=progress, rgba=shot.rgba, report=matte, stamp={RECIPE: made_by})
        expected = len(only) if only is not None else len(source.frames)
        result.status = "interrupted" if stop.is_set() and len(matte.written) < expected else "done"
    except KeyboardInterrupt:
        stop.set()
        result.status = "interrupted"
    except Exception as exc:  # one shot's failure must not stop the batch
        log.debug("shot %s failed", shot.name, exc_info=True)
        result.error = describe_error(exc)
    result.seconds = time.perf_counter() - start
    return result


def describe_error(exc: BaseException) -> str:
    """One line for a failure record: the message of expected errors, the type too for others."""
    return str(exc) if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {exc}"
