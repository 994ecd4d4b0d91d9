"""A training run: steps on one or many processes (torchrun + DDP), schedule, checkpoints, logs.

Each rank draws its own batch of every micro-step from the mix (`MixedData.batch(step, rank)`,
a pure function of seed, step and rank), runs the forward through `DistributedDataParallel`
(gradients averaged over ranks; `find_unused_parameters` because a batch of one data type
leaves the other types' heads without gradient), accumulates `accum_steps` micro-batches,
clips and steps AdamW. The learning rate follows a linear warm-up and a cosine decay from
the paper's initial rate (sec. 4.1 gives only the initial rate). Dropout and Gumbel noise are
seeded per (seed, step, rank), so a resumed run continues bit for bit (same world size).

Rank 0 writes the checkpoints (atomic, `state`) and the CSV log (`log`); every checkpoint
(each `save_every` steps and the last step) also becomes ``stageN_last``. At every checkpoint
the ranks' weight digests are compared, and a mismatch stops the run; so does a save that fails
on rank 0 (every rank learns it and raises, none waits for it).
"""
from __future__ import annotations

import contextlib
import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mam2_server.model.build import MAM2Model
from mam2_server.train.distributed import DistContext, weights_digest
from mam2_server.train.log import TrainLog
from mam2_server.train.loop import DEFAULT_WEIGHTS, batch_loss, freeze_for_stage
from mam2_server.train.mix import MixedData, StepBatches
from mam2_server.train.state import copy_checkpoint, save_training_checkpoint

__all__ = ["TrainSettings", "TrainRun", "lr_factor", "last_path", "train"]


@dataclass(frozen=True)
class TrainSettings:
    stage: int
    steps: int  # total optimiser steps (a resumed run counts on)
    lr: float
    weight_decay: float = 0.01
    warmup_steps: int = 0
    schedule: str = "cosine"  # "cosine" (to min_lr_ratio * lr at the last step) or "constant"
    min_lr_ratio: float = 0.01
    accum_steps: int = 1  # micro-batches per optimiser step (each a full batch of one data type per rank)
    save_every: int = 0  # also checkpoint every N steps (0: only at the end)
    seed: int = 0
    max_grad_norm: float = 1.0
    precision: str = "fp32"  # "fp32" or "bf16" (autocast, CUDA only)
    workers: int = 0  # DataLoader worker processes building batches ahead (0: in the training process)

    def recorded(self) -> dict[str, object]:
        """The settings a checkpoint records (`state.SETTING_KEYS`) and a resume compares."""
        return {"accum": self.accum_steps, "lr": self.lr, "warmup": self.warmup_steps, "schedule": self.schedule}


def lr_factor(s: TrainSettings, step: int) -> float:
    """Multiplier of the initial rate for optimiser step `step` (0-based)."""
    if s.warmup_steps and step < s.warmup_steps:
        return (step + 1) / s.warmup_steps
    if s.schedule == "constant":
        return 1.0
    span = max(1, s.steps - s.warmup_steps - 1)
    progress = min(1.0, (step - s.warmup_steps) / span)
    return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class TrainRun:
    """What `train` did."""

    losses: list[float] = field(default_factory=list)  # per step run here: mean of every rank's micro-batch losses
    checkpoints: list[Path] = field(default_factory=list)
    first_step: int = 0
    last_step: int = 0
    digests: list[str] = field(default_factory=list)  # every rank's weights digest at the last checkpoint


class _BatchLoss(nn.Module):
    """The module DDP wraps: forward(batch) -> (loss, terms, active samples)."""

    def __init__(self, model: MAM2Model, stage: int, autocast) -> None:
        super().__init__()
        self.model, self.stage, self.autocast = model, stage, autocast
        self.trainable = [p for p in model.parameters() if p.requires_grad]

    def forward(self, batch):
        loss, parts, active = batch_loss(self.model, batch, self.stage, DEFAULT_WEIGHTS, self.autocast)
        if loss is None:  # nothing supervised on this rank: a zero that still takes part in the all-reduce
            loss = sum(p.reshape(-1)[0] * 0.0 for p in self.trainable)
        return loss, parts, active


def last_path(out_dir: Path, stage: int) -> Path:
    """``stageN_last.safetensors``: the latest checkpoint of the run in `out_dir` (`state.copy_checkpoint`)."""
    return Path(out_dir) / f"stage{stage}_last.safetensors"


def _autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext
    if precision != "bf16":
        raise ValueError(f"precision is fp32 or bf16, got {precision!r}")
    if device.type != "cuda":
        raise ValueError("bf16 autocast is for CUDA; on CPU train in fp32")
    return lambda: torch.autocast("cuda", dtype=torch.bfloat16)


def _peak_mem_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _batches(data: MixedData, dist: DistContext, first: int, last: int, workers: int):
    if workers <= 0:
        return (data.batch(i, dist.rank) for i in range(first, last))
    # pin_memory: the loader's thread calls TrainSample.pin_memory, so the copies to the GPU can be asynchronous
    loader = torch.utils.data.DataLoader(StepBatches(data, dist.rank), batch_size=None, sampler=range(first, last),
                                         num_workers=workers, collate_fn=_keep, prefetch_factor=2,
                                         pin_memory=dist.device.type == "cuda")
    return iter(loader)


def _keep(x):
    return x


def train(model: MAM2Model, data: MixedData, settings: TrainSettings, out_dir: str | Path, *,
          dist: DistContext | None = None, start_step: int = 0, optimizer_state: dict | None = None,
          progress: bool = True) -> TrainRun:
    """Train from `start_step` to `settings.steps`; checkpoints and logs go to `out_dir` (rank 0)."""
    from tqdm import tqdm

    s = settings
    dist = dist or DistContext(device=model.device)
    out_dir = Path(out_dir)
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    params = freeze_for_stage(model, s.stage)
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    step_loss = _BatchLoss(model, s.stage, _autocast(s.precision, dist.device))
    net = (DistributedDataParallel(step_loss, device_ids=[dist.device] if dist.device.type == "cuda" else None,
                                   find_unused_parameters=True) if dist.distributed else step_loss)
    log = TrainLog(out_dir, resume_from_step=start_step) if dist.is_main else None
    run = TrainRun(first_step=start_step, last_step=start_step)
    batches = _batches(data, dist, start_step * s.accum_steps, s.steps * s.accum_steps, s.workers)
    bar = tqdm(range(start_step, s.steps), desc=f"stage {s.stage}", disable=not (progress and dist.is_main),
               unit="step")
    try:
        for step in bar:
            lr = s.lr * lr_factor(s, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            t0, data_s, record = time.perf_counter(), 0.0, []
            for micro in range(s.accum_steps):
                torch.manual_seed((s.seed * 1_000_003 + step * s.accum_steps + micro) * 1009 + dist.rank)
                t_data = time.perf_counter()
                kind, batch = next(batches)
                batch = [b.to(dist.device, non_blocking=True) for b in batch]
                data_s += time.perf_counter() - t_data
                sync = net.no_sync() if dist.distributed and micro < s.accum_steps - 1 else contextlib.nullcontext()
                with sync:
                    loss, parts, active = net(batch)
                    (loss / s.accum_steps).backward()
                record.append((kind, float(loss.detach()), parts, len(batch), sum(b.images.shape[0] for b in batch)))
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm))
            optimizer.step()
            if dist.device.type == "cuda":
                torch.cuda.synchronize(dist.device)
            seconds = time.perf_counter() - t0
            everyone = [r for rank_records in dist.all_gather(record) for r in rank_records]
            mean_loss = sum(r[1] for r in everyone) / len(everyone)
            run.losses.append(mean_loss)
            run.last_step = step + 1
            if log is not None:
                log.row(_row(s, step + 1, lr, everyone, grad_norm, seconds, data_s, _peak_mem_mib(dist.device)))
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            if s.save_every and (step + 1) % s.save_every == 0 and step + 1 < s.steps:
                _checkpoint(model, optimizer, out_dir / f"stage{s.stage}_step_{step + 1:06d}.safetensors", s, dist,
                            run, log)
        _checkpoint(model, optimizer, out_dir / f"stage{s.stage}_step_{run.last_step:06d}.safetensors", s, dist, run,
                    log)
        if dist.is_main:
            run.checkpoints.append(last_path(out_dir, s.stage))
    finally:
        if log is not None:
            log.close()
    model.eval()
    return run


def _checkpoint(model, optimizer, path: Path, s: TrainSettings, dist: DistContext, run: TrainRun, log) -> None:
    digests = dist.all_gather(weights_digest(model))
    run.digests = digests
    if len(set(digests)) != 1:
        raise RuntimeError(f"step {run.last_step}: the ranks' weights differ (digests {digests}); "
                           "not writing a checkpoint from diverged replicas")
    error = None
    if dist.is_main:
        try:
            run.checkpoints.append(save_training_checkpoint(
                model, optimizer, path, stage=s.stage, step=run.last_step, seed=s.seed, world_size=dist.world_size,
                settings=s.recorded()))
            copy_checkpoint(path, last_path(path.parent, s.stage))  # after a crash, --resume _last continues here
            log.event({"event": "checkpoint", "step": run.last_step, "path": str(path), "rank_digests": digests})
        except Exception as exc:  # every rank must hear of it: the others would wait for rank 0 forever
            error = exc
    saved = dist.all_gather(error is None)  # also the barrier: no rank runs on before rank 0 has saved
    if error is not None:
        raise error
    if not all(saved):
        raise RuntimeError(f"step {run.last_step}: rank 0 failed to write the checkpoint {path.name} (its error is "
                           "in rank 0's output); stopping this rank too")


def _row(s: TrainSettings, step: int, lr: float, records, grad_norm: float, seconds: float, data_s: float,
         peak: float) -> dict:
    row: dict = {"step": step, "stage": s.stage, "lr": lr, "grad_norm": grad_norm, "s_per_step": seconds,
                 "data_s": data_s, "peak_mem_mib": peak}
    row["loss"] = sum(r[1] for r in records) / len(records)
    for kind in {r[0] for r in records}:
        same = [r[1] for r in records if r[0] == kind]
        row[f"loss_{kind}"] = sum(same) / len(same)
    terms: dict[str, list[float]] = {}
    for r in records:
        for k, v in r[2].items():
            terms.setdefault(k, []).append(v)
    row.update({k: sum(v) / len(v) for k, v in terms.items()})
    row["samples"] = sum(r[3] for r in records)
    row["frames"] = sum(r[4] for r in records)
    row["samples_per_s"] = row["samples"] / seconds
    row["frames_per_s"] = row["frames"] / seconds
    return row
