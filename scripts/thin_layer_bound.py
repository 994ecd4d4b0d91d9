"""What any engine must give up on a thin layer whose background nothing reveals.

    .venv/bin/python scripts/thin_layer_bound.py [--seeds 0,1,2,3] [--engine classic]

A still frame of a translucent layer (smoke, a cloud, glass) over a background is, pixel for pixel,
also the photograph of an opaque card printed with that picture and cut to the layer's visible
extent V (alpha > 0.05). Both are the same input, so any engine gives both the same matte o. The
layer's floor (no worse than an all-zero matte) says sum|o - a| <= sum a, hence sum o <= 2 sum a:
on the card, which is opaque (alpha 1 on V), the matte can average at most 2 x mean(a over V), and
its MAD is at least (|V| - 2 sum a) / N. Prints, per kind, for the synthetic generator's `still`
condition: mean alpha over V, that ceiling, the card's MAD floor against its all-zero MAD, and with
--engine the engine's MAD on the layer and on the card (one run: the input is the same).
"""
from __future__ import annotations

import argparse

import numpy as np

from mam2_server.bench.engines import clip_data, make_prompt, make_source
from mam2_server.synth import KINDS, make_clip

VISIBLE = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3", help="generator seeds (default: the tuning split's)")
    parser.add_argument("--engine", default=None, help="also run this engine (box prompt) on each frame")
    args = parser.parse_args()
    engine = None
    if args.engine:
        from mam2_server.engines import EngineConfig, create_engine
        engine = create_engine(EngineConfig(name=args.engine))
    seeds = [int(s) for s in args.seeds.split(",")]
    header = f"{'kind':8s} {'mean a on V':>11s} {'card ceiling':>12s} {'card MAD floor':>14s} {'card all-zero':>13s}"
    if engine:
        header += f" {'layer: engine':>13s} {'layer all-zero':>14s} {'card: engine':>12s}"
    print(header)
    for kind in KINDS:
        rows = []
        for seed in seeds:
            clip = make_clip(kind, num_frames=1, width=256, height=144, seed=seed, condition="still")
            frames, linear, alphas = clip_data(clip)
            a = alphas[0].astype(np.float64)
            card = (a > VISIBLE).astype(np.float64)
            row = [a[card > 0].mean(), 1e3 * max(0.0, card.sum() - 2 * a.sum()) / a.size, 1e3 * card.mean()]
            if engine:
                prompt = make_prompt("box", frames[0], alphas[0])
                o = next(iter(engine.run(make_source(linear, frames), [prompt]))).alpha.astype(np.float64)
                row += [1e3 * np.abs(o - a).mean(), 1e3 * a.mean(), 1e3 * np.abs(o - card).mean()]
            rows.append(row)
        m = np.mean(rows, axis=0)
        line = f"{kind:8s} {m[0]:11.2f} {min(1.0, 2 * m[0]):12.2f} {m[1]:14.1f} {m[2]:13.1f}"
        if engine:
            line += f" {m[3]:13.1f} {m[4]:14.1f} {m[5]:12.1f}"
        print(line)


if __name__ == "__main__":
    main()
