"""Matte many shots from a JSON manifest: the library behind `mam2 batch`.

Manifest (JSON; relative paths resolve against the manifest's folder)::

    {
      "defaults": {"engine": "classic", "checkpoint": null, "device": null, "colorspace": null},
      "shots": [
        {"name": "sh010",                              # unique; letters, digits, . _ -
         "input": "plates/sh010.####.exr",             # plate sequence pattern
         "output": "alpha/sh010.####.exr",             # alpha sequence pattern (.exr or .png)
         "prompts": "sh010_prompts.json",              # a prompt file, or an inline list:
                                                       # [{"frame": 1001, "box": [...], "points": [...]}]
         "frames": "1001-1100",                        # optional (default: every plate found)
         "colorspace": "ACEScg",                       # optional, as `mam2 matte --colorspace`
         "rgba": "fg/sh010.####.exr",                  # optional premultiplied RGBA (.exr)
         "engine": "mam2", "checkpoint": "w.safetensors"}  # optional per-shot engine
      ]
    }

A shot's engine, checkpoint and colorspace come from the shot, else from "defaults", else
from the command line (--engine/--checkpoint), else the built-in defaults. The device is a
property of the machine: --device, else "defaults".device.

Validation happens before any work and reports every problem, each with its shot's name.
Problems of the manifest as a whole (not JSON, wrong schema, unknown keys, duplicate or
missing names, two shots writing the same files, an output that is an input) stop the batch
before anything runs. Problems of one shot's data (plates missing, a prompt file missing or
invalid, a bad frame range, a keyframe outside the frames) are reported up front too, and
that shot then fails while the others run.

Resume (the default): a frame counts as done when its alpha file (and RGBA file, with "rgba")
exists, its header reads and (EXR) none of it is cut short. A shot with every frame done is
skipped and nothing of it is touched. A partly done shot is re-run for its missing frames: the
engine re-tracks every pass (keyframe to the next keyframe) that holds a missing frame from its
keyframe, because a tracked frame depends on the frames before it in its pass, but only the
missing frames are written; finished files are never rewritten, and passes with nothing
missing are not run at all. Since the engines are deterministic for fixed prompts, the
frames written now are those the interrupted run would have written. Every file a batch writes
records its recipe (the `mam2/recipe` attribute: engine, checkpoint content, colour space, prompts); a file with
another recipe than the manifest's is not finished, so a changed prompt re-mattes the shot (files
without one, from elsewhere, count as finished). Resume off recomputes and overwrites every frame
(atomically, one by one; nothing is deleted first). An engine whose passes continue one another
(`mam2`) also re-runs the forward passes before a missing frame's pass, since each continues the
previous one's memory bank.

Beyond one machine: `ray_runner` runs the shots as Ray tasks (chunks split only where the
engine allows it, `units`), `openjd` writes an Open Job Description job bundle for a farm.
"""
from __future__ import annotations

from mam2_server.batch.manifest import (Manifest, ManifestError, Shot, check_shot, load_manifest, parse_chunk,
                                        select_shots, sequence_gaps)
from mam2_server.batch.runner import BatchReport, ShotResult, finished_frames, run_batch, run_shot
from mam2_server.batch.units import frames_to_compute, independent_groups, split_frames

__all__ = ["BatchReport", "Manifest", "ManifestError", "Shot", "ShotResult", "check_shot", "finished_frames",
           "frames_to_compute", "independent_groups", "load_manifest", "parse_chunk", "run_batch", "run_shot",
           "select_shots", "sequence_gaps", "split_frames"]
