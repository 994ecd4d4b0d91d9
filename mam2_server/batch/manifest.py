"""The batch manifest: schema, loading, validation and picking shots (see `mam2_server.batch`)."""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Sequence

from mam2_server.engines import DEFAULT_ENGINE, EngineConfig
from mam2_server.io.atomic import unwritable_folder
from mam2_server.io.exr_layout import check_file
from mam2_server.io.image import ImageIOError, read_info
from mam2_server.io.source import ALPHA_SUFFIXES, RGBA_SUFFIXES
from mam2_server.io.sequence import SequencePattern, format_frame_range, holes, parse_frame_range
from mam2_server.prompts import Prompt, PromptError, keyframes, load_prompts

log = logging.getLogger(__name__)

DEFAULT_KEYS = {"engine", "checkpoint", "device", "colorspace"}
SHOT_KEYS = {"name", "input", "output", "prompts", "frames", "colorspace", "rgba", "engine", "checkpoint"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


class ManifestError(ValueError):
    """A manifest that cannot be run; `problems` lists every problem found."""

    def __init__(self, path: str | Path, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{path}: {len(self.problems)} problem(s) in the manifest:\n{lines}")


@dataclass
class Shot:
    name: str
    input: str
    output: str
    prompts: list[Prompt] = field(default_factory=list)
    frames: list[int] | None = None
    colorspace: str | None = None
    rgba: str | None = None
    engine: EngineConfig = field(default_factory=EngineConfig)
    problems: list[str] = field(default_factory=list)  # data problems: the shot fails, the others run


@dataclass
class Manifest:
    path: Path
    shots: list[Shot]


def _resolve(base: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def _opt_str(obj: dict, key: str, where: str, problems: list[str]) -> str | None:
    value = obj.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        problems.append(f"{where}: {key!r} must be a non-empty string, got {value!r}")
        return None
    return value


def load_manifest(path: str | Path, *, engine: str | None = None, checkpoint: str | None = None,
                  device: str | None = None) -> Manifest:
    """Read and check a manifest. Raises ManifestError listing every problem of the whole manifest;
    a shot's data problems are left in `Shot.problems` (see the module docstring)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(path, ["file not found"]) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(path, [f"not a readable JSON file ({exc})"]) from None
    base = path.resolve().parent
    fatal: list[str] = []
    if not isinstance(data, dict):
        raise ManifestError(path, ["the manifest is a JSON object with a 'shots' list"])
    unknown = set(data) - {"defaults", "shots"}
    if unknown:
        fatal.append(f"unknown top-level keys {sorted(unknown)} (allowed: defaults, shots)")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        fatal.append(f"'defaults' must be an object, got {defaults!r}")
        defaults = {}
    unknown = set(defaults) - DEFAULT_KEYS
    if unknown:
        fatal.append(f"defaults: unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(DEFAULT_KEYS))})")
    for key in DEFAULT_KEYS:
        _opt_str(defaults, key, "defaults", fatal)
    entries = data.get("shots")
    if not isinstance(entries, list) or not entries:
        fatal.append("'shots' must be a non-empty list of shots")
        entries = []

    shots: list[Shot] = []
    seen: dict[str, int] = {}
    writers: dict[Path, str] = {}  # output file key -> "shot (output)"
    inputs: dict[Path, str] = {}
    for index, entry in enumerate(entries):
        where = f"shot #{index + 1}"
        if not isinstance(entry, dict):
            fatal.append(f"{where}: a shot is an object, got {entry!r}")
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            fatal.append(f"{where}: 'name' must be letters, digits, '.', '_' or '-', got {name!r}")
            name = f"#{index + 1}"
        else:
            where = f"shot {name}"
            if name in seen:
                fatal.append(f"{where}: duplicate name (also shot #{seen[name] + 1})")
            seen.setdefault(name, index)
        unknown = set(entry) - SHOT_KEYS
        if unknown:
            fatal.append(f"{where}: unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(SHOT_KEYS))})")
        strings = {key: _opt_str(entry, key, where, fatal)
                   for key in ("input", "output", "frames", "colorspace", "rgba", "engine", "checkpoint")}
        for key in ("input", "output"):
            if key not in entry:
                fatal.append(f"{where}: {key!r} is required")
        if "prompts" not in entry:
            fatal.append(f"{where}: 'prompts' is required (a prompt file or a list of prompts)")
        patterns: dict[str, str] = {}
        for key in ("input", "output", "rgba"):
            if strings[key]:
                value = _resolve(base, strings[key])
                try:
                    SequencePattern(value)
                except ValueError as exc:
                    fatal.append(f"{where}: {key}: {exc}")
                    continue
                patterns[key] = value
        for key in ("output", "rgba"):
            value = patterns.get(key)
            if value is None:
                continue
            suffix = Path(value).suffix.lower()
            allowed = RGBA_SUFFIXES if key == "rgba" else ALPHA_SUFFIXES
            if suffix not in allowed:
                fatal.append(f"{where}: {key} {value}: needs a {' or '.join(allowed)} pattern")
            writer = f"shot {name} ({key})"
            other = writers.setdefault(SequencePattern(value).files_key(), writer)
            if other != writer:
                fatal.append(f"{where}: {key} {value} writes the same files as {other}")
        if "input" in patterns:
            inputs.setdefault(SequencePattern(patterns["input"]).files_key(), f"shot {name}")

        shot = Shot(name=name, input=patterns.get("input", ""), output=patterns.get("output", ""),
                    rgba=patterns.get("rgba"),
                    colorspace=strings["colorspace"] or defaults.get("colorspace"),
                    engine=EngineConfig(
                        name=strings["engine"] or defaults.get("engine") or engine or DEFAULT_ENGINE,
                        checkpoint=(_resolve(base, strings["checkpoint"]) if strings["checkpoint"] else
                                    _resolve(base, defaults["checkpoint"]) if defaults.get("checkpoint") else
                                    os.path.abspath(os.path.expanduser(checkpoint)) if checkpoint else None),
                        device=device or defaults.get("device")))
        if strings["frames"]:
            try:
                shot.frames = parse_frame_range(strings["frames"])
            except ValueError as exc:
                shot.problems.append(f"frames: {exc}")
        _read_shot_prompts(shot, entry.get("prompts"), base, fatal, where)
        shots.append(shot)

    for shot in shots:  # an output over some shot's plates would destroy them
        for key in ("output", "rgba"):
            value = getattr(shot, key)
            over = inputs.get(SequencePattern(value).files_key()) if value else None
            if over:
                fatal.append(f"shot {shot.name}: {key} {value} is the input of {over}")
    if fatal:
        raise ManifestError(path, fatal)
    return Manifest(path=path, shots=shots)


def _read_shot_prompts(shot: Shot, value: object, base: Path, fatal: list[str], where: str) -> None:
    try:
        if isinstance(value, str) and value.strip():
            prompts = load_prompts(_resolve(base, value))
        elif isinstance(value, (list, dict)) and value:
            prompts = [Prompt.from_json(item, base=base) for item in (value if isinstance(value, list) else [value])]
        else:
            if value is not None:
                fatal.append(f"{where}: 'prompts' is a prompt file name or a non-empty list, got {value!r}")
            return
    except PromptError as exc:
        shot.problems.append(f"prompts: {exc}")
        return
    shot.prompts = list(keyframes(prompts).values())


def check_shot(shot: Shot, part: Collection[int] | None = None, *, here: bool = True) -> list[str]:
    """The shot's data problems, found without reading any plate's pixels: engine, weights and colour
    space known, plates present, their headers readable, their display windows the first's and (EXR)
    none cut short, keyframes in range, prompts (boxes, points, masks) fitting the first plate's
    display window; with `part` (a task's --frames), some of those frames among the shot's.
    `here=False` (a farm bundle, written on a machine that may not mount the farm's weights or have
    its permissions): a checkpoint missing or an output folder not writable here is not a problem."""
    problems = list(shot.problems) + _setup_problems(shot, here)
    if not shot.input:
        return problems
    pattern = SequencePattern(shot.input)
    existing = pattern.existing_frames()
    if not existing:
        problems.append(f"input {shot.input}: no plates found in {pattern.directory}")
        return problems
    frames = shot.frames if shot.frames is not None else existing
    missing = sorted(set(frames) - set(existing))
    if missing:
        problems.append(f"input {shot.input}: missing frames {format_frame_range(missing)} "
                        f"(frames on disk: {format_frame_range(existing)})")
    if part is not None and not set(part) & set(frames):
        problems.append(f"--frames {format_frame_range(sorted(part))}: none of them is among the shot's frames "
                        f"{format_frame_range(frames)}")
    outside = sorted(p.frame for p in shot.prompts if p.frame not in set(frames))
    if shot.prompts and outside and frames:
        problems.append(f"prompts: keyframe(s) {format_frame_range(outside)} outside the shot's frames "
                        f"{format_frame_range(frames)}")
    try:  # boxes, points and masks against the plates' size, from the first plate's header
        info = read_info(pattern.path(existing[0]))
    except ImageIOError as exc:
        problems.append(f"input {shot.input}: {exc}")
        return problems
    on_disk = set(existing)
    problems += _plate_problems(pattern, [f for f in frames if f in on_disk and (part is None or f in part)],
                                (info.full_width, info.full_height))
    for prompt in shot.prompts:
        try:
            prompt.validate(info.full_width, info.full_height)
        except PromptError as exc:
            problems.append(f"prompts: {exc}")
    return problems


def _plate_problems(pattern: SequencePattern, frames: Sequence[int], size: tuple[int, int], most: int = 5) -> list[str]:
    """Plates of the run whose header does not read, whose display window is not `size`, or (EXR)
    that are cut short: a header reads from a copy interrupted, whose pixels fail only mid-run.
    Headers and chunk tables only, a few kilobytes a frame; the first `most` problems and a count."""
    found = []
    for frame in frames:
        path = pattern.path(frame)
        try:
            info = read_info(path)
            if (info.full_width, info.full_height) != size:
                found.append(f"{path.name}: display window {info.full_width}x{info.full_height}, the shot's first "
                             f"plate is {size[0]}x{size[1]}")
            elif path.suffix.lower() == ".exr":
                check_file(path)
        except (ImageIOError, ValueError, OSError) as exc:
            found.append(f"{path.name}: {exc}")
    more = f" (and {len(found) - most} more)" if len(found) > most else ""
    return [f"input: {text}" + (more if i == most - 1 else "") for i, text in enumerate(found[:most])]


def _setup_problems(shot: Shot, here: bool = True) -> list[str]:
    """What would fail before the first frame: an unknown engine or colour space, missing weights, an
    output folder that cannot be made or written (the last two only `here`)."""
    from mam2_server.engines import available_engines
    from mam2_server.io.colour import ColourConverter
    problems = []
    if shot.engine.name not in available_engines():
        problems.append(f"engine {shot.engine.name!r} is unknown (available: {', '.join(available_engines())})")
    if here and shot.engine.checkpoint and not Path(shot.engine.checkpoint).expanduser().is_file():
        problems.append(f"checkpoint not found: {shot.engine.checkpoint}")
    for kind, pattern in (("output", shot.output), ("rgba", shot.rgba)):
        if here and pattern and (why := unwritable_folder(SequencePattern(pattern).directory)):
            problems.append(f"{kind} {pattern}: {why}")
    if shot.colorspace:
        try:
            ColourConverter(colorspace=shot.colorspace)
        except ValueError as exc:
            problems.append(f"colorspace: {exc}")
    return problems


def sequence_gaps(shot: Shot) -> list[int]:
    """Frames missing inside the plates' span when the shot names no frame range (a hole in a render
    is matted around silently otherwise; with "frames" it is a problem)."""
    if shot.frames is not None or not shot.input:
        return []
    return holes(SequencePattern(shot.input).existing_frames())


def parse_chunk(text: str) -> tuple[int, int]:
    """"I/N" -> (I, N), 1 <= I <= N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ValueError(f"--chunk takes I/N with 1 <= I <= N (e.g. 2/10), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def select_shots(shots: Sequence[Shot], only: Collection[str] | None = None,
                 chunk: tuple[int, int] | None = None) -> list[Shot]:
    """`only` (names) first, then chunk I of N: every N-th shot starting at the I-th, in manifest order,
    so chunks 1..N of the same selection hold every shot exactly once (and balance long and short shots)."""
    selected = list(shots)
    if only:
        names = {s.name for s in shots}
        unknown = sorted(set(only) - names)
        if unknown:
            raise ValueError(f"--only: no shot named {', '.join(unknown)} in the manifest "
                             f"(shots: {', '.join(s.name for s in shots)})")
        selected = [s for s in selected if s.name in set(only)]
    if chunk is not None:
        index, count = chunk
        selected = selected[index - 1::count]
    return selected
