"""Training checkpoints: written whole or not at all, resumable with the same data stream.

A checkpoint is a MAM2 safetensors file (`save_mam2`: loadable by ``mam2 matte --engine mam2
--checkpoint``) whose metadata also records the stage, step, seed and world size, plus
``<name>.optim.pt`` beside it with the AdamW state and the same step. Both are written to a
temporary name and renamed into place; a resume checks that the two belong together.
Only rank 0 writes (the ranks hold identical weights, see `distributed.weights_digest`).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from mam2_server.model.build import MAM2Model
from mam2_server.model.checkpoint import CheckpointError, load_mam2, save_mam2

__all__ = ["ResumeState", "optim_path", "save_training_checkpoint", "copy_checkpoint", "load_training_checkpoint",
           "resume_state"]


def optim_path(path: Path) -> Path:
    return Path(path).with_suffix(".optim.pt")


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def save_training_checkpoint(model: MAM2Model, optimizer: torch.optim.Optimizer | None, path: str | Path, *,
                             stage: int, step: int, seed: int, world_size: int = 1) -> Path:
    """Weights (+ metadata) and the optimizer state (if any) of `step`, each renamed into place when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"train_stage": str(stage), "train_step": str(step), "train_seed": str(seed),
            "train_world_size": str(world_size)}
    optim = optim_path(path)
    if optimizer is None:
        optim.unlink(missing_ok=True)  # never pair these weights with an older run's optimizer
    else:
        tmp = _tmp(optim)
        torch.save({"step": step, "stage": stage, "optimizer": optimizer.state_dict()}, tmp)
        os.replace(tmp, optim)
    tmp = _tmp(path)
    save_mam2(model, tmp, extra_metadata=meta)
    os.replace(tmp, path)
    return path


def copy_checkpoint(src: Path, dst: Path) -> Path:
    """`src` (and its optimizer file) as `dst`, atomically each."""
    for a, b in ((optim_path(src), optim_path(dst)), (src, dst)):
        if a.is_file():
            tmp = _tmp(b)
            shutil.copyfile(a, tmp)
            os.replace(tmp, b)
    return dst


def load_training_checkpoint(path: str | Path, *, device: str | torch.device = "cpu"
                             ) -> tuple[MAM2Model, dict[str, str], dict | None]:
    """(model, safetensors metadata, optimizer state dict or None) of a checkpoint."""
    from safetensors import safe_open

    path = Path(path)
    model = load_mam2(path, device=device)  # raises CheckpointError for a missing / foreign file
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    optim = optim_path(path)
    state = None
    if optim.is_file():
        blob = torch.load(optim, map_location=device, weights_only=True)
        if str(blob.get("step")) != meta.get("train_step"):
            raise CheckpointError(f"{optim} is from step {blob.get('step')} but {path.name} from step "
                                  f"{meta.get('train_step')}: not a pair (an interrupted save?)")
        state = blob["optimizer"]
    return model, meta, state


@dataclass
class ResumeState:
    model: MAM2Model
    step: int  # the next step to run (= steps done)
    optimizer: dict | None
    seed: int
    world_size: int


def resume_state(path: str | Path, stage: int, *, device: str | torch.device = "cpu") -> ResumeState:
    """Everything to continue a run from one of its checkpoints; the stage must match."""
    model, meta, optim = load_training_checkpoint(path, device=device)
    if "train_step" not in meta:
        raise CheckpointError(f"{path}: not a training checkpoint (no train_step metadata); use --init for it")
    if int(meta.get("train_stage", stage)) != stage:
        raise CheckpointError(f"{path}: a stage {meta['train_stage']} checkpoint cannot resume stage {stage}; "
                              f"use --init to start stage {stage} from it")
    if optim is None:
        raise CheckpointError(f"{path}: its optimizer state {optim_path(Path(path)).name} is missing; "
                              "resume needs both files (use --init to start a new run from these weights)")
    return ResumeState(model, int(meta["train_step"]), optim, int(meta.get("train_seed", 0)),
                       int(meta.get("train_world_size", 1)))
