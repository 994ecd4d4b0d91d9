"""A batch on a Ray cluster: one Ray task per shot or chunk (`mam2 batch MANIFEST --ray ADDRESS`).

The driver (the machine running `mam2 batch`) plans the work and keeps the books; the
tasks only matte. Plates and alphas stay on shared storage: a task gets the shot's paths,
prompts and the frames to write, reads the plates and writes the alphas itself, and returns
a small record, so no pixels go through Ray's object store. Every node must see the same
paths and have mam2 installed (see docs/farm.md).

* Work: a shot is split into chunks only between independent groups of frames
  (`batch.units`); each chunk is one task with the declared CPUs/GPUs, spread over the nodes.
* Resume: as `run_batch`. Finished frames are found on the driver before planning and again
  by each task when it starts, so a task that Ray retries after its worker or node died
  writes only what the dead attempt had not finished (without resume, "finished" means
  "replaced since this run began", by inode and mtime, so a retry still writes each frame once).
* Records: failures are values (a failing shot is recorded, the others go on); the driver
  writes one JSON line per shot, in the order shots finish, with the nodes that ran it.
* Progress: one bar over every frame to write, fed by the alphas appearing on shared storage.
* Ctrl-C: the first cancels every task (queued ones never start; running ones stop with
  KeyboardInterrupt, and atomic writes leave no partial file); a second one kills them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from mam2_server.batch.manifest import Shot, check_shot
from mam2_server.batch.runner import (BatchReport, FileStamp, ShotResult, StopOnInterrupt, describe_error,
                                      file_stamp, finished_frames, output_paths, run_shot)
from mam2_server.batch.units import engine_continues_passes, engine_wants_gpu, split_frames
from mam2_server.engines import Engine, EngineConfig
from mam2_server.io.sequence import SequencePattern

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 30.0
POLL_S = 0.5


class RayBatchError(RuntimeError):
    """The batch cannot start on this cluster (Ray missing, no node fits a task, ...)."""


def _ray():
    try:
        import ray
    except ImportError:
        raise RayBatchError("--ray needs Ray on this machine and on every node: `pip install 'ray>=2.40'` "
                            "(or `python3 install.py --dev`)") from None
    return ray


# -- the task (runs on a worker) ----------------------------------------------------------------

_ENGINES: dict[EngineConfig, Engine] = {}  # per worker process: an engine and its weights load once


@dataclass
class UnitResult:
    result: ShotResult
    node: str
    pid: int


def task_device(device: str | None, gpu_ids: Sequence) -> str | None:
    """The device inside a task: Ray shows a task only the GPUs it was given (CUDA_VISIBLE_DEVICES),
    so a machine's `cuda:N` becomes `cuda` there."""
    if gpu_ids and device and device.startswith("cuda:"):
        return "cuda"
    return device


def matte_unit(shot: Shot, frames: list[int], resume: bool, before: dict[str, FileStamp] | None) -> UnitResult:
    import ray
    context = ray.get_runtime_context()
    device = task_device(shot.engine.device, ray.get_gpu_ids())
    if device != shot.engine.device:
        shot = dataclasses.replace(shot, engine=dataclasses.replace(shot.engine, device=device))
    result = run_shot(shot, _ENGINES, resume=resume, part=frames, before=before)
    return UnitResult(result, node=context.get_node_id(), pid=os.getpid())


# -- the driver -----------------------------------------------------------------------------------

@dataclass
class _Unit:
    frames: list[int]  # in the order the engine writes them
    paths: list[str]  # each frame's alpha file (written last for a frame)
    before: dict[str, FileStamp]
    ref: object = None
    seen: int = 0  # frames written so far (they appear in order)
    outcome: UnitResult | BaseException | None = None

    def poll(self) -> int:
        """Newly written frames since the last poll."""
        start = self.seen
        while self.seen < len(self.paths):
            stamp = file_stamp(self.paths[self.seen])
            if stamp is None or stamp == self.before.get(self.paths[self.seen]):
                break
            self.seen += 1
        return self.seen - start


@dataclass
class _ShotPlan:
    shot: Shot
    frames: list[int] = field(default_factory=list)
    kept: int = 0
    units: list[_Unit] = field(default_factory=list)
    result: ShotResult | None = None  # set once the shot is finished and recorded


def connect(address: str) -> bool:
    """Join the cluster at `address` ("auto", "host:port", "ray://host:port") or start one here
    ("local"). Returns whether this call connected (so it disconnects at the end)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    options = {"logging_level": logging.WARNING, "log_to_driver": True}
    _check_reachable(address)
    try:
        if address == "local":
            ray.init(include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)
    except Exception as exc:  # Ray raises its own types too (e.g. AuthenticationError for a missing token)
        raise RayBatchError(f"--ray {address}: cannot connect to a Ray cluster ({_first_line(exc)})") from None
    return True


def _check_reachable(address: str) -> None:
    """A HOST:PORT nobody listens on fails here in seconds (ray.init would retry for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local": Ray finds (or starts) the cluster itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise RayBatchError(f"--ray {address}: no Ray cluster answers there ({exc})") from None


def gpus_for(shot: Shot, gpus_per_shot: float | None, cluster_gpus: float) -> float:
    """Declared GPUs of a shot's tasks: as asked, else 1 for a network engine when the cluster has
    GPUs and the shot is not pinned to the CPU (`units.engine_wants_gpu`)."""
    if gpus_per_shot is not None:
        return gpus_per_shot
    return 1.0 if engine_wants_gpu(shot.engine) and cluster_gpus > 0 else 0.0


def check_fits(cpus: float, gpus: float) -> None:
    """Fail now, not hang: a task no live node can hold would wait for ever."""
    nodes = [n for n in _ray().nodes() if n.get("Alive")]
    if any(n["Resources"].get("CPU", 0) >= cpus and n["Resources"].get("GPU", 0) >= gpus for n in nodes):
        return
    have = "; ".join(f"{n.get('NodeManagerAddress')}: {n['Resources'].get('CPU', 0):g} CPU, "
                     f"{n['Resources'].get('GPU', 0):g} GPU" for n in nodes) or "no live nodes"
    raise RayBatchError(f"no node of the cluster has {cpus:g} CPU and {gpus:g} GPU for one task ({have}); "
                        "lower --cpus-per-shot / --gpus-per-shot or add nodes")


def _plan(shots: Sequence[Shot], *, resume: bool, part: Sequence[int] | None, chunk_frames: int) -> list[_ShotPlan]:
    plans = []
    for shot in shots:
        plan = _ShotPlan(shot)
        plans.append(plan)
        try:
            problems = check_shot(shot, part)
            if problems:
                raise ValueError("; ".join(problems))
            plan.frames = shot.frames or SequencePattern(shot.input).existing_frames()
            wanted = plan.frames if part is None else sorted(set(plan.frames) & set(part))
            done = set(finished_frames(shot, wanted)) if resume else set()
            plan.kept = len(done)
            todo = [f for f in wanted if f not in done]
            if not todo:
                continue
            chunks = split_frames(plan.frames, shot.prompts, todo, continued=engine_continues_passes(shot.engine),
                                  max_frames=chunk_frames)
        except Exception as exc:  # this shot fails; the others run
            plan.result = ShotResult(name=shot.name, status="failed", frames=plan.frames, engine=shot.engine.name,
                                     output=shot.output, error=describe_error(exc), chunks=0)
            continue
        for frames in chunks:
            paths = [str(SequencePattern(shot.output).path(f)) for f in frames]
            # the files of the frames to write as they are now (with resume: truncated or unreadable ones),
            # so the progress watch counts a frame only once this run has replaced its alpha
            before = {p: s for p in {str(q) for f in frames for q in output_paths(shot, f)}
                      if (s := file_stamp(p)) is not None}
            plan.units.append(_Unit(frames=frames, paths=paths, before=before))
    return plans


def _finish_shot(plan: _ShotPlan, interrupted: bool) -> ShotResult:
    shot = plan.shot
    results = [u.outcome.result for u in plan.units if isinstance(u.outcome, UnitResult)]
    errors = [u.outcome.result.error for u in plan.units
              if isinstance(u.outcome, UnitResult) and u.outcome.result.status == "failed"]
    errors += [_task_error(u.outcome) for u in plan.units
               if isinstance(u.outcome, BaseException) and not _cancelled(u.outcome)]
    for unit in plan.units:
        unit.poll()
    written = sorted(f for u in plan.units for f in u.frames[:u.seen])
    todo = sum(len(u.frames) for u in plan.units)
    status = ("skipped" if not plan.units else "failed" if errors else
              "done" if len(written) == todo else "interrupted" if interrupted else "failed")
    if status == "failed" and not errors:
        errors = [f"{todo - len(written)} frames were not written"]
    if plan.units:
        _sweep_temp_files(shot, plan.frames)
    hosts = sorted({h for r in results for h in r.hosts}) or [socket.gethostname()]
    retried = sum(1 for r in results if r.kept)  # the plan left only missing frames: a dead attempt wrote these
    return ShotResult(name=shot.name, status=status, frames=plan.frames, written=written, kept=plan.kept,
                      seconds=sum(r.seconds for r in results), engine=shot.engine.name, output=shot.output,
                      error="; ".join(e for e in errors if e) or None, hosts=hosts, chunks=len(plan.units),
                      retried=retried, nodes=sorted({u.outcome.node for u in plan.units
                                                     if isinstance(u.outcome, UnitResult)}))


def _cancelled(exc: BaseException) -> bool:
    return type(exc).__name__ in ("TaskCancelledError", "KeyboardInterrupt")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _task_error(exc: BaseException) -> str:
    name = type(exc).__name__
    if name in ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "ActorDiedError"):
        return f"{name}: the task's worker died and Ray's retries ran out ({_first_line(exc)})"
    return f"{name}: {_first_line(exc)}"


def _sweep_temp_files(shot: Shot, frames: Sequence[int]) -> None:
    """Remove the temp files a killed task left beside this shot's outputs (`io.atomic` names them
    `.<file>.<hex>.tmp`); called once no task of the shot runs any more."""
    names: dict[Path, set[str]] = {}
    for frame in frames:
        for path in output_paths(shot, frame):
            names.setdefault(path.parent, set()).add(path.name)
    for folder, files in names.items():
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                parts = entry.name.rsplit(".", 2)
                if entry.name.startswith(".") and len(parts) == 3 and parts[2] == "tmp" and parts[0][1:] in files:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


def run_batch_on_ray(shots: Sequence[Shot], *, address: str = "auto", resume: bool = True, progress: bool = True,
                     jobs_log: str | Path | None = None, echo: Callable[[str, bool], None] | None = None,
                     stop: threading.Event | None = None, cpus_per_shot: float = 1.0,
                     gpus_per_shot: float | None = None, chunk_frames: int = 0, max_retries: int = 3,
                     part: Sequence[int] | None = None) -> BatchReport:
    """Matte `shots` as Ray tasks (module docstring). Raises RayBatchError before any work when the
    cluster cannot run them; after that, failures are records in the report."""
    echo = echo or (lambda line, error: tqdm.write(f"mam2 batch: {line}", file=sys.stderr if error else sys.stdout))
    stop = stop or threading.Event()
    ray = _ray()
    owned = connect(address)
    try:
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        plans = _plan(shots, resume=resume, part=part, chunk_frames=chunk_frames)
        options = {}
        for plan in plans:
            if plan.units:
                gpus = gpus_for(plan.shot, gpus_per_shot, cluster_gpus)
                options[plan.shot.name] = {"num_cpus": cpus_per_shot, "num_gpus": gpus}
        if any(engine_wants_gpu(p.shot.engine) for p in plans if p.units) and not cluster_gpus \
                and gpus_per_shot is None:
            echo("the cluster has no GPUs: network engines run on the nodes' CPUs", True)
        for need in {(o["num_cpus"], o["num_gpus"]) for o in options.values()}:
            check_fits(*need)
        return _drive(ray, plans, options, resume=resume, progress=progress, jobs_log=jobs_log, echo=echo,
                      stop=stop, max_retries=max_retries)
    finally:
        if owned:
            ray.shutdown()


def _drive(ray, plans: list[_ShotPlan], options: dict, *, resume: bool, progress: bool, jobs_log, echo,
           stop: threading.Event, max_retries: int) -> BatchReport:
    remote = ray.remote(matte_unit)
    report = BatchReport()
    units = [u for p in plans for u in p.units]
    with contextlib.ExitStack() as stack:
        log_file = None
        if jobs_log:
            Path(jobs_log).parent.mkdir(parents=True, exist_ok=True)
            log_file = stack.enter_context(open(jobs_log, "a", encoding="utf-8"))
        bar = stack.enter_context(tqdm(total=sum(len(u.frames) for u in units), unit="frame", disable=not progress,
                                       desc=f"0/{len(plans)} shots"))
        stack.enter_context(StopOnInterrupt(stop, "cancelling the cluster tasks (Ctrl-C again to kill them)"))

        def record(plan: _ShotPlan, result: ShotResult) -> None:
            plan.result = result
            report.results.append(result)
            echo(result.line(), result.status == "failed")
            if log_file is not None:
                log_file.write(json.dumps(result.record()) + "\n")
                log_file.flush()

        for plan in plans:  # failed while planning, or nothing to do
            if plan.result is not None or not plan.units:
                record(plan, plan.result or _finish_shot(plan, False))
        by_ref = {}
        for plan in plans:
            for i, unit in enumerate(plan.units):
                unit.ref = remote.options(name=f"mam2:{plan.shot.name}:{i + 1}/{len(plan.units)}",
                                          max_retries=max_retries, retry_exceptions=False,
                                          scheduling_strategy="SPREAD", **options[plan.shot.name]).remote(
                    plan.shot, unit.frames, resume, None if resume else unit.before)
                by_ref[unit.ref] = unit
        pending = list(by_ref)
        cancelled_at, shown = None, -1
        try:
            while pending:
                if stop.is_set() and cancelled_at is None:
                    cancelled_at = time.monotonic()
                    report.interrupted = True
                    for ref in pending:
                        ray.cancel(ref)
                elif cancelled_at is not None and time.monotonic() - cancelled_at > CANCEL_GRACE_S:
                    raise KeyboardInterrupt  # the tasks did not stop in time: kill them
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S, fetch_local=True)
                for ref in ready:
                    unit = by_ref[ref]
                    try:
                        unit.outcome = ray.get(ref)
                    except Exception as exc:  # the worker died for good, or the task was cancelled
                        unit.outcome = exc
                bar.update(sum(u.poll() for u in units if u.outcome is None or u.seen < len(u.frames)))
                for plan in plans:
                    if plan.result is None and all(u.outcome is not None for u in plan.units):
                        record(plan, _finish_shot(plan, report.interrupted))
                finished = sum(p.result is not None for p in plans)
                if finished != shown:
                    shown = finished
                    bar.set_description(f"{finished}/{len(plans)} shots", refresh=False)
        except KeyboardInterrupt:
            report.interrupted = True
            for ref in pending:
                ray.cancel(ref, force=True)
            for ref in pending:
                by_ref[ref].outcome = KeyboardInterrupt()
        for plan in plans:
            if plan.result is None:
                record(plan, _finish_shot(plan, True))
    return report
