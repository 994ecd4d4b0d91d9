"""Two-stage MAM2 training steps (paper sec. 3.2 / A.2): parameter freezing, the loss of a batch, one step.

* stage 1 trains theta_main: everything trainable except the matter (LoRA, memory,
  prompt encoder, PDD), on IS / IM / VM / VOS samples with eq. (1);
* stage 2 trains theta_matter only, on IM samples with eq. (2).

The image encoder's base weights are frozen in both stages. A whole run (many steps,
several processes, checkpoints, logs) is `mam2_server.train.run`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mam2_server.model.build import MAM2Model
from mam2_server.train.data import TrainSample
from mam2_server.train.forward import Autocast, matter_forward, video_forward
from mam2_server.train.losses import (
    LossBreakdown,
    LossWeights,
    stage_loss,
    supervised_terms,
)

DEFAULT_WEIGHTS = LossWeights()  # SAM2 fine-tune weights (frozen dataclass: safe to share)

__all__ = ["StepResult", "batch_loss", "evaluate_loss", "freeze_for_stage", "sample_loss", "train_step"]


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


def sample_loss(model: MAM2Model, sample: TrainSample, stage: int, weights: LossWeights = DEFAULT_WEIGHTS,
                autocast: Autocast | None = None) -> LossBreakdown:
    """Eq. (1) / (2) for one sample, averaged over its frames; skipped samples run no forward."""
    if not supervised_terms(stage, sample.kind):
        return LossBreakdown(torch.zeros((), device=sample.images.device), {}, active=False)
    forward = video_forward if stage == 1 else matter_forward
    frames = forward(model, sample, autocast)
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


def batch_loss(model: MAM2Model, batch: Sequence[TrainSample], stage: int, weights: LossWeights = DEFAULT_WEIGHTS,
               autocast: Autocast | None = None) -> tuple[torch.Tensor | None, dict[str, float], int]:
    """(mean loss over the active samples or None, mean loss terms, active samples) of a batch."""
    results = [sample_loss(model, s, stage, weights, autocast) for s in batch]
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
    loss, parts, active = batch_loss(model, batch, stage, weights)
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
        loss, _, _ = batch_loss(model, batch, stage, weights)
    return math.nan if loss is None else float(loss)
