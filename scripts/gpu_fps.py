"""End-to-end streaming speed of the MAM2 network on one device (random weights).

Times `StreamingTracker.track` frame after frame as the `mam2` engine calls it: through
`prefetch` (the next frame's upload and encoder enqueued on a side stream before the current frame
decodes), then encoder, memory attention, PDD + MSS, memory encoder and matter, and the alpha back on
the host. The memory bank is full (warm-up frames first; CUDA graphs are captured then). This is the
figure the issue's "20 fps at 1024" target is about. `mam2 bench model` instead times each stage
apart, synchronising between them.

`--cuda` takes the `MAM2_CUDA` form (`model.runtime.CudaOptions`: async_io, overlap, graphs,
static_routing; default all on). `--matrix` builds the model once and times every option on, each
option off alone, and every option off, so one run gives what each one is worth.

    python scripts/gpu_fps.py --config hiera_l --size 1024 --autocast bfloat16 --matrix --json $OUT/fps.json
    python scripts/gpu_fps.py --config hiera_l --cuda graphs=off
    python scripts/gpu_fps.py --config tiny --size 256 --device cpu --frames 3 --warmup 2   # a dry run
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402


def plates(width: int, height: int, count: int = 8):
    """`count` (H, W, 3) display-referred frames of a disc moving over noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for i in range(count):
        img = (0.2 + 0.2 * rng.random((height, width, 3))).astype(np.float32)
        img[(xx - width * (0.3 + 0.02 * i)) ** 2 + (yy - height / 2) ** 2 < (height / 5) ** 2] = (0.9, 0.5, 0.2)
        out.append(img)
    return out


def matrix(options_cls) -> list[tuple[str, object]]:
    """(name, options): everything on, each option off alone, everything off."""
    import dataclasses

    names = [f.name for f in dataclasses.fields(options_cls)]
    return ([("all_on", options_cls())] + [(f"no_{n}", options_cls.parse(f"{n}=off")) for n in names]
            + [("all_off", options_cls.parse("all=off"))])


def time_tracker(tracker, images, *, width: int, height: int, warmup: int, frames: int, sync) -> dict:
    """Keyframe, `warmup` tracked frames, then `frames` timed ones, all through `prefetch`."""
    total = 1 + warmup + frames
    read = lambda i: images[i % len(images)]  # noqa: E731
    from mam2_server.prompts import Prompt

    state = tracker.new_shot(width, height, num_frames=total)
    tracker.add_keyframe(state, 0, images[0], Prompt(frame=0, box=(width * 0.2, height * 0.25, width * 0.5,
                                                                    height * 0.75)))
    t_warm = time.perf_counter()
    for i, image in tracker.prefetch(range(1, 1 + warmup), read):
        tracker.track(state, i, image)
    sync()
    warm_s = time.perf_counter() - t_warm
    t0 = time.perf_counter()
    for i, image in tracker.prefetch(range(1 + warmup, total), read):
        out = tracker.track(state, i, image)  # the alpha is a host array: one wait per frame
    sync()
    ms = (time.perf_counter() - t0) * 1e3 / frames
    return {"warmup_s": round(warm_s, 2), "ms_per_frame": round(ms, 2), "fps": round(1e3 / ms, 2),
            "alpha_shape": list(out.alpha.shape), "alpha_finite": bool(np.isfinite(out.alpha).all()),
            "graphs": tracker.graphs.status() if tracker.graphs is not None else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="hiera_l")
    parser.add_argument("--size", type=int, default=1024, help="model input size (default 1024)")
    parser.add_argument("--plate", default="1920x1080", help="plate WIDTHxHEIGHT (default 1920x1080)")
    parser.add_argument("--autocast", default="bfloat16", choices=("none", "bfloat16", "float16"))
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder and matter")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cuda", default="", metavar="OPTIONS",
                        help="speed options as MAM2_CUDA, e.g. graphs=off,overlap=off (default all on)")
    parser.add_argument("--matrix", action="store_true", help="time all on, each option off, all off")
    parser.add_argument("--warmup", type=int, default=20, help="frames before timing (fills the bank; >= 16)")
    parser.add_argument("--frames", type=int, default=50, help="timed frames")
    parser.add_argument("--target-fps", type=float, default=20.0)
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args(argv)

    import torch

    from mam2_server.model.build import build_mam2
    from mam2_server.model.config import preset
    from mam2_server.model.runtime import CudaOptions
    from mam2_server.model.tracker import StreamingTracker

    device = torch.device(args.device)
    width, height = (int(v) for v in args.plate.lower().split("x"))
    config = preset(args.config, image_size=args.size, autocast=None if args.autocast == "none" else args.autocast,
                    compile=args.compile)
    model = build_mam2(config, device=device, seed=0)
    images = plates(width, height)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    runs = matrix(CudaOptions) if args.matrix else [("run", CudaOptions.parse(args.cuda))]
    report = {"config": args.config, "size": args.size, "plate": [width, height], "autocast": args.autocast,
              "compile": args.compile, "device": str(device), "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "warmup_frames": args.warmup, "frames": args.frames, "target_fps": args.target_fps, "runs": []}
    for name, options in runs:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        tracker = StreamingTracker(model, cuda=options)
        run = {"name": name, "cuda": options.describe(),
               **time_tracker(tracker, images, width=width, height=height, warmup=args.warmup, frames=args.frames,
                              sync=sync),
               "peak_mib": round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None}
        run["meets_target"] = run["fps"] >= args.target_fps
        report["runs"].append(run)
        print(f"{args.config} at {args.size} ({args.autocast}{', compiled' if args.compile else ''}) on {device}, "
              f"{width}x{height} plates, {name} [{run['cuda']}]: {run['ms_per_frame']:.1f} ms/frame = "
              f"{run['fps']:.1f} fps over {args.frames} frames ({'meets' if run['meets_target'] else 'below'} the "
              f"{args.target_fps:g} fps target); graphs {run['graphs']}", flush=True)
        if args.json_out:  # after every run: a matrix cut short by its time limit keeps what it measured
            Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
        del tracker
    return 0


if __name__ == "__main__":
    sys.exit(main())
