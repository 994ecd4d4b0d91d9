"""`mam2 train`: two-stage MAM2 training on synthetic clips (paper sec. 3.2).

Stage 1 trains the main parameters (LoRA, memory, prompt encoder, PDD) on a mix of image
matting (IM), video matting (VM) and segmentation (VOS) samples; stage 2 trains only the
matter on IM samples. The data are synthetic clips from `mam2 synth`'s generators with
exact alpha: the only training data this repository has (no real datasets are bundled),
so this command is for smoke runs and for checking the training code, not for weights
that generalise. Checkpoints are MAM2 safetensors usable with
`mam2 matte --engine mam2 --checkpoint OUT/stage2_last.safetensors` (or `stage1_last`).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

STAGE_LR = {1: 4e-4, 2: 5e-4}  # paper sec. 4.1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train MAM2 on synthetic clips (stage 1 or 2)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny",
                        help="model preset for a fresh model (tiny, hiera_t, ...; default tiny); "
                             "ignored with --init / --resume, whose file carries its config")
    parser.add_argument("--stage", type=int, required=True, help="1: main parameters, 2: matter only")
    parser.add_argument("--steps", type=int, required=True, help="total optimisation steps (a resumed run counts on)")
    parser.add_argument("--out", required=True, help="folder for checkpoints and train_log.jsonl")
    parser.add_argument("--resume", help="continue a run from one of its checkpoints (same stage)")
    parser.add_argument("--init", help="start from these weights (MAM2 .safetensors or official SAM2.1 .pt)")
    parser.add_argument("--lr", type=float, help="AdamW learning rate (default 4e-4 stage 1, 5e-4 stage 2)")
    parser.add_argument("--batch-clips", type=int, default=2, help="samples per step (default 2)")
    parser.add_argument("--frames", type=int, default=3, help="frames per VM / VOS clip (default 3)")
    parser.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (default: at the end)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mam2_server.cli import CLIError

    if args.stage not in (1, 2):
        raise CLIError(f"--stage must be 1 or 2, got {args.stage}")
    if args.steps < 1 or args.batch_clips < 1 or args.frames < 1 or args.save_every < 0:
        raise CLIError("--steps, --batch-clips and --frames must be at least 1, --save-every at least 0")
    if args.resume and args.init:
        raise CLIError("give either --resume or --init, not both")
    for flag in ("resume", "init"):
        path = getattr(args, flag)
        if path and not Path(path).expanduser().is_file():
            raise CLIError(f"--{flag}: checkpoint not found: {path}")

    import torch

    from mam2_server.model.build import build_mam2, resolve_device
    from mam2_server.model.checkpoint import load_model
    from mam2_server.train.data import DEFAULT_RATIOS, SyntheticMattingData
    from mam2_server.train.loop import resume_state, train

    device = resolve_device(args.device)
    start, optim_state = 0, None
    if args.resume:
        model, start, optim_state, run_seed = resume_state(args.resume, args.stage, device=device)
        if run_seed != args.seed:  # the data stream and the noise follow the run's seed
            print(f"mam2 train: --resume continues with the run's seed {run_seed} (not --seed {args.seed})")
            args.seed = run_seed
    elif args.init:
        model, _ = load_model(args.init, device=device)
    else:
        model = build_mam2(args.config, device=device, seed=args.seed)
    if start >= args.steps:
        raise CLIError(f"--resume is at step {start}; --steps {args.steps} leaves nothing to do")
    ratios = DEFAULT_RATIOS if args.stage == 1 else {"IM": 1.0}  # eq. (2): the matter sees IM data only
    data = SyntheticMattingData(image_size=model.config.image_size, frames=args.frames, ratios=ratios,
                                seed=args.seed)
    torch.manual_seed(args.seed)
    result = train(model, data, stage=args.stage, steps=args.steps, out_dir=args.out,
                   lr=args.lr if args.lr is not None else STAGE_LR[args.stage], batch_clips=args.batch_clips,
                   save_every=args.save_every, seed=args.seed, start_step=start, optimizer_state=optim_state,
                   progress=not args.quiet)
    losses = [v for v in result.losses if not math.isnan(v)]
    if losses:
        print(f"stage {args.stage} steps {result.first_step + 1}-{result.last_step}: loss first {losses[0]:.4f} "
              f"last {losses[-1]:.4f} mean {sum(losses) / len(losses):.4f} min {min(losses):.4f}")
    else:
        print(f"stage {args.stage}: no step had a supervised sample")
    print(f"checkpoint: {result.checkpoints[-1]}")
    return 0
