"""Where training starts (paper sec. 4.1) and what makes the 1024 input fit.

* `init_model`: theta_main from an official SAM2.1 checkpoint (``sam2.1_hiera_*.pt``: the
  SAM2 weights, MAM2's new PDD parts and LoRA adapters freshly initialised) or from a MAM2
  ``.safetensors`` (stage 2 starts from stage 1's result);
* `init_matter_from_dino`: the matter's ViT from a DINO ViT-S/16 checkpoint (facebookresearch/dino's
  ``dino_deitsmall16_pretrain.pth``: a plain state dict ``cls_token``, ``pos_embed`` [1, 1+14*14, 384],
  ``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``; the
  full training checkpoint with ``teacher`` / ``student`` and timm's ``vit_small_patch16_224.dino``
  use the same names). As in ViTMatte's preprocessing, the RGB patch embedding is copied into the
  4-channel (RGB + trimap) one with the trimap channel zeroed, and the position embedding
  (without its class token) is resized to the matter's grid. Routers, LTRMs, the conv residuals
  and the detail decoder keep their own initialisation (A.1);
* `enable_activation_checkpointing`: recompute each Hiera block and each matter ViT block in
  the backward pass instead of storing its activations (torch.utils.checkpoint), for the 1024 input.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mam2_server.model.build import MAM2Model, build_mam2
from mam2_server.model.checkpoint import CheckpointError, load_model
from mam2_server.model.config import preset

__all__ = ["init_model", "init_matter_from_dino", "enable_activation_checkpointing"]


def init_model(init: str | None, config: str | None, *, device: torch.device, seed: int) -> tuple[MAM2Model, str]:
    """(model, what it was built from). `init` is a SAM2.1 .pt or a MAM2 .safetensors (None: random init of
    `config`, default tiny); `config` overrides the preset an official .pt would be matched to."""
    if init is None:
        name = config or "tiny"
        return build_mam2(name, device=device, seed=seed), f"random init ({name})"
    torch.manual_seed(seed)  # the new MAM2 parts' initialisation
    path = Path(init).expanduser()
    if path.suffix == ".safetensors" and config:
        raise CheckpointError(f"--config {config}: a MAM2 checkpoint carries its own config; drop --config")
    model, report = load_model(path, device=device, config=preset(config) if config else None)
    return model, (report.summary() if report else f"{path} (MAM2)")


_BLOCK_KEYS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
               "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
               "mlp.fc2.bias")


def _dino_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"DINO checkpoint not found: {path} (facebookresearch/dino's "
                              "dino_deitsmall16_pretrain.pth)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(sd, dict) and "teacher" in sd and isinstance(sd["teacher"], dict):  # DINO's full checkpoint
        sd = sd["teacher"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: expected a state dict")
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "backbone."):
            k = k[len(prefix):] if k.startswith(prefix) else k
        out[k] = v
    return out


def init_matter_from_dino(model: MAM2Model, path: str | Path) -> str:
    """Copy a DINO ViT into `model.matter.backbone` (see the module docstring); returns a summary."""
    path = Path(path).expanduser()
    sd = _dino_state_dict(path)
    vit = model.matter.backbone
    cfg = vit.config
    need = ["patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed"]
    need += [f"blocks.{i}.{k}" for i in range(cfg.depth) for k in _BLOCK_KEYS]
    missing = [k for k in need if k not in sd]
    if missing:
        raise CheckpointError(f"{path}: not a DINO ViT with {cfg.depth} blocks (missing {', '.join(missing[:4])}"
                              f"{', ...' if len(missing) > 4 else ''})")
    new: dict[str, torch.Tensor] = {}
    w = sd["patch_embed.proj.weight"]  # (D, 3, p, p)
    own = vit.patch_embed.weight
    if w.shape[0] != own.shape[0] or w.shape[1] != 3 or w.shape[2:] != own.shape[2:]:
        raise CheckpointError(f"{path}: patch embedding {tuple(w.shape)} does not fit the matter's "
                              f"{tuple(own.shape)} (embed_dim {cfg.embed_dim}, patch {cfg.patch_size})")
    new["patch_embed.weight"] = torch.cat([w, torch.zeros_like(w[:, :1])], dim=1)  # trimap channel starts at 0
    new["patch_embed.bias"] = sd["patch_embed.proj.bias"]
    pos = sd["pos_embed"]  # (1, 1 + g*g, D) with a class token
    grid = int(round((pos.shape[1] - 1) ** 0.5))
    if grid * grid != pos.shape[1] - 1:
        raise CheckpointError(f"{path}: pos_embed {tuple(pos.shape)} is not a class token + a square grid")
    pos = pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    if grid != cfg.pretrain_grid:
        pos = F.interpolate(pos.float(), size=(cfg.pretrain_grid, cfg.pretrain_grid), mode="bicubic",
                            align_corners=False)
    new["pos_embed"] = pos
    for i in range(cfg.depth):
        for k in _BLOCK_KEYS:
            new[f"blocks.{i}.{k}"] = sd[f"blocks.{i}.{k}"]
    own_sd = vit.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own_sd[k].shape)}" for k, v in new.items() if v.shape != own_sd[k].shape]
    if bad:
        raise CheckpointError(f"{path}: does not fit the matter ViT: {'; '.join(bad[:3])}")
    with torch.no_grad():
        for k, v in new.items():
            own_sd[k].copy_(v.to(own_sd[k].dtype))
    return f"{path}: DINO ViT ({cfg.depth} blocks, grid {grid} -> {cfg.pretrain_grid}) into the matter, " \
           f"{len(new)} tensors"


def _checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def enable_activation_checkpointing(model: MAM2Model) -> int:
    """Recompute Hiera and matter ViT blocks in backward; returns the number of blocks wrapped.
    The blocks keep their names (their `forward` is wrapped on the instance), so checkpoints are unchanged."""
    blocks = list(model.sam.image_encoder.trunk.blocks) + list(model.matter.backbone.blocks)
    for blk in blocks:
        if not getattr(blk, "_mam2_checkpointed", False):
            blk.forward = functools.partial(_checkpointed, blk.forward)
            blk._mam2_checkpointed = True
    return len(blocks)
