"""Held-out ablation of the classic engine's remaining tunables: each part switched off in turn.

    .venv/bin/python scripts/classic_ablation.py [--seeds 100] [--json out.json]

Every held-out condition and kind, 256x144, 8 frames, moving camera, box prompt on the first frame
(as `mam2 bench engines`). Prints MAD per clip and the mean per variant; docs/benchmarks.md has the
figures.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from mam2_server.bench.engines import SPLITS, bench_clip
from mam2_server.engines.classic import ClassicEngine
from mam2_server.stages.matte.evidence import EvidenceMatter
from mam2_server.stages.segment.tracker import FlowTracker
from mam2_server.synth import KINDS, make_clip

VARIANTS = {
    "classic": ({}, {}),
    "no see-through evidence": ({}, {"evidence_weight": 0.0}),
    "no pull to 0 outside the mask": ({}, {"unknown_pull": 0.0}),
    "no holes from the colour models": ({"hole_below": 0.0}, {}),
    "no temporal prior": ({}, {"temporal": 0.0}),
}


def variant(segment_options: dict, matte_options: dict) -> ClassicEngine:
    engine = ClassicEngine()
    engine.segmenter = FlowTracker(**segment_options)
    engine.matter = EvidenceMatter(**matte_options)
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="100")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()
    built = {name: variant(*opts) for name, opts in VARIANTS.items()}
    rows = []
    for condition in SPLITS["heldout"].conditions:
        for kind in KINDS:
            for seed in (int(s) for s in args.seeds.split(",")):
                clip = make_clip(kind, num_frames=8, width=256, height=144, seed=seed, camera="moving",
                                 condition=condition)
                row = bench_clip(clip, built, "box", 0)
                rows.append(row)
                print(kind, condition, seed, "  ".join(f"{n}: {row[n]['MAD']:.1f}" for n in built),
                      f"all-zero: {row['zero_MAD']:.1f}", flush=True)
    summary = {n: float(np.mean([r[n]["MAD"] for r in rows])) for n in built}
    summary["all-zero"] = float(np.mean([r["zero_MAD"] for r in rows]))
    print(json.dumps(summary, indent=1))
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"rows": rows, "summary": summary}, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
