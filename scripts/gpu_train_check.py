"""Training on one CUDA GPU: seconds per step and peak memory of both stages (random init,
synthetic clips), for the paper's model and a small one. Run by scripts/gpu_check.sh's
environment (PYTHONPATH with .gpu_site/):

    python3 scripts/gpu_train_check.py --json $OUT/train.json

Measured, never asserted: a finite loss and the timings are printed.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time

import torch

from mam2_server.model.build import build_mam2
from mam2_server.model.config import preset
from mam2_server.train.data import DEFAULT_RATIOS, SyntheticMattingData
from mam2_server.train.loop import freeze_for_stage, train_step


def measure(config: str, size: int, stage: int, steps: int, frames: int, batch_clips: int, autocast: str | None,
            device: str = "cuda"):
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build_mam2(preset(config, image_size=size, autocast=autocast), device=device, seed=0)
    params = freeze_for_stage(model, stage)
    optimizer = torch.optim.AdamW(params, lr=4e-4 if stage == 1 else 5e-4, weight_decay=0.01)
    ratios = DEFAULT_RATIOS if stage == 1 else {"IM": 1.0}
    data = SyntheticMattingData(image_size=size, frames=frames, ratios=ratios, seed=0, render_height=min(size, 512))
    batches = [[data[i * batch_clips + j].to(device) for j in range(batch_clips)] for i in range(steps)]
    times, losses = [], []
    for batch in batches:
        sync()
        t0 = time.perf_counter()
        result = train_step(model, batch, stage, optimizer)
        sync()
        times.append(time.perf_counter() - t0)
        losses.append(float(result.loss))
    steady = sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else times[0]
    return {"config": config, "size": size, "stage": stage, "frames": frames, "batch_clips": batch_clips,
            "autocast": autocast, "s_per_step_median": steady, "first_step_s": times[0],
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None, "losses": losses,
            "finite": all(math.isfinite(v) for v in losses)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--json", default=None)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny config at 128 px only (to try the script on a CPU)")
    args = p.parse_args()
    runs = [("hiera_t", 512, 1, None), ("hiera_t", 512, 2, None),
            ("hiera_l", 1024, 1, "bfloat16"), ("hiera_l", 1024, 2, "bfloat16")]
    if args.quick:
        runs = [("tiny", 128, 1, None), ("tiny", 128, 2, None)]
    out = []
    for config, size, stage, autocast in runs:
        try:
            r = measure(config, size, stage, args.steps, frames=3, batch_clips=2, autocast=autocast,
                        device=args.device)
        except Exception as exc:  # report and go on: one failing config must not hide the others
            r = {"config": config, "size": size, "stage": stage, "error": repr(exc)}
        out.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "losses"}), flush=True)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
