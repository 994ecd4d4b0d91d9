"""Two-stage MAM2 training (paper sec. 3.2 / A.2): parameter freezing, steps, checkpoints.

* stage 1 trains theta_main: everything trainable except the matter (LoRA, memory,
  prompt encoder, PDD), on IM / VM / VOS samples with eq. (1);
* stage 2 trains theta_matter only, on IM samples with eq. (2).

The image encoder's base weights are frozen in both stages. Checkpoints are MAM2
safetensors (`save_mam2`, loadable by `mam2 matte --engine mam2 --checkpoint`) whose
metadata also records the training stage / step / seed; the AdamW state goes to a
`.optim.pt` file next to it so `--resume` continues exactly.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mam2_server.model.build import MAM2Model
from mam2_server.model.checkpoint import CheckpointError, load_mam2, save_mam2
from mam2_server.train.data import SyntheticMattingData, TrainSample
from mam2_server.train.forward import matter_forward, video_forward
from mam2_server.train.losses import (
    LossBreakdown,
    LossWeights,
    stage_loss,
    supervised_terms,
)

DEFAULT_WEIGHTS = LossWeights()  # SAM2 fine-tune weights (frozen dataclass: safe to share)

__all__ = [
    "StepResult",
    "TrainRun",
    "evaluate_loss",
    "freeze_for_stage",
    "load_training_checkpoint",
    "resume_state",
    "sample_loss",
    "save_training_checkpoint",
    "train",
    "train_step",
]


def freeze_for_stage(model: MAM2Model, stage: int) -> list[nn.Parameter]:
    """Set requires_grad for `stage` (1: theta_main, 2: theta_matter) and the train/eval modes;
    returns the trainable parameters. Encoder base weights are never trained."""
    if stage not in (1, 2):
        raise ValueError(f"training stage must be 1 or 2, got {stage!r}")
    model.requires_grad_(False)
    params = list(model.trainable_parameters("main" if stage == 1 else "matter"))
    for p in params:
        p.requires_grad_(True)
    # the frozen half stays in eval mode (BatchNorm statistics, dropout) as at inference
    model.sam.train(stage == 1)
    model.matter.train(stage == 2)
    return params


def _frame_targets(sample: TrainSample, t: int) -> dict[str, torch.Tensor]:
    targets = {"mask": sample.mask[t:t + 1]}
    if sample.alpha is not None:
        targets["alpha"] = sample.alpha[t:t + 1]
    if sample.trimap is not None:
        targets["trimap"] = sample.trimap[t:t + 1]
    return targets


def sample_loss(model: MAM2Model, sample: TrainSample, stage: int,
                weights: LossWeights = DEFAULT_WEIGHTS) -> LossBreakdown:
    """Eq. (1) / (2) for one sample, averaged over its frames; skipped samples run no forward."""
    if not supervised_terms(stage, sample.kind):
        return LossBreakdown(torch.zeros((), device=sample.images.device), {}, active=False)
    frames = video_forward(model, sample) if stage == 1 else matter_forward(model, sample)
    per_frame = [stage_loss(stage, sample.kind, out, _frame_targets(sample, t), weights)
                 for t, out in enumerate(frames)]
    total = torch.stack([b.total for b in per_frame]).mean()
    parts = {k: sum(b.parts[k] for b in per_frame) / len(per_frame) for k in per_frame[0].parts}
    return LossBreakdown(total, parts, active=True)


@dataclass
class StepResult:
    loss: float  # mean over the active samples (nan when every sample was skipped)
    parts: dict[str, float]
    active: int  # samples that contributed
    grad_norm: float


def _batch_loss(model: MAM2Model, batch: Sequence[TrainSample], stage: int, weights: LossWeights):
    results = [sample_loss(model, s, stage, weights) for s in batch]
    active = [r for r in results if r.active]
    if not active:
        return None, {}, 0
    parts: dict[str, float] = {}
    for r in active:
        for k, v in r.parts.items():
            parts[k] = parts.get(k, 0.0) + v / len(active)
    return torch.stack([r.total for r in active]).mean(), parts, len(active)


def train_step(model: MAM2Model, batch: Sequence[TrainSample], stage: int, optimizer: torch.optim.Optimizer, *,
               weights: LossWeights = DEFAULT_WEIGHTS, max_grad_norm: float = 1.0) -> StepResult:
    """One optimisation step on `batch` (call `freeze_for_stage` first). A batch with no
    supervised sample for this stage changes nothing."""
    optimizer.zero_grad(set_to_none=True)
    loss, parts, active = _batch_loss(model, batch, stage, weights)
    if loss is None:
        return StepResult(math.nan, {}, 0, 0.0)
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm)) if params else 0.0
    optimizer.step()
    return StepResult(float(loss.detach()), parts, active, grad_norm)


def evaluate_loss(model: MAM2Model, batch: Sequence[TrainSample], stage: int, *, seed: int = 0,
                  weights: LossWeights = DEFAULT_WEIGHTS) -> float:
    """The training loss of `batch` without updating anything (dropout / Gumbel noise reseeded
    with `seed`, so two calls on unchanged weights agree)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        loss, _, _ = _batch_loss(model, batch, stage, weights)
    return math.nan if loss is None else float(loss)


# -- checkpoints -----------------------------------------------------------------------------
def _optim_path(path: Path) -> Path:
    return path.with_suffix(".optim.pt")


def save_training_checkpoint(model: MAM2Model, optimizer: torch.optim.Optimizer | None, path: str | Path, *,
                             stage: int, step: int, seed: int) -> Path:
    """MAM2 safetensors + training metadata; the optimizer state (if any) in `<path>.optim.pt`."""
    meta = {"train_stage": str(stage), "train_step": str(step), "train_seed": str(seed)}
    path = save_mam2(model, path, extra_metadata=meta)
    optim = _optim_path(path)
    if optimizer is None:
        optim.unlink(missing_ok=True)  # never pair these weights with an older run's optimizer
    else:
        tmp = optim.with_name(f".{optim.name}.tmp")
        torch.save(optimizer.state_dict(), tmp)
        os.replace(tmp, optim)  # whole or not at all
    return path


def load_training_checkpoint(path: str | Path, *, device: str | torch.device = "cpu"
                             ) -> tuple[MAM2Model, dict[str, str], dict | None]:
    """(model, safetensors metadata, optimizer state dict or None) of a checkpoint."""
    from safetensors import safe_open

    path = Path(path)
    model = load_mam2(path, device=device)  # raises CheckpointError for a missing / foreign file
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    optim = _optim_path(path)
    state = torch.load(optim, map_location=device, weights_only=True) if optim.is_file() else None
    return model, meta, state


# -- the loop ----------------------------------------------------------------------------------
@dataclass
class TrainRun:
    """What `train` did: the per-step log and the checkpoints written."""

    losses: list[float] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)
    first_step: int = 0
    last_step: int = 0


def train(model: MAM2Model, data: SyntheticMattingData, *, stage: int, steps: int, out_dir: str | Path,
          lr: float = 4e-4, weight_decay: float = 0.01, batch_clips: int = 2, save_every: int = 0,
          seed: int = 0, start_step: int = 0, optimizer_state: dict | None = None,
          max_grad_norm: float = 1.0, progress: bool = True,
          log: Callable[[int, StepResult], None] | None = None) -> TrainRun:
    """Train `stage` from step `start_step` to `steps` (total, so a resumed run continues the count).

    Writes `out_dir/step_NNNNNN.safetensors` every `save_every` steps (0: only at the end), plus
    `out_dir/stage{S}_last.safetensors` and `out_dir/train_log.jsonl` (one JSON line per step).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = model.device
    params = freeze_for_stage(model, stage)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    run = TrainRun(first_step=start_step, last_step=start_step)
    bar = tqdm(range(start_step, steps), desc=f"stage {stage}", disable=not progress, unit="step")
    with open(out_dir / "train_log.jsonl", "a", encoding="utf-8") as log_file:
        for step in bar:
            torch.manual_seed(seed * 1_000_003 + step)  # dropout / Gumbel noise reproducible on resume
            batch = [s.to(device) for s in data.batch(step, batch_clips)]
            t0 = time.perf_counter()
            result = train_step(model, batch, stage, optimizer, max_grad_norm=max_grad_norm)
            run.losses.append(result.loss)
            run.last_step = step + 1
            log_file.write(json.dumps({"step": step + 1, "stage": stage, "loss": result.loss, "parts": result.parts,
                                       "active": result.active, "grad_norm": result.grad_norm,
                                       "kinds": [s.kind for s in batch],
                                       "seconds": round(time.perf_counter() - t0, 4)}) + "\n")
            log_file.flush()
            bar.set_postfix(loss=f"{result.loss:.4f}")
            if log is not None:
                log(step + 1, result)
            if save_every and (step + 1) % save_every == 0 and step + 1 < steps:
                run.checkpoints.append(save_training_checkpoint(
                    model, optimizer, out_dir / f"stage{stage}_step_{step + 1:06d}.safetensors", stage=stage,
                    step=step + 1, seed=seed))
    final = out_dir / f"stage{stage}_step_{run.last_step:06d}.safetensors"
    for path in (final, out_dir / f"stage{stage}_last.safetensors"):
        run.checkpoints.append(save_training_checkpoint(model, optimizer, path, stage=stage, step=run.last_step,
                                                        seed=seed))
    model.eval()
    return run


def resume_state(path: str | Path, stage: int, *, device: str | torch.device = "cpu"):
    """(model, next step, optimizer state, seed) to continue a run; the stage must match."""
    model, meta, optim = load_training_checkpoint(path, device=device)
    if "train_step" not in meta:
        raise CheckpointError(f"{path}: not a training checkpoint (no train_step metadata); use --init for it")
    if int(meta.get("train_stage", stage)) != stage:
        raise CheckpointError(f"{path}: a stage {meta['train_stage']} checkpoint cannot resume stage {stage}; "
                              f"use --init to start stage {stage} from it")
    return model, int(meta["train_step"]), optim, int(meta.get("train_seed", 0))
