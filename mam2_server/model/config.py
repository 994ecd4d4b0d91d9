"""MAM2 network configuration as data: frozen dataclasses plus named presets.

The SAM2 part is described by one of sam2's own Hydra YAMLs (shipped inside the
`sam2` package) plus override strings; everything MAM2 adds (PDD, MSS, LoRA,
matter, tracker bounds, precision) lives in the dataclasses below. A config
round-trips through JSON (`to_json` / `from_json`), which is how it travels as
safetensors metadata.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PDDConfig", "LoRAConfig", "MatterConfig", "TrackerConfig", "MAM2Config",
           "PRESETS", "preset", "OFFICIAL_CHECKPOINTS"]

# preset name -> official SAM2.1 checkpoint file name (dl.fbaipublicfiles.com/segment_anything_2/092824/)
OFFICIAL_CHECKPOINTS = {
    "hiera_t": "sam2.1_hiera_tiny.pt",
    "hiera_s": "sam2.1_hiera_small.pt",
    "hiera_b+": "sam2.1_hiera_base_plus.pt",
    "hiera_l": "sam2.1_hiera_large.pt",
}


@dataclass(frozen=True)
class PDDConfig:
    """Promptable Dual-mode Decoder: the trimap parts added to sam2's mask decoder."""

    enabled: bool = True  # False: the decoder is exactly sam2's MaskDecoder (no trimap tokens/branches)
    num_classes: int = 3  # trimap classes bg / unknown / fg = 0 / 1 / 2, one output token each
    mask_aug_channels: int = 32  # channels of the mask augment feature (sigmoid(mask) -> conv)
    fusion_hidden: int = 64  # hidden channels of the mask-guided fusion module
    mss: bool = True  # Memory-Separable Siamese: trimap from a 2nd pass on memory-free features
    mss_add_no_mem_embed: bool = True  # 2nd pass sees feat + no_mem_embed, like an initial cond frame


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapters on the image encoder's attention `qkv` / `proj` Linear layers."""

    rank: int = 16  # 0 disables LoRA
    alpha: float = 16.0  # scaling = alpha / rank
    targets: tuple[str, ...] = ("qkv", "proj")  # attribute names of nn.Linear inside Hiera attention


@dataclass(frozen=True)
class MatterConfig:
    """MEMatte-style trimap-based ViT matter (RGB + trimap -> alpha)."""

    embed_dim: int = 384  # ViT-S
    depth: int = 12
    num_heads: int = 6
    patch_size: int = 16
    mlp_ratio: float = 4.0
    window_size: int = 14  # tokens per side of a window-attention block
    global_blocks: tuple[int, ...] = (2, 5, 8, 11)  # the others use window attention
    pretrain_grid: int = 14  # absolute position embedding grid (224 / 16), interpolated at run time
    keep_ratio: float = 0.25  # router's target fraction of tokens sent through global attention
    max_tokens: int = 12000  # hard cap on routed tokens per global block at inference
    convstream: tuple[int, ...] = (48, 96, 192)  # detail-capture ConvStream widths (1/2, 1/4, 1/8)
    fusion: tuple[int, ...] = (256, 128, 64, 32)  # fusion block widths (1/8 ... 1/1)
    tile: int = 1024  # detail decoder tile size in pixels (full-res decoding is tiled beyond this)
    tile_margin: int = 64  # context around each tile (multiple of 32)
    max_vit_pixels: int = 4096 * 2304  # larger inputs run the ViT on a proxy and upsample its features
    clamp_to_trimap: bool = True  # alpha = 0 / 1 where the trimap says bg / fg


@dataclass(frozen=True)
class TrackerConfig:
    """Streaming tracker bounds and numerics."""

    max_recent_frames: int = 16  # non-cond frames kept (>= max(num_maskmem-1, max_obj_ptrs-1) = 15 for sam2.1)
    memory_dtype: str = "bfloat16"  # storage dtype of mask memories (sam2's predictor uses bfloat16)
    offload_memory_to_cpu: bool = False  # keep mask memories on the CPU between frames
    mask_threshold: float = 0.0  # logit threshold for the binary mask


@dataclass(frozen=True)
class MAM2Config:
    """The whole network. `sam2_config` is a Hydra config name inside the sam2 package."""

    name: str = "hiera_t"
    sam2_config: str = "configs/sam2.1/sam2.1_hiera_t.yaml"
    image_size: int = 1024
    sam2_overrides: tuple[str, ...] = ()  # extra Hydra overrides ("++model.<key>=<value>")
    pdd: PDDConfig = field(default_factory=PDDConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    matter: MatterConfig = field(default_factory=MatterConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    autocast: str | None = None  # "bfloat16" / "float16": autocast on CUDA only; CPU runs float32
    compile: bool = False  # torch.compile the image encoder and matter on CUDA

    def hydra_overrides(self) -> list[str]:
        """Overrides for sam2's `build_sam2` that produce this config's SAM2 part as a MAM2Base."""
        pdd = ",".join(f"{k}:{_hydra_value(v)}" for k, v in dataclasses.asdict(self.pdd).items())
        return [
            "++model._target_=mam2_server.model.mss.MAM2Base",
            f"++model.image_size={self.image_size}",
            # the same post-processing flags as sam2's video predictor builder (parity)
            "++model.binarize_mask_from_pts_for_mem_enc=true",
            f"++model.mam2_pdd={{{pdd}}}",
            *self.sam2_overrides,
        ]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> "MAM2Config":
        data = json.loads(text) if isinstance(text, str) else dict(text)
        sub = {"pdd": PDDConfig, "lora": LoRAConfig, "matter": MatterConfig, "tracker": TrackerConfig}
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name in sub:
                value = sub[f.name](**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[f.name] = value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "MAM2Config":
        return dataclasses.replace(self, **changes)


def _hydra_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


_TINY_TRUNK = (
    "++model.image_encoder.trunk.embed_dim=32",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.neck.backbone_channel_list=[256,128,64,32]",
    "++model.memory_attention.num_layers=1",
    "++model.memory_attention.layer.dim_feedforward=256",
    "++model.memory_encoder.fuser.num_layers=1",
)

TINY_MATTER = MatterConfig(embed_dim=48, depth=4, num_heads=2, window_size=4, global_blocks=(1, 3),
                           pretrain_grid=8, max_tokens=64, convstream=(8, 16, 24), fusion=(32, 24, 16, 8),
                           tile=128, tile_margin=32)

PRESETS: dict[str, MAM2Config] = {
    # random-weight test model: shrunk hiera-t trunk, 128 px input, 4-block matter
    "tiny": MAM2Config(name="tiny", image_size=128, sam2_overrides=_TINY_TRUNK,
                       lora=LoRAConfig(rank=4, alpha=4.0), matter=TINY_MATTER),
    "hiera_t": MAM2Config(name="hiera_t", sam2_config="configs/sam2.1/sam2.1_hiera_t.yaml"),
    "hiera_s": MAM2Config(name="hiera_s", sam2_config="configs/sam2.1/sam2.1_hiera_s.yaml"),
    "hiera_b+": MAM2Config(name="hiera_b+", sam2_config="configs/sam2.1/sam2.1_hiera_b+.yaml"),
    "hiera_l": MAM2Config(name="hiera_l", sam2_config="configs/sam2.1/sam2.1_hiera_l.yaml"),
}


def preset(name: str, **changes: Any) -> MAM2Config:
    """A named config (`tiny`, `hiera_t`, `hiera_s`, `hiera_b+`, `hiera_l`), optionally changed."""
    if name not in PRESETS:
        raise ValueError(f"unknown MAM2 config {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]
