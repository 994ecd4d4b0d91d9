"""A batch as an Open Job Description job bundle (`mam2 batch MANIFEST --openjd DIR`).

Open Job Description (OpenJD) is the open render-farm job standard that AWS Deadline Cloud
and other schedulers run. The bundle is a folder a farm submits as it is:

* ``template.json``: one step, ``Matte``, with one task per shot (or per chunk of a shot,
  split where the engine allows it, `batch.units`); a task runs
  ``mam2 batch MANIFEST --only SHOT --frames FRAMES`` (plus the ``--engine``, ``--checkpoint``,
  ``--device`` and ``--no-resume`` the bundle was written with), so it resumes, records and fails
  like any batch, and a retried task writes only the frames still missing; OpenJD allows at most
  1024 tasks a step (`MAX_TASKS`): a larger batch is refused (larger ``--chunk-frames``, or one
  bundle per ``--chunk I/N``);
* a job environment that puts the venv holding mam2 first on PATH (and fails the session
  early when mam2 is not there);
* ``parameter_values.json``: the job parameters' values (the manifest, the venv, the log folder).

Plates and alphas are read and written where the manifest says: on shared storage the farm's
workers mount at the same paths (docs/farm.md).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Sequence

from mam2_server.batch.manifest import Manifest, Shot, check_shot
from mam2_server.batch.units import engine_continues_passes, engine_wants_gpu, split_frames
from mam2_server.io.sequence import SequencePattern, format_frame_range

SPEC = "jobtemplate-2023-09"
STEP = "Matte"
# mam2 batch stops after the frame being written on SIGINT/SIGTERM; give it that long before SIGKILL.
CANCEL_NOTIFY_S = 120
# jobtemplate-2023-09: a task parameter's list range holds at most 1024 values, so a step at most 1024 tasks
MAX_TASKS = 1024


class OpenJDError(ValueError):
    """The bundle cannot be written (shots with problems, a folder that is not a bundle, ...)."""


def task_units(shots: Sequence[Shot], *, chunk_frames: int = 0) -> list[tuple[str, str]]:
    """(shot name, frame range) per task, every frame of every shot once."""
    units, problems = [], []
    for shot in shots:
        found = check_shot(shot, here=False)  # the farm's nodes may mount weights this machine has not
        if found:
            problems += [f"shot {shot.name}: {p}" for p in found]
            continue
        frames = shot.frames or SequencePattern(shot.input).existing_frames()
        for chunk in split_frames(frames, shot.prompts, frames, continued=engine_continues_passes(shot.engine),
                                  max_frames=chunk_frames):
            units.append((shot.name, format_frame_range(chunk)))
    if problems:
        raise OpenJDError("shots with problems cannot go to a farm:\n  " + "\n  ".join(problems))
    return units


def task_options(*, engine: str | None = None, checkpoint: str | None = None, device: str | None = None,
                 resume: bool = True) -> list[str]:
    """The `mam2 batch` options a task repeats so it plans its shot as the bundle did (absolute checkpoint)."""
    args = []
    if engine:
        args += ["--engine", engine]
    if checkpoint:
        args += ["--checkpoint", os.path.abspath(os.path.expanduser(checkpoint))]
    if device:
        args += ["--device", device]
    if not resume:
        args.append("--no-resume")
    return args


def job_template(manifest: Manifest, units: Sequence[tuple[str, str]], *, cpus: float = 1,
                 gpus: float = 0, name: str | None = None, options: Sequence[str] = ()) -> dict:
    """options: more `mam2 batch` arguments for every task (`task_options`)."""
    if len(units) > MAX_TASKS:
        raise OpenJDError(f"{len(units)} tasks: an Open Job Description step holds at most {MAX_TASKS} (its task "
                          "parameters' ranges are limited to that many values); use a larger --chunk-frames, or "
                          "write one bundle per part of the manifest with --chunk I/N")
    amounts = [{"name": "amount.worker.vcpu", "min": max(1, round(cpus))}]
    if gpus > 0:
        amounts.append({"name": "amount.worker.gpu", "min": max(1, round(gpus))})
    enter_venv = ("import os, shutil, sys; b = os.path.join(sys.argv[1], 'bin'); "
                  "shutil.which('mam2', path=b) or sys.exit('no mam2 in ' + b + ': set the Venv job parameter'); "
                  "print('openjd_env: PATH=' + b + os.pathsep + os.environ.get('PATH', ''))")
    return {
        "specificationVersion": SPEC,
        "name": name or f"MAM2 batch {manifest.path.stem}",
        "description": f"mam2 batch of {manifest.path.name}: {len(units)} tasks",
        "parameterDefinitions": [
            {"name": "Manifest", "type": "PATH", "objectType": "FILE", "dataFlow": "IN",
             "description": "The batch manifest (JSON); its relative paths resolve against its folder.",
             "userInterface": {"label": "Manifest", "fileFilters": [{"label": "JSON", "patterns": ["*.json"]}]}},
            {"name": "Venv", "type": "PATH", "objectType": "DIRECTORY",
             "description": "The Python environment holding mam2 (bin/mam2), as the workers see it."},
            {"name": "LogDir", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "OUT",
             "description": "One JSON-lines record file per task (mam2 batch --jobs-log)."},
        ],
        "jobEnvironments": [{
            "name": "MAM2Venv",
            "description": "Puts the venv's bin/ first on PATH; fails the session early when mam2 is not there.",
            "variables": {"VIRTUAL_ENV": "{{Param.Venv}}", "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1"},
            "script": {"actions": {"onEnter": {"command": "{{Param.Venv}}/bin/python",
                                               "args": ["-c", enter_venv, "{{Param.Venv}}"]}}},
        }],
        "steps": [{
            "name": STEP,
            "description": "One task per shot (or chunk of a shot): mam2 batch MANIFEST --only SHOT --frames FRAMES",
            "parameterSpace": {
                "taskParameterDefinitions": [
                    {"name": "Shot", "type": "STRING", "range": [shot for shot, _ in units]},
                    {"name": "Frames", "type": "STRING", "range": [frames for _, frames in units]},
                ],
                "combination": "(Shot, Frames)",
            },
            "hostRequirements": {"amounts": amounts},
            "script": {"actions": {"onRun": {
                "command": "mam2",
                "args": ["batch", "{{Param.Manifest}}", "--only", "{{Task.Param.Shot}}",
                         "--frames", "{{Task.Param.Frames}}", "--quiet",
                         "--jobs-log", "{{Param.LogDir}}/{{Task.Param.Shot}}.{{Task.Param.Frames}}.jsonl",
                         *options],
                "cancelation": {"mode": "NOTIFY_THEN_TERMINATE", "notifyPeriodInSeconds": CANCEL_NOTIFY_S},
            }}},
        }],
    }


def write_bundle(manifest: Manifest, shots: Sequence[Shot], folder: str | Path, *, chunk_frames: int = 0,
                 cpus: float = 1, gpus: float | None = None, venv: str | Path | None = None,
                 log_dir: str | Path | None = None, options: Sequence[str] = ()) -> Path:
    """Write the job bundle for `shots` of `manifest` into `folder`; returns the template's path.

    gpus None: 1 per task when a shot uses a network engine on no pinned CPU, else 0.
    venv: default this interpreter's environment; log_dir: default `folder`/logs.
    options: the command line's overrides the manifest was loaded with (`task_options`), for every task.
    """
    folder = Path(folder)
    ours = {"template.json", "parameter_values.json", "logs"}
    if folder.exists() and (not folder.is_dir() or any(p.name not in ours for p in folder.iterdir())):
        raise OpenJDError(f"{folder}: exists and is not a job bundle of mam2 (it holds other files); "
                          "give an empty or new folder")
    units = task_units(shots, chunk_frames=chunk_frames)
    if not units:
        raise OpenJDError("no shots to put in the job")
    if gpus is None:
        gpus = 1 if any(engine_wants_gpu(s.engine) for s in shots) else 0
    template = job_template(manifest, units, cpus=cpus, gpus=gpus, options=options)
    values = {"parameterValues": [
        {"name": "Manifest", "value": str(manifest.path.resolve())},
        {"name": "Venv", "value": str(Path(venv or sys.prefix).resolve())},
        {"name": "LogDir", "value": str(Path(log_dir or folder / "logs").resolve())},
    ]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "template.json").write_text(json.dumps(template, indent=2) + "\n")
    (folder / "parameter_values.json").write_text(json.dumps(values, indent=2) + "\n")
    return folder / "template.json"
