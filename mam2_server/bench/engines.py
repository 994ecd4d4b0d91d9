"""`mam2 bench engines`: quality and speed of the engines side by side on the synthetic benchmark.

Every clip gets a box prompt on its first frame (the box of the ground-truth alpha on
that frame, from the synthetic clip's prompt). Per category (kind) and overall it prints
MAD, MSE, Grad, dtSSD (paper scales) and seconds per frame for each engine, plus the
MAD of an all-zero matte (the score of doing nothing). Measured, never asserted.

    mam2 bench engines --engines baseline,classic --frames 8 --size 256x144 --seeds 0,1,2,3
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np

METRIC_NAMES = ("MAD", "MSE", "Grad", "dtSSD")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engines", default="baseline,classic", help="comma-separated engine names")
    parser.add_argument("--kinds", default=None, help="comma-separated synthetic kinds (default: all)")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--size", default="256x144", help="WxH of the clips")
    parser.add_argument("--seeds", default="0,1,2,3",
                        help="comma-separated seeds; even positions use a moving camera, odd a locked one")
    parser.add_argument("--camera", choices=("alternate", "moving", "locked"), default="alternate")
    parser.add_argument("--json", dest="json_out", default=None, help="write all numbers to this JSON file")


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size: expected WxH, got {text!r}") from None
    if w < 16 or h < 16:
        raise SystemExit("--size: at least 16x16")
    return w, h


class _MemorySource:
    """In-memory FrameSource (used when mam2_server.io is not installed); display = plain sRGB curve."""

    def __init__(self, linear_frames, frames):
        from mam2_server.synth.background import linear_to_srgb
        self._lin = dict(zip(frames, linear_frames))
        self._srgb = linear_to_srgb
        self.frames = list(frames)
        self.height, self.width = linear_frames[0].shape[:2]

    def linear(self, frame):
        return self._lin[frame]

    def display(self, frame):
        return np.clip(self._srgb(self._lin[frame]), 0, 1).astype(np.float32)


def make_source(linear_frames, frames):
    """A FrameSource over in-memory linear frames (mam2_server.io.ArraySource when available).

    Frames are rendered up front so that s/frame measures the engine, not the generator.
    """
    try:
        from mam2_server.io import ArraySource
    except ImportError:
        return _MemorySource(linear_frames, frames)
    return ArraySource(linear_frames, frames=frames)


def clip_data(clip):
    """(frame numbers, linear frames, alphas) of a synthetic clip."""
    frames = list(clip.frames)
    lin, gt = [], []
    for f in frames:
        rgb, a = clip.frame(f)
        lin.append(np.asarray(rgb, np.float32))
        gt.append(np.asarray(a, np.float32))
    return frames, lin, gt


def box_prompt(clip, frames, gt):
    from mam2_server.prompts import Prompt
    p = getattr(clip, "prompt", None)
    box = getattr(p, "box", None) if p is not None else None
    frame = getattr(p, "frame", frames[0]) if p is not None else frames[0]
    if box is None:
        ys, xs = np.nonzero(gt[frames.index(frame)] > 0.05)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    return Prompt(frame=frame, box=tuple(box))


def run_engine_on_clip(engine, source, prompt, gt):
    from mam2_server.eval.metrics import SequenceMetrics
    m = SequenceMetrics(metrics=METRIC_NAMES)
    t0 = time.perf_counter()
    n = 0
    for result, g in zip(engine.run(source, [prompt]), gt):
        m.update(result.alpha, g)
        n += 1
    seconds = time.perf_counter() - t0
    out = m.summary()
    out["s/frame"] = seconds / max(1, n)
    return out


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mam2_server.engines import EngineConfig, create_engine
    from mam2_server.eval.metrics import format_table, mad
    from mam2_server.synth import KINDS, make_clip

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    kinds = list(KINDS) if not args.kinds else [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SystemExit(f"unknown kinds {unknown}; choose from {', '.join(KINDS)}")
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    width, height = _parse_size(args.size)
    built = {name: create_engine(EngineConfig(name=name)) for name in engines}

    per_clip = []
    jobs = [(k, s, i) for k in kinds for i, s in enumerate(seeds)]
    bar = tqdm(total=len(jobs) * len(engines), desc="bench engines", unit="run")
    for kind, seed, i in jobs:
        camera = args.camera if args.camera != "alternate" else ("moving" if i % 2 == 0 else "locked")
        clip = make_clip(kind, num_frames=args.frames, width=width, height=height, seed=seed, camera=camera)
        frames, lin, gt = clip_data(clip)
        prompt = box_prompt(clip, frames, gt)
        row = {"kind": kind, "seed": seed, "camera": camera,
               "zero_MAD": float(np.mean([mad(np.zeros_like(g), g) for g in gt]))}
        for name, engine in built.items():
            source = make_source(lin, frames)
            row[name] = run_engine_on_clip(engine, source, prompt, gt)
            bar.set_postfix_str(f"{kind}/{seed} {name} MAD {row[name]['MAD']:.1f}")
            bar.update(1)
        per_clip.append(row)
    bar.close()

    def mean_over(rows, name, key):
        return float(np.mean([r[name][key] for r in rows]))

    table: dict[str, dict[str, float]] = {}
    groups = defaultdict(list)
    for r in per_clip:
        groups[r["kind"]].append(r)
    groups_all = dict(groups)
    groups_all["overall"] = per_clip
    summary = {}
    for group, rows in groups_all.items():
        summary[group] = {"zero_MAD": float(np.mean([r["zero_MAD"] for r in rows]))}
        for name in engines:
            summary[group][name] = {k: mean_over(rows, name, k) for k in METRIC_NAMES + ("s/frame",)}
            table[f"{group} {name}"] = dict(summary[group][name])
        table[f"{group} all-zero"] = {"MAD": summary[group]["zero_MAD"]}
    print(f"engines on {len(per_clip)} synthetic clips ({width}x{height}, {args.frames} frames, "
          f"seeds {seeds}, box prompt on the first frame)")
    print(format_table(table, columns=list(METRIC_NAMES) + ["s/frame"], precision=2, name_header="kind / engine"))
    if len(engines) >= 2 and "baseline" in engines:
        for name in engines:
            if name == "baseline":
                continue
            print(f"\n{name} / baseline ratios (MAD, dtSSD) per kind:")
            for group, s in summary.items():
                b, c = s["baseline"], s[name]
                print(f"  {group:10s} MAD {c['MAD'] / max(b['MAD'], 1e-9):.2f}  dtSSD {c['dtSSD'] / max(b['dtSSD'], 1e-9):.2f}"
                      f"  (vs all-zero MAD {c['MAD'] / max(s['zero_MAD'], 1e-9):.2f})")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"args": {"engines": engines, "kinds": kinds, "frames": args.frames, "size": [width, height],
                                "seeds": seeds, "camera": args.camera},
                       "clips": per_clip, "summary": summary}, fh, indent=2)
    return 0
