"""`mam2 bench engines`: quality and speed of the engines side by side on synthetic clips, with a held-out split.

Clips are the synthetic kinds under shooting conditions (`mam2_server.synth.conditions`), in two splits:

* `tuning`: seeds 0-3 under the conditions the engines may be tuned on;
* `heldout`: seeds 100-103 under every condition, including two (`parallax`, `camouflage`) that no
  engine was ever tuned on. A change is kept only if it pays here.

Every clip is prompted on its first frame, like a user would: a box (the clip's prompt: the box of
the ground-truth alpha) or, with `--prompt mask`, the ground-truth mask (alpha > 0.5, eroded 2 px),
which measures the trimap and matte stages alone; the mask prompt's own MAD on that frame is
reported as the floor the engines must beat there; or, with `--prompt point`, one click where the
object is thickest (the weakest prompt: it does not say how big the object is). `--second-key N`
adds a second, equally good prompt on the N-th frame and reports the MAD with it beside the MAD
without it (a correct keyframe must never make a kind worse). Per kind, per condition and overall: MAD, MSE, Grad, dtSSD
(paper scales) and seconds per frame, the MAD of an all-zero matte (the score of doing nothing),
and every clip where an engine is worse than all-zero. Measured, never asserted.

    mam2 bench engines --split heldout --engines baseline,classic --json heldout.json
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import dataclass

import cv2
import numpy as np

METRIC_NAMES = ("MAD", "MSE", "Grad", "dtSSD")


@dataclass(frozen=True)
class Split:
    seeds: tuple[int, ...]
    conditions: tuple[str, ...]


HELDOUT_CONDITIONS = ("parallax", "camouflage")  # never looked at while tuning
SPLITS = {
    "tuning": Split((0, 1, 2, 3), ("standard", "static", "srgb", "large", "still")),
    "heldout": Split((100, 101, 102, 103), ("standard", "static", "srgb", "large", "still") + HELDOUT_CONDITIONS),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engines", default="baseline,classic", help="comma-separated engine names")
    parser.add_argument("--split", choices=("tuning", "heldout", "both"), default="tuning",
                        help="which seeds and conditions (default tuning; see above)")
    parser.add_argument("--kinds", default=None, help="comma-separated synthetic kinds (default: all)")
    parser.add_argument("--conditions", default=None, help="comma-separated conditions (default: the split's)")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds (default: the split's); even positions use a moving camera, "
                             "odd a locked one")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--size", default="256x144", help="WxH of the clips")
    parser.add_argument("--camera", choices=("alternate", "moving", "locked"), default="alternate")
    parser.add_argument("--prompt", choices=PROMPT_KINDS, default="box", help="first-frame prompt")
    parser.add_argument("--second-key", type=int, default=0, metavar="N",
                        help="also run with a second prompt of the same kind on the N-th frame (1-based)")
    parser.add_argument("--json", dest="json_out", default=None, help="write all numbers to this JSON file")


PROMPT_KINDS = ("box", "mask", "point")


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size: expected WxH, got {text!r}") from None
    if w < 16 or h < 16:
        raise SystemExit("--size: at least 16x16")
    return w, h


def _names(text: str | None, default, known, what: str) -> list:
    names = list(default) if not text else [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in names if k not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; choose from {', '.join(known)}")
    return names


def make_source(linear_frames, frames):
    """A FrameSource over in-memory linear frames; frames are rendered up front so that s/frame
    measures the engine, not the generator."""
    from mam2_server.io import ArraySource
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


def click(alpha: np.ndarray) -> tuple[float, float]:
    """Where a user clicks on the object: the point deepest inside alpha > 0.5 (> 0.05 when faint)."""
    inside = (alpha > 0.5) if (alpha > 0.5).any() else (alpha > 0.05)
    depth = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return x + 0.5, y + 0.5


def make_prompt(kind: str, frame: int, alpha: np.ndarray):
    """A user's prompt on `frame` from the ground truth: the alpha's padded box, its mask
    (alpha > 0.5 eroded 2 px: a good segmentation's mask) or one click on it (`click`)."""
    from mam2_server.prompts import Point, Prompt
    from mam2_server.synth import prompt_from_alpha
    if kind == "point":
        return Prompt(frame=frame, points=(Point(*click(alpha), 1),))
    if kind == "mask":
        m = cv2.erode((alpha > 0.5).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
        if not m.any():  # a thin or faint object: its thresholded mask is all there is
            m = (alpha > 0.5).astype(np.uint8) if (alpha > 0.5).any() else (alpha > 0.05).astype(np.uint8)
        return Prompt(frame=frame, mask=m.astype(np.float32))
    return Prompt(frame=frame, box=prompt_from_alpha(alpha, frame).box)


def run_engine_on_clip(engine, source, prompts, gt):
    from mam2_server.eval.metrics import SequenceMetrics, mad
    m = SequenceMetrics(metrics=METRIC_NAMES)
    t0 = time.perf_counter()
    alphas = {}
    for result, g in zip(engine.run(source, prompts), gt):
        m.update(result.alpha, g)
        alphas[result.frame] = mad(result.alpha, g)
    seconds = time.perf_counter() - t0
    out = m.summary()
    out["s/frame"] = seconds / max(1, len(alphas))
    out["frame_MAD"] = alphas
    return out


def bench_clip(clip, built: dict, prompt_kind: str, second_key: int) -> dict:
    from mam2_server.eval.metrics import mad
    frames, lin, gt = clip_data(clip)
    prompts = [make_prompt(prompt_kind, frames[0], gt[0])]
    row = {"kind": clip.kind, "seed": clip.seed, "camera": clip.camera, "condition": clip.condition,
           "zero_MAD": float(np.mean([mad(np.zeros_like(g), g) for g in gt]))}
    if prompts[0].mask is not None:
        row["prompt_MAD"] = mad(prompts[0].mask, gt[0])  # the mask itself as the first frame's matte
    second = None
    if second_key and 1 < second_key <= len(frames) and (gt[second_key - 1] > 0.05).any():
        second = make_prompt(prompt_kind, frames[second_key - 1], gt[second_key - 1])
    for name, engine in built.items():
        row[name] = run_engine_on_clip(engine, make_source(lin, frames), prompts, gt)
        if second is not None:
            row[name + "+key"] = run_engine_on_clip(engine, make_source(lin, frames), prompts + [second], gt)
    return row


def _summarise(rows: list[dict], names: list[str]) -> dict:
    out = {"clips": len(rows), "zero_MAD": float(np.mean([r["zero_MAD"] for r in rows]))}
    for name in names:
        have = [r[name] for r in rows if name in r]
        if have:
            out[name] = {k: float(np.mean([h[k] for h in have])) for k in METRIC_NAMES + ("s/frame",)}
    return out


def report(rows: list[dict], engines: list[str], title: str) -> dict:
    """Print the tables for `rows` and return their summary (per kind, per condition, overall)."""
    from mam2_server.eval.metrics import format_table
    names = list(engines)
    groups: dict[str, dict[str, list]] = {"kind": defaultdict(list), "condition": defaultdict(list)}
    for r in rows:
        groups["kind"][r["kind"]].append(r)
        groups["condition"][r["condition"]].append(r)
    summary = {by: {g: _summarise(rs, names) for g, rs in sorted(gr.items())} for by, gr in groups.items()}
    summary["overall"] = _summarise(rows, names)
    print(f"\n== {title}: {len(rows)} clips ==")
    for by in ("kind", "condition"):
        table = {}
        for group, s in summary[by].items():
            for name in names:
                if name in s:
                    table[f"{group} {name}"] = {**s[name], "vs zero": s[name]["MAD"] / max(s["zero_MAD"], 1e-9)}
            table[f"{group} all-zero"] = {"MAD": s["zero_MAD"]}
        print(format_table(table, columns=list(METRIC_NAMES) + ["s/frame", "vs zero"], precision=2,
                           name_header=f"{by} / engine"))
    s = summary["overall"]
    for name in names:
        if name in s:
            ratio = ""
            if "baseline" in s and name != "baseline":
                ratio = (f"  (x baseline: MAD {s[name]['MAD'] / max(s['baseline']['MAD'], 1e-9):.2f}, "
                         f"dtSSD {s[name]['dtSSD'] / max(s['baseline']['dtSSD'], 1e-9):.2f})")
            print(f"overall {name}: MAD {s[name]['MAD']:.2f} dtSSD {s[name]['dtSSD']:.2f}{ratio}")
    print(f"overall all-zero: MAD {s['zero_MAD']:.2f}")
    for name in names:
        worse = [f"{r['kind']}/{r['condition']}/{r['seed']} ({r[name]['MAD']:.1f} > {r['zero_MAD']:.1f})"
                 for r in rows if name in r and r[name]["MAD"] > r["zero_MAD"]]
        if worse:
            print(f"{name} worse than all-zero on {len(worse)} clip(s): " + ", ".join(worse))
    keyed = [r for r in rows if any(n + "+key" in r for n in engines)]
    if keyed:
        table = {}
        by_kind = defaultdict(list)
        for r in keyed:
            by_kind[r["kind"]].append(r)
        for kind, rs in sorted(by_kind.items()) + [("overall", keyed)]:
            for name in engines:
                one, two = (float(np.mean([r[n]["MAD"] for r in rs])) for n in (name, name + "+key"))
                table[f"{kind} {name}"] = {"1 key": one, "2 keys": two, "change": two - one}
        print(f"\nsecond keyframe ({len(keyed)} clips): MAD with the first-frame prompt only and with a second one")
        print(format_table(table, columns=["1 key", "2 keys", "change"], precision=2, name_header="kind / engine"))
        summary["second_key"] = table
    if any("prompt_MAD" in r for r in rows):
        for name in engines:
            worse = [f"{r['kind']}/{r['condition']}/{r['seed']} ({r[name]['frame_MAD'][min(r[name]['frame_MAD'])]:.1f}"
                     f" > {r['prompt_MAD']:.1f})" for r in rows
                     if r[name]["frame_MAD"][min(r[name]["frame_MAD"])] > r["prompt_MAD"]]
            print(f"{name} worse than the mask prompt on its frame on {len(worse)} clip(s)"
                  + (": " + ", ".join(worse) if worse else ""))
    return summary


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mam2_server.engines import EngineConfig, available_engines, create_engine
    from mam2_server.synth import CONDITIONS, KINDS, make_clip

    engines = _names(args.engines, (), available_engines(), "engines")
    kinds = _names(args.kinds, KINDS, KINDS, "kinds")
    width, height = _parse_size(args.size)
    splits = ("tuning", "heldout") if args.split == "both" else (args.split,)
    built = {name: create_engine(EngineConfig(name=name)) for name in engines}
    jobs = []
    for split in splits:
        conditions = _names(args.conditions, SPLITS[split].conditions, CONDITIONS, "conditions")
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(SPLITS[split].seeds)
        if split == "tuning":  # the held-out data stays out of anything called tuning
            leaked = sorted(set(conditions) & set(HELDOUT_CONDITIONS)) + sorted(set(seeds) & set(SPLITS["heldout"].seeds))
            if leaked:
                raise SystemExit(f"--split tuning: {', '.join(map(str, leaked))} belong to the held-out split")
        jobs += [(split, k, c, s, i) for c in conditions for k in kinds for i, s in enumerate(seeds)]
    rows = []
    bar = tqdm(total=len(jobs), desc="bench engines", unit="clip")
    for split, kind, condition, seed, i in jobs:
        camera = args.camera if args.camera != "alternate" else ("moving" if i % 2 == 0 else "locked")
        clip = make_clip(kind, num_frames=args.frames, width=width, height=height, seed=seed, camera=camera,
                         condition=condition)
        row = bench_clip(clip, built, args.prompt, args.second_key)
        row["split"] = split
        rows.append(row)
        bar.set_postfix_str(f"{kind}/{condition}/{seed} " + " ".join(f"{n} {row[n]['MAD']:.1f}" for n in engines))
        bar.update(1)
    bar.close()
    print(f"engines on synthetic clips ({width}x{height}, {args.frames} frames, {args.prompt} prompt on the first "
          f"frame{f', second key on frame {args.second_key}' if args.second_key else ''})")
    summaries = {split: report([r for r in rows if r["split"] == split], engines, f"{split} split")
                 for split in splits}
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"args": {"engines": engines, "kinds": kinds, "frames": args.frames, "size": [width, height],
                                "splits": list(splits), "prompt": args.prompt, "second_key": args.second_key,
                                "camera": args.camera},
                       "clips": rows, "summary": summaries}, fh, indent=2, default=float)
    return 0
