"""Training checkpoints: written whole or not at all, resumable with the same data stream.

A checkpoint is a MAM2 safetensors file (`save_mam2`: loadable by ``mam2 matte --engine mam2
--checkpoint``) whose metadata also records the stage, step, seed and world size, and the
settings that shape the data stream and the schedule (`SETTING_KEYS`: a resume says when they
differ), plus ``<name>.optim.pt`` beside it with the AdamW state and the same step. Each file is
written to a temporary name and renamed into place; a resume checks that the two belong together.

The weights' metadata names their optimizer file (``train_optimizer``) and a random id the
optimizer file also holds (``train_pair``), so ``stageN_last`` is one file: a copy of the latest
checkpoint's weights, naming that checkpoint's ``.optim.pt``. Replacing it is a single rename,
so a crash leaves the previous pair or the new one, and weights never resume with an optimizer
state saved with other weights (not even another run's of the same step in the same folder).
Checkpoints without those keys, from before, pair with the ``.optim.pt`` of their own name and
the same step. Only rank 0 writes (the ranks hold identical weights, see
`distributed.weights_digest`).
"""
from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from mam2_server.io.atomic import atomic_path
from mam2_server.model.build import MAM2Model
from mam2_server.model.checkpoint import CheckpointError, load_mam2, save_mam2

__all__ = ["ResumeState", "SETTING_KEYS", "optim_path", "optimizer_file", "save_training_checkpoint",
           "copy_checkpoint", "load_training_checkpoint", "resume_state"]

OPTIMIZER_KEY = "train_optimizer"  # metadata: the optimizer file's name, beside the weights ("" = none)
PAIR_KEY = "train_pair"  # metadata: the id the optimizer file holds too
# metadata of the run's settings that a resume should keep: --accum sets the data stream's micro-steps,
# --lr / --warmup / --schedule the learning rate of every step
SETTING_KEYS = {"accum": "train_accum", "lr": "train_lr", "warmup": "train_warmup", "schedule": "train_schedule"}


def optim_path(path: Path) -> Path:
    return Path(path).with_suffix(".optim.pt")


def optimizer_file(path: str | Path, meta: dict[str, str]) -> Path | None:
    """The optimizer file that pairs with the weights at `path` (whose metadata is `meta`); None if saved without."""
    path = Path(path)
    if OPTIMIZER_KEY not in meta:  # an older checkpoint: <name>.optim.pt
        return optim_path(path)
    name = meta[OPTIMIZER_KEY]
    if not name:
        return None
    if Path(name).name != name or name in (".", ".."):
        raise CheckpointError(f"{path}: its {OPTIMIZER_KEY} metadata {name!r} is not a file name")
    return path.with_name(name)


def save_training_checkpoint(model: MAM2Model, optimizer: torch.optim.Optimizer | None, path: str | Path, *,
                             stage: int, step: int, seed: int, world_size: int = 1,
                             settings: dict[str, object] | None = None) -> Path:
    """The optimizer state (if any), then the weights (+ metadata naming it) of `step`, each renamed into place
    when complete. `settings`: the run's values of `SETTING_KEYS` (accum, lr, warmup, schedule)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    optim, pair = optim_path(path), secrets.token_hex(8)
    meta = {"train_stage": str(stage), "train_step": str(step), "train_seed": str(seed),
            "train_world_size": str(world_size), OPTIMIZER_KEY: optim.name if optimizer is not None else "",
            PAIR_KEY: pair}
    for name, value in (settings or {}).items():
        meta[SETTING_KEYS[name]] = repr(value) if isinstance(value, float) else str(value)
    if optimizer is None:
        optim.unlink(missing_ok=True)  # never leave an older run's optimizer beside these weights
    else:
        with atomic_path(optim) as tmp:
            torch.save({"step": step, "stage": stage, "pair": pair, "optimizer": optimizer.state_dict()}, tmp)
    with atomic_path(path) as tmp:
        save_mam2(model, tmp, extra_metadata=meta)
    return path


def copy_checkpoint(src: Path, dst: Path) -> Path:
    """`src` as `dst`, in one atomic replace: the copy's metadata names `src`'s optimizer file, so `dst` moves
    from one complete pair to the next. Both in one folder (the name is relative)."""
    src, dst = Path(src), Path(dst)
    if src.parent.resolve() != dst.parent.resolve():
        raise ValueError(f"copy_checkpoint: {dst} must be beside {src} (it names src's optimizer file)")
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    optim_path(dst).unlink(missing_ok=True)  # an older layout's optimizer copy: no longer paired with anything
    return dst


def load_training_checkpoint(path: str | Path, *, device: str | torch.device = "cpu"
                             ) -> tuple[MAM2Model, dict[str, str], dict | None]:
    """(model, safetensors metadata, optimizer state dict or None) of a checkpoint."""
    from safetensors import safe_open

    path = Path(path)
    model = load_mam2(path, device=device)  # raises CheckpointError for a missing / foreign file
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    optim = optimizer_file(path, meta)
    state = None
    if optim is not None and optim.is_file():
        blob = torch.load(optim, map_location=device, weights_only=True)
        if str(blob.get("step")) != meta.get("train_step"):
            raise CheckpointError(f"{optim} is from step {blob.get('step')} but {path.name} from step "
                                  f"{meta.get('train_step')}: not a pair (an interrupted save?)")
        if PAIR_KEY in meta and blob.get("pair") != meta[PAIR_KEY]:
            raise CheckpointError(f"{optim} was saved with other weights than {path.name} (same step {blob.get('step')}"
                                  ", another save over it: an interrupted run in the same folder?): not a pair")
        state = blob["optimizer"]
    return model, meta, state


@dataclass
class ResumeState:
    model: MAM2Model
    step: int  # the next step to run (= steps done)
    optimizer: dict | None
    seed: int
    world_size: int
    settings: dict[str, str]  # the run's SETTING_KEYS values as saved (absent in older checkpoints)

    def changed_settings(self, current: dict[str, object]) -> list[str]:
        """'--name saved -> current' for each of `current`'s settings the checkpoint recorded differently."""
        changed = []
        for name, value in current.items():
            saved = self.settings.get(name)
            if saved is None:
                continue
            same = float(saved) == float(value) if isinstance(value, (int, float)) else saved == str(value)
            if not same:
                changed.append(f"--{name} {saved} -> {value}")
        return changed


def resume_state(path: str | Path, stage: int, *, device: str | torch.device = "cpu") -> ResumeState:
    """Everything to continue a run from one of its checkpoints; the stage must match."""
    model, meta, optim = load_training_checkpoint(path, device=device)
    if "train_step" not in meta:
        raise CheckpointError(f"{path}: not a training checkpoint (no train_step metadata); use --init for it")
    if int(meta.get("train_stage", stage)) != stage:
        raise CheckpointError(f"{path}: a stage {meta['train_stage']} checkpoint cannot resume stage {stage}; "
                              f"use --init to start stage {stage} from it")
    if optim is None:
        wanted = optimizer_file(path, meta)
        what = (f"its optimizer state {wanted.name} (beside it) is missing" if wanted is not None
                else "it was saved without an optimizer state")
        raise CheckpointError(f"{path}: {what}; resume needs the weights and the optimizer state "
                              "(use --init to start a new run from these weights)")
    return ResumeState(model, int(meta["train_step"]), optim, int(meta.get("train_seed", 0)),
                       int(meta.get("train_world_size", 1)),
                       {name: meta[key] for name, key in SETTING_KEYS.items() if key in meta})
