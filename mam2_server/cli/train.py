"""`mam2 train`: two-stage MAM2 training (paper sec. 3.2, A.2, A.3) on the public datasets, on one or many GPUs.

Stage 1 trains the main parameters (LoRA, memory, prompt encoder, PDD) on the paper's
four data types, each step drawing one type (Table 7: probability 0.25 each; image
types 4 images a step, video types 1 clip of 4 frames): segmentation samples supervise
the mask, matting samples the trimap. Stage 2 trains only the matter on image matting.

    mam2 train --stage 1 --init sam2.1_hiera_large.pt --out runs/s1 --steps 600000 \\
        --data image_seg=DUTS-TR,DIS5K --data image_matting=AM-2K,P3M-10k,Distinctions-646 \\
        --data video_seg=YouTubeVOS/train,MOSE/train --data video_matting=VideoMatte240K_JPEG_HD \\
        --backgrounds BG-20k/train --precision bf16 --activation-checkpointing --workers 8
    mam2 train --stage 2 --init runs/s1/stage1_last.safetensors --init-matter dino_deitsmall16_pretrain.pth \\
        --out runs/s2 --steps 3500 --data image_matting=... --backgrounds BG-20k/train --precision bf16

On many GPUs: ``torchrun --nproc-per-node 8 -m mam2_server.cli train ...`` (same arguments; add
``--nnodes``/``--rdzv-endpoint`` for several machines). ``--data synthetic`` trains on
rendered clips (no downloads; tests and smoke runs). docs/training.md has the whole recipe.
Checkpoints are MAM2 safetensors: ``mam2 matte --engine mam2 --checkpoint OUT/stage2_last.safetensors``.
"""
from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

STAGE_LR = {1: 4e-4, 2: 5e-4}  # paper sec. 4.1

log = logging.getLogger("mam2.train")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train MAM2 (stage 1 or 2) on datasets or synthetic clips",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", type=int, required=True, help="1: main parameters, 2: matter only")
    parser.add_argument("--steps", type=int, required=True, help="total optimiser steps (a resumed run counts on)")
    parser.add_argument("--out", required=True, help="folder for checkpoints, train_log.csv, train_events.jsonl")
    data = parser.add_argument_group("data")
    data.add_argument("--data", action="append", default=[], metavar="KIND=DIR[,DIR]",
                      help="datasets of a kind: image_seg, image_matting, video_seg, video_matting; repeatable; "
                           "'synthetic' (alone, or as a DIR) for rendered clips (default: synthetic)")
    data.add_argument("--backgrounds", help="background images for foreground + alpha sets (e.g. BG-20k/train)")
    data.add_argument("--prob", action="append", default=[], metavar="KIND=P",
                      help="sample probability of a kind (default 0.25 each, Table 7)")
    data.add_argument("--batch", action="append", default=[], metavar="KIND=N",
                      help="samples per step of a kind (default 4 for images, 1 for videos)")
    data.add_argument("--frames", action="append", default=[], metavar="KIND=N",
                      help="frames per video sample (default 4)")
    data.add_argument("--workers", type=int, default=0, help="DataLoader processes building batches (default 0)")
    model = parser.add_argument_group("model")
    model.add_argument("--init", help="start from these weights: an official sam2.1_hiera_*.pt or a MAM2 "
                                      ".safetensors (stage 2: stage 1's result)")
    model.add_argument("--init-matter", help="DINO ViT-S/16 checkpoint for the matter's ViT "
                                             "(dino_deitsmall16_pretrain.pth)")
    model.add_argument("--config", help="model preset (tiny, hiera_t, hiera_s, hiera_b+, hiera_l): for a random "
                                        "init (default tiny) or to override the one matched to a SAM2.1 .pt")
    model.add_argument("--resume", help="continue a run from one of its checkpoints (same stage)")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--lr", type=float, help="initial AdamW learning rate (default 4e-4 stage 1, 5e-4 stage 2)")
    optim.add_argument("--weight-decay", type=float, default=0.01)
    optim.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    optim.add_argument("--warmup", type=int, default=0, help="linear warm-up steps (default 0)")
    optim.add_argument("--accum", type=int, default=1, help="micro-batches per optimiser step (default 1)")
    optim.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast on CUDA")
    optim.add_argument("--activation-checkpointing", action="store_true",
                       help="recompute encoder and matter blocks in backward (less memory at 1024)")
    parser.add_argument("--save-every", type=int, default=0, help="also checkpoint every N steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available; "
                                                       "under torchrun each rank takes cuda:LOCAL_RANK)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    from mam2_server.cli import CLIError

    if args.stage not in (1, 2):
        raise CLIError(f"--stage must be 1 or 2, got {args.stage}")
    if args.steps < 1 or args.accum < 1 or args.save_every < 0 or args.workers < 0 or args.warmup < 0:
        raise CLIError("--steps and --accum must be at least 1; --save-every, --workers, --warmup at least 0")
    if args.resume and (args.init or args.config):
        raise CLIError("--resume continues a run with its own weights and config: drop --init / --config")
    if args.resume and args.init_matter:
        raise CLIError("--resume continues a run with its own weights, the matter's included (--init-matter would "
                       "replace the trained matter with the DINO weights under the resumed AdamW state): drop "
                       "--init-matter")
    for flag in ("resume", "init", "init_matter"):
        path = getattr(args, flag)
        if path and not Path(path).expanduser().is_file():
            raise CLIError(f"--{flag.replace('_', '-')}: file not found: {path}")
    if args.backgrounds and not Path(args.backgrounds).expanduser().is_dir():
        raise CLIError(f"--backgrounds: not a folder: {args.backgrounds}")


def _train_settings(args: argparse.Namespace):
    from mam2_server.train.run import TrainSettings
    return TrainSettings(stage=args.stage, steps=args.steps,
                         lr=float(args.lr if args.lr is not None else STAGE_LR[args.stage]),
                         weight_decay=args.weight_decay, warmup_steps=args.warmup, schedule=args.schedule,
                         accum_steps=args.accum, save_every=args.save_every, seed=args.seed,
                         precision=args.precision, workers=args.workers)


def run(args: argparse.Namespace) -> int:
    from mam2_server.cli import CLIError

    _check(args)
    import torch

    from mam2_server.train.distributed import DistContext
    from mam2_server.train.init import enable_activation_checkpointing, init_matter_from_dino, init_model
    from mam2_server.train.mix import DataSpec, MixedData
    from mam2_server.train.run import train
    from mam2_server.train.state import resume_state

    spec = DataSpec.from_args(args.data, probs=args.prob, batches=args.batch, frames=args.frames,
                              backgrounds=args.backgrounds)
    dist = DistContext.from_env(args.device)
    say = print if dist.is_main else (lambda *a, **k: None)
    try:
        start, optim_state = 0, None
        if args.resume:
            state = resume_state(args.resume, args.stage, device=dist.device)
            model, start, optim_state = state.model, state.step, state.optimizer
            if state.seed != args.seed:  # the data stream and the noise follow the run's seed
                say(f"mam2 train: --resume continues with the run's seed {state.seed} (not --seed {args.seed})")
                args.seed = state.seed
            if state.world_size != dist.world_size:
                say(f"mam2 train: the run had {state.world_size} process(es), this one {dist.world_size}: the "
                    "data stream from here on differs from an uninterrupted run")
            changed = state.changed_settings(_train_settings(args).recorded())
            if changed:
                say(f"mam2 train: the run had other settings ({', '.join(changed)}): the data stream (--accum) or "
                    "the learning rate from here on differs from an uninterrupted run")
            origin = f"{args.resume} (step {start})"
        else:
            model, origin = init_model(args.init, args.config, device=dist.device, seed=args.seed)
            if args.init_matter:
                origin += "; " + init_matter_from_dino(model, args.init_matter)
        if start >= args.steps:
            raise CLIError(f"--resume is at step {start}; --steps {args.steps} leaves nothing to do")
        if args.activation_checkpointing:
            enable_activation_checkpointing(model)
        data = MixedData(spec, image_size=model.config.image_size, stage=args.stage, seed=args.seed)
        say(f"mam2 train: stage {args.stage}, {model.config.name} at {model.config.image_size}px from {origin}; "
            f"{dist.world_size} process(es) on {dist.device.type}")
        for line in data.describe():
            say(f"  {line}")
        settings = _train_settings(args)  # after a resume has set the run's seed
        torch.manual_seed(args.seed)
        result = train(model, data, settings, args.out, dist=dist, start_step=start, optimizer_state=optim_state,
                       progress=not args.quiet)
    finally:
        dist.close()
    losses = [v for v in result.losses if not math.isnan(v)]
    if losses:
        say(f"stage {args.stage} steps {result.first_step + 1}-{result.last_step}: loss first {losses[0]:.4f} "
            f"last {losses[-1]:.4f} mean {sum(losses) / len(losses):.4f} min {min(losses):.4f}")
    if result.checkpoints:
        say(f"checkpoint: {result.checkpoints[-1]}")
    return 0
