"""`mam2 bench model`: MAM2 network parameters per part and ms per frame per stage.

Random weights (nothing is downloaded). Parameter counts are printed for every real
config (built, never run) next to the paper's 256.83 M total; timings run the chosen
config at each --sizes model input size with a full memory bank (1 conditioning
frame, 6 mask memories, 15 object pointers), the matter on a square frame of the same
size. Measured, never asserted. --autocast and --compile apply on CUDA only (CPU runs
eager float32); with --compile the first (warm-up) round includes compilation, and each
size compiles anew. On CUDA the peak allocated memory per size is reported too.

    mam2 bench model --config tiny --sizes 512,1024 --frames 3 --device cpu
    python -m mam2_server.bench.model --config hiera_l --sizes 1024 --autocast bfloat16 --compile

(`python -m mam2_server.bench.model` needs only torch + sam2, not the I/O and server
dependencies that the `mam2` command imports.)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time

PAPER_TOTAL_M = 256.83
COUNT_CONFIGS = ("tiny", "hiera_t", "hiera_s", "hiera_b+", "hiera_l")
STAGES = ("encoder", "memory_attention", "pdd_pass1", "pdd_pass2", "memory_encoder", "matter")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny", help=f"timed config: {', '.join(COUNT_CONFIGS)}")
    parser.add_argument("--sizes", default="512,1024", help="comma-separated model input sizes (px)")
    parser.add_argument("--frames", type=int, default=3, help="timed repetitions per stage (median reported)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    parser.add_argument("--autocast", choices=("none", "bfloat16", "float16"), default="none",
                        help="autocast dtype on CUDA (default: none, float32)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the image encoder and matter (CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-counts", action="store_true", help="skip the parameter table of all configs")
    parser.add_argument("--json", dest="json_out", default=None, help="write all numbers to this JSON file")


def parameter_table() -> dict[str, dict[str, int]]:
    from mam2_server.model.build import build_mam2

    return {name: build_mam2(name, device="cpu").part_parameters() for name in COUNT_CONFIGS}


def time_stages(config_name: str, size: int, frames: int, device, *, autocast: str | None = None,
                compile: bool = False) -> dict[str, float]:
    import numpy as np
    import torch

    from mam2_server.model.build import build_mam2
    from mam2_server.model.config import preset
    from mam2_server.model.tracker import StreamingTracker
    from mam2_server.prompts import Prompt

    config = preset(config_name, image_size=size, autocast=autocast, compile=compile)
    model = build_mam2(config, device=device, seed=0)
    sam = model.sam
    tracker = StreamingTracker(model, run_matter=False)
    rng = np.random.default_rng(0)
    img = rng.random((size, size, 3)).astype(np.float32)
    shot = tracker.new_shot(size, size)
    tracker.add_keyframe(shot, 0, img, Prompt(frame=0, box=(size * 0.3, size * 0.3, size * 0.7, size * 0.6)))
    cond = shot.cond[0]
    for i in range(1, tracker.keep_ptrs + 1):  # a full bank without running 15 frames
        shot.recent[i] = dataclasses.replace(cond, index=i)
    t = tracker.keep_ptrs + 1
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {s: [] for s in STAGES}

    def clock(stage, fn):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times[stage].append((time.perf_counter() - t0) * 1e3)
        return out

    with torch.inference_mode(), model.autocast():
        for _ in range(frames + 1):  # the first round is warm-up
            feats = clock("encoder", lambda: tracker._features(img))
            _, _, vf, vp, fs = feats
            hr = [x.permute(1, 2, 0).reshape(1, x.size(2), *s) for x, s in zip(vf[:-1], fs[:-1])]
            pix = clock("memory_attention", lambda: sam._prepare_memory_conditioned_features(
                t, False, vf[-1:], vp[-1:], fs[-1:], tracker._output_dict(shot), 10**6))
            p1 = clock("pdd_pass1", lambda: sam._forward_pdd_heads(pix, None, None, hr, True, with_trimap=False))
            p2 = clock("pdd_pass2", lambda: sam.mss_second_pass(vf, fs, hr, p1.low_res_masks))
            clock("memory_encoder", lambda: sam._encode_new_memory(vf, fs, p1.high_res_masks,
                                                                   p1.object_score_logits, False))
            trimap = torch.nn.functional.interpolate(p2.trimap_logits, size=(size, size), mode="bilinear")
            trimap = trimap.argmax(1, keepdim=True).float() * 0.5
            image = torch.from_numpy(img).permute(2, 0, 1)[None].to(device)
            clock("matter", lambda: model.matter(model.matter.normalise(image), trimap))
    return {s: statistics.median(v[1:]) for s, v in times.items()}


def run(args: argparse.Namespace) -> int:
    import torch

    from mam2_server.model.build import resolve_device
    from mam2_server.model.config import preset

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        preset(args.config)
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError as exc:
        raise SystemExit(f"mam2 bench model: {exc}") from None
    if any(s % 16 or s < 64 for s in sizes):
        raise SystemExit("--sizes: model input sizes are multiples of 16, at least 64")
    device = resolve_device(args.device)
    autocast = None if args.autocast == "none" else args.autocast
    report: dict = {"device": str(device), "threads": torch.get_num_threads(), "config": args.config,
                    "autocast": autocast, "compile": args.compile, "torch": torch.__version__}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    if not args.no_counts:
        table = parameter_table()
        report["parameters"] = table
        print(f"parameters (M); paper total {PAPER_TOTAL_M} M")
        cols = list(next(iter(table.values())))
        print(f"{'config':10s}" + "".join(f"{c:>15s}" for c in cols))
        for name, counts in table.items():
            print(f"{name:10s}" + "".join(f"{counts[c] / 1e6:15.3f}" for c in cols))
    report["ms_per_frame"], report["peak_mib"], report["wall_s"] = {}, {}, {}
    print(f"\nms per frame per stage: config {args.config}, device {device}, autocast {autocast or 'none'}, "
          f"compile {args.compile}, {torch.get_num_threads()} threads, median of {args.frames}")
    print(f"{'size':>6s}" + "".join(f"{s:>18s}" for s in STAGES) + f"{'total':>10s}{'peak MiB':>10s}{'wall s':>8s}")
    for size in sizes:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        ms = time_stages(args.config, size, args.frames, device, autocast=autocast, compile=args.compile)
        wall = time.perf_counter() - t0  # build + warm-up (compilation) + timed rounds
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        report["ms_per_frame"][str(size)], report["peak_mib"][str(size)] = ms, peak
        report["wall_s"][str(size)] = wall
        print(f"{size:6d}" + "".join(f"{ms[s]:18.1f}" for s in STAGES) + f"{sum(ms.values()):10.1f}"
              f"{'-' if peak is None else f'{peak:.0f}':>10s}{wall:8.1f}", flush=True)
        if args.json_out:  # after every size, so a run cut short still leaves what it measured
            with open(args.json_out, "w") as fh:
                json.dump(report, fh, indent=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mam2_server.bench.model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
