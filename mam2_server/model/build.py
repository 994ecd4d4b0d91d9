"""Build the MAM2 network from a MAM2Config: sam2's Hydra YAML -> MAM2Base, + LoRA, + matter.

The SAM2 part is instantiated through sam2's own `build_sam2` with a `_target_`
override pointing at `MAM2Base` (sam2 initialises Hydra itself when imported; this
module never touches Hydra's global state). No checkpoint is loaded here — see
`mam2_server.model.checkpoint`.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from mam2_server.model.config import MAM2Config, preset
from mam2_server.model.lora import inject_lora, lora_parameters
from mam2_server.model.matter import Matter
from mam2_server.model.mss import MAM2Base

__all__ = ["MAM2Model", "build_mam2", "build_sam2_part", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """config.device, else CUDA when available, else CPU."""
    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_sam2_part(config: MAM2Config, *, device: str | torch.device = "cpu") -> MAM2Base:
    """sam2's Hydra config + MAM2 overrides -> MAM2Base (random init, eval mode, no LoRA)."""
    from sam2.build_sam import build_sam2  # imports sam2 (which initialises its Hydra config module)

    model = build_sam2(config.sam2_config, ckpt_path=None, device=str(device), mode="eval",
                       hydra_overrides_extra=config.hydra_overrides(), apply_postprocessing=True)
    if not isinstance(model, MAM2Base):
        raise TypeError(f"expected MAM2Base from the Hydra override, got {type(model).__name__}")
    return model


class MAM2Model(nn.Module):
    """The whole network: `sam` (MAM2Base: encoder + LoRA, memory, PDD/MSS) and `matter`."""

    def __init__(self, *, config: MAM2Config, sam: MAM2Base, matter: Matter) -> None:
        super().__init__()
        self.config = config
        self.sam = sam
        self.matter = matter

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16/fp16 autocast on CUDA when the config asks for it; a no-op otherwise (CPU: float32)."""
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(self.config.autocast or "")
        if dtype is None or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=dtype)

    def part_parameters(self) -> dict[str, int]:
        """Parameter counts per part (LoRA counted separately from the encoder it adapts)."""
        lora = {id(p) for p in lora_parameters(self.sam.image_encoder)}
        pdd_new = set(self.sam.sam_mask_decoder.new_parameter_names())
        counts = {"image_encoder": 0, "lora": 0, "memory": 0, "prompt_encoder": 0, "sam_decoder": 0,
                  "pdd_new": 0, "matter": sum(p.numel() for p in self.matter.parameters()), "other": 0}
        for name, p in self.sam.named_parameters():
            n = p.numel()
            if id(p) in lora:
                counts["lora"] += n
            elif name.startswith("image_encoder."):
                counts["image_encoder"] += n
            elif name.startswith(("memory_attention.", "memory_encoder.", "maskmem_tpos_enc", "obj_ptr",
                                  "no_mem", "no_obj", "mask_downsample")):
                counts["memory"] += n
            elif name.startswith("sam_prompt_encoder."):
                counts["prompt_encoder"] += n
            elif name.startswith("sam_mask_decoder."):
                key = "pdd_new" if name[len("sam_mask_decoder."):] in pdd_new else "sam_decoder"
                counts[key] += n
            else:
                counts["other"] += n
        counts["total"] = sum(counts.values())
        return counts

    def trainable_parameters(self, stage: str = "main") -> Iterator[nn.Parameter]:
        """Stage "main" (paper A.2: LoRA, memory, prompt encoder, PDD; frozen encoder base weights)
        or "matter" (the matter only)."""
        if stage == "matter":
            yield from self.matter.parameters()
            return
        if stage != "main":
            raise ValueError(f"unknown training stage {stage!r} (main or matter)")
        lora = {id(p) for p in lora_parameters(self.sam.image_encoder)}
        for name, p in self.sam.named_parameters():
            if not name.startswith("image_encoder.") or id(p) in lora:
                yield p


def build_mam2(config: MAM2Config | str = "tiny", *, device: str | torch.device | None = "cpu",
               seed: int | None = None) -> MAM2Model:
    """Random-init MAM2 network for `config` (a MAM2Config or preset name) on `device`."""
    if isinstance(config, str):
        config = preset(config)
    dev = resolve_device(device)
    if seed is not None:
        torch.manual_seed(seed)
    sam = build_sam2_part(config, device="cpu")
    inject_lora(sam.image_encoder, config.lora)
    model = MAM2Model(config=config, sam=sam, matter=Matter(config=config.matter)).to(dev).eval()
    if config.compile and dev.type == "cuda":  # optional; CPU stays eager (compiling there only costs time)
        model.sam.image_encoder.forward = torch.compile(model.sam.image_encoder.forward, dynamic=False)
        model.matter.backbone.forward = torch.compile(model.matter.backbone.forward, dynamic=True)
    return model
