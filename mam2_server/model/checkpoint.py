"""Checkpoints: official SAM2.1 `.pt` files into MAM2, and full MAM2 safetensors.

* `load_official_sam2(model, path)`: `torch.load(weights_only=True)["model"]` into
  `model.sam`, non-strict with an allow-list: only MAM2's new parameters (the PDD's
  trimap parts and LoRA adapters) may be missing; any other missing key, any
  unexpected key or any shape mismatch is a `CheckpointError` naming the keys.
* `save_mam2` / `load_mam2`: the whole network as safetensors, with the MAM2Config as
  JSON in the file's metadata (so a file rebuilds its own architecture).
* `load_model(path)`: either kind by file extension, or a clear error saying where
  the official weights go.

CLI: `python -m mam2_server.model.checkpoint make-tiny OUT.safetensors [--seed N]`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from mam2_server.model.build import MAM2Model, build_mam2
from mam2_server.model.config import OFFICIAL_CHECKPOINTS, MAM2Config, preset
from mam2_server.model.lora import LoRALinear
from mam2_server.model.pdd import PDD_NEW_PREFIXES

__all__ = ["CheckpointError", "LoadReport", "DEFAULT_CHECKPOINT_DIR", "load_official_sam2", "config_for_official",
           "save_mam2", "load_mam2", "load_model", "save_tiny_checkpoint", "is_mam2_new_key"]

DEFAULT_CHECKPOINT_DIR = Path(os.environ.get("MAM2_CHECKPOINT_DIR", "~/.cache/mam2/checkpoints")).expanduser()
OFFICIAL_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
FORMAT = "mam2"
FORMAT_VERSION = "1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the model."""


def where_to_put_weights() -> str:
    names = ", ".join(OFFICIAL_CHECKPOINTS.values())
    return (f"put the official SAM2.1 weights in {DEFAULT_CHECKPOINT_DIR}/ (e.g. "
            f"{DEFAULT_CHECKPOINT_DIR / 'sam2.1_hiera_tiny.pt'}; files: {names}; from {OFFICIAL_URL}) "
            f"or pass --checkpoint PATH (an official sam2.1_hiera_*.pt or a MAM2 .safetensors)")


@dataclass(frozen=True)
class LoadReport:
    """What a non-strict official load did."""

    path: str
    loaded: int  # tensors copied
    new_initialised: tuple[str, ...]  # MAM2-only keys left at their initialisation (allow-listed)

    def summary(self) -> str:
        return f"{self.path}: {self.loaded} tensors loaded, {len(self.new_initialised)} new MAM2 tensors initialised"


_LORA_KEY = re.compile(r"\.lora_[AB]$")


def is_mam2_new_key(key: str) -> bool:
    """True for parameters MAM2 adds to SAM2 (keys relative to `model.sam`)."""
    if _LORA_KEY.search(key):
        return True
    return key.startswith("sam_mask_decoder.") and key[len("sam_mask_decoder."):].startswith(PDD_NEW_PREFIXES)


def _read_official(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; {where_to_put_weights()}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-torch files
        raise CheckpointError(f"{path}: not a readable SAM2 checkpoint ({type(exc).__name__}: {exc}); "
                              f"{where_to_put_weights()}") from None
    if not isinstance(blob, dict) or not isinstance(blob.get("model"), dict):
        raise CheckpointError(f"{path}: expected an official SAM2 file {{'model': state_dict}}; "
                              f"{where_to_put_weights()}")
    return blob["model"]


def config_for_official(path: str | Path, base: Optional[MAM2Config] = None) -> MAM2Config:
    """The preset matching an official checkpoint, from its file name or else its tensor shapes."""
    path = Path(path)
    for name, fname in OFFICIAL_CHECKPOINTS.items():
        if path.name == fname:
            return base.replace(name=name, sam2_config=preset(name).sam2_config) if base else preset(name)
    sd = _read_official(path)
    key = "image_encoder.trunk.patch_embed.proj.weight"
    if key not in sd:
        raise CheckpointError(f"{path}: no {key}; not a SAM2 image encoder. {where_to_put_weights()}")
    dim = sd[key].shape[0]
    blocks = len({k.split(".")[3] for k in sd if k.startswith("image_encoder.trunk.blocks.")})
    by_shape = {(96, 12): "hiera_t", (96, 16): "hiera_s", (112, 24): "hiera_b+", (144, 48): "hiera_l"}
    name = by_shape.get((dim, blocks))
    if name is None:
        raise CheckpointError(f"{path}: trunk with embed_dim {dim} and {blocks} blocks matches no SAM2.1 config; "
                              "pass the config explicitly")
    return preset(name)


def load_official_sam2(model: MAM2Model, path: str | Path) -> LoadReport:
    """Load an official SAM2.1 checkpoint into `model.sam`; MAM2's new parts stay initialised."""
    path = Path(path)
    sd = _read_official(path)
    own = model.sam.state_dict()
    unexpected = sorted(k for k in sd if k not in own)
    missing = sorted(k for k in own if k not in sd)
    not_allowed = [k for k in missing if not is_mam2_new_key(k)]
    wrong_shape = sorted(k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape))
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
    if not_allowed:
        problems.append(f"{len(not_allowed)} missing SAM2 key(s): {_few(not_allowed)}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} shape mismatch(es): "
                        + _few([f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in wrong_shape]))
    if problems:
        raise CheckpointError(f"{path} does not fit the {model.config.name} model ({model.config.sam2_config}): "
                              + "; ".join(problems) + ". Is it the right file for this config?")
    merged = [m for m in model.sam.modules() if isinstance(m, LoRALinear) and m.merged]
    for m in merged:
        m.merged = False  # weights are replaced below; adapters start unmerged
    model.sam.load_state_dict(sd, strict=False)
    return LoadReport(str(path), len(sd), tuple(missing))


def _few(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def _unmerged_state_dict(model: MAM2Model) -> dict[str, torch.Tensor]:
    merged = [m for m in model.modules() if isinstance(m, LoRALinear) and m.merged]
    for m in merged:
        m.unmerge()
    try:
        return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    finally:
        for m in merged:
            m.merge()


def save_mam2(model: MAM2Model, path: str | Path, *, extra_metadata: Optional[dict[str, str]] = None) -> Path:
    """The whole network as safetensors (LoRA stored unmerged), config JSON in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_json(),
            **(extra_metadata or {})}
    save_file(_unmerged_state_dict(model), str(path), metadata=meta)
    return path


def load_mam2(path: str | Path, *, device: str | torch.device | None = "cpu") -> MAM2Model:
    """Rebuild the network from the config in a MAM2 safetensors file and load it strictly."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; {where_to_put_weights()}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        sd = load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{path}: not a MAM2 checkpoint (no 'format: mam2' / config metadata)")
    config = MAM2Config.from_json(meta["config"])
    model = build_mam2(config, device="cpu")
    own = model.state_dict()
    unexpected = sorted(set(sd) - set(own))
    missing = sorted(set(own) - set(sd))
    if unexpected or missing:
        raise CheckpointError(f"{path}: does not match its own config {config.name}: missing {_few(missing)}; "
                              f"unexpected {_few(unexpected)}")
    model.load_state_dict(sd, strict=True)
    return model.to(device if device is not None else "cpu").eval()


def load_model(checkpoint: str | Path | None, *, device: str | torch.device | None = None,
               config: Optional[MAM2Config] = None) -> tuple[MAM2Model, Optional[LoadReport]]:
    """A MAM2 `.safetensors` (report None) or an official SAM2.1 `.pt` (matter untrained)."""
    from mam2_server.model.build import resolve_device

    if checkpoint is None or str(checkpoint) == "":
        raise CheckpointError(f"no checkpoint given; {where_to_put_weights()}")
    path = Path(checkpoint).expanduser()
    dev = resolve_device(device)
    if path.suffix == ".safetensors":
        return load_mam2(path, device=dev), None
    if path.suffix in (".pt", ".pth"):
        cfg = config or config_for_official(path)
        model = build_mam2(cfg, device="cpu")
        report = load_official_sam2(model, path)
        return model.to(dev).eval(), report
    raise CheckpointError(f"{path}: unknown checkpoint type (want .safetensors for MAM2 or .pt for official "
                          f"SAM2.1); {where_to_put_weights()}")


def save_tiny_checkpoint(path: str | Path, *, seed: int = 0) -> Path:
    """A random-init `tiny` MAM2 checkpoint (tests, CLI smoke runs)."""
    return save_mam2(build_mam2("tiny", device="cpu", seed=seed), path, extra_metadata={"note": "random init"})


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mam2_server.model.checkpoint", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    tiny = sub.add_parser("make-tiny", help="write a random-init tiny MAM2 checkpoint")
    tiny.add_argument("out")
    tiny.add_argument("--seed", type=int, default=0)
    info = sub.add_parser("info", help="print a checkpoint's config and parameter counts")
    info.add_argument("path")
    args = parser.parse_args(argv)
    if args.cmd == "make-tiny":
        print(save_tiny_checkpoint(args.out, seed=args.seed))
        return 0
    model, report = load_model(args.path, device="cpu")
    print(json.dumps({"config": json.loads(model.config.to_json()), "parameters": model.part_parameters(),
                      "official": report.summary() if report else None}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
