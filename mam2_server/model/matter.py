"""The lightweight trimap-based matter (paper A.1): MEMatte-style ViT + ViTMatte detail capture.

`Matter.forward(image, trimap)` takes an ImageNet-normalised RGB batch [B, 3, H, W] and
a trimap [B, 1, H, W] in {0, 0.5, 1} at any size, and returns alpha [B, 1, H, W] in
[0, 1]. Inputs are zero-padded to a multiple of 32 and cropped back.

High resolution: the ViT runs on the whole frame (routed global attention keeps it
bounded, `max_tokens`) unless the frame has more than `max_vit_pixels`, in which case
it runs on a proxy and its features are resized to the full-resolution token grid.
The detail decoder (ConvStream + fusion blocks + matting head, all local ops) is run
in `tile`-pixel tiles with `tile_margin` pixels of context, like MEMatte's
`patch_inference`, so a 4K frame never materialises full-resolution 4K activations
for the whole frame at once.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from mam2_server.model.config import MatterConfig
from mam2_server.model.matter_vit import MatterViT, ViTOutput

__all__ = ["Matter", "DetailCapture"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DetailCapture(nn.Module):
    """ViTMatte detail capture: ConvStream on the 4-ch input + fusion blocks + matting head.

    forward(features [B, D, H/16, W/16], x [B, 4, H, W]) -> alpha [B, 1, H, W] in [0, 1].
    """

    def __init__(self, *, in_dim: int, convstream: tuple[int, ...], fusion: tuple[int, ...]) -> None:
        super().__init__()
        if len(convstream) != 3 or len(fusion) != 4:
            raise ValueError("detail capture needs 3 ConvStream widths and 4 fusion widths")
        chans = (4, *convstream)
        self.convstream = nn.ModuleList(_conv_bn_relu(chans[i], chans[i + 1], stride=2) for i in range(3))
        skips = (convstream[2], convstream[1], convstream[0], 4)  # D3 (1/8), D2, D1, D0 (1/1)
        ins = (in_dim, *fusion[:-1])
        self.fusion = nn.ModuleList(_conv_bn_relu(ins[i] + skips[i], fusion[i]) for i in range(4))
        self.head = nn.Sequential(nn.Conv2d(fusion[-1], 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                                  nn.Conv2d(16, 1, 1))

    def forward(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        details = [x]
        for layer in self.convstream:
            details.append(layer(details[-1]))  # D0 (1/1), D1 (1/2), D2 (1/4), D3 (1/8)
        y = features
        for i, layer in enumerate(self.fusion):
            skip = details[3 - i]
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = layer(torch.cat([y, skip], dim=1))
        return torch.sigmoid(self.head(y))


class Matter(nn.Module):
    """RGB + trimap -> alpha (see module docstring)."""

    def __init__(self, *, config: MatterConfig) -> None:
        super().__init__()
        if config.tile % 32 or config.tile_margin % 32:
            raise ValueError("matter tile and tile_margin must be multiples of 32")
        self.config = config
        self.backbone = MatterViT(config=config)
        self.decoder = DetailCapture(in_dim=config.embed_dim, convstream=config.convstream, fusion=config.fusion)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalise(self, rgb: torch.Tensor) -> torch.Tensor:
        """Display-referred RGB [B, 3, H, W] in [0, 1] -> ImageNet-normalised."""
        return (rgb - self.mean) / self.std

    def forward(self, image: torch.Tensor, trimap: torch.Tensor, *, tiled: bool | None = None,
                static_routing: bool = False) -> torch.Tensor:
        """image [B, 3, H, W] ImageNet-normalised, trimap [B, 1, H, W] in {0, 0.5, 1} -> alpha [B, 1, H, W].
        static_routing: the ViT's token routing with fixed shapes, no host sync (for CUDA streams)."""
        return self.forward_with_routing(image, trimap, tiled=tiled, static_routing=static_routing)[0]

    def forward_with_routing(self, image: torch.Tensor, trimap: torch.Tensor, *, tiled: bool | None = None,
                             static_routing: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """As forward, plus the router keep fractions (for MEMatte's ratio loss in training)."""
        h, w = image.shape[-2:]
        ph, pw = (-h) % 32, (-w) % 32
        x = F.pad(torch.cat([image, trimap.to(image.dtype)], dim=1), (0, pw, 0, ph))  # (B, 4, H', W')
        vit = self._backbone(x, static_routing)
        if tiled is None:
            tiled = not self.training and max(x.shape[-2:]) > self.config.tile + 2 * self.config.tile_margin
        alpha = self._decode_tiled(vit.features, x) if tiled else self.decoder(vit.features, x)
        alpha = alpha[..., :h, :w]
        if self.config.clamp_to_trimap and not self.training:
            t = trimap.to(alpha.dtype)
            alpha = torch.where(t < 0.25, torch.zeros_like(alpha), torch.where(t > 0.75, torch.ones_like(alpha), alpha))
        return alpha, vit.keep_fractions

    def _backbone(self, x: torch.Tensor, static_routing: bool = False) -> ViTOutput:
        p = self.config.patch_size
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        pixels = x.shape[-2] * x.shape[-1]
        if pixels <= self.config.max_vit_pixels:
            return self.backbone(x, static_routing=static_routing)
        s = math.sqrt(self.config.max_vit_pixels / pixels)
        size = (max(p, int(x.shape[-2] * s) // p * p), max(p, int(x.shape[-1] * s) // p * p))
        proxy = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        out = self.backbone(proxy, static_routing=static_routing)
        return ViTOutput(F.interpolate(out.features, size=grid, mode="bilinear", align_corners=False),
                         out.keep_fractions)

    def _decode_tiled(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Detail decoder over tiles of `tile` px with `tile_margin` px context; x [B, 4, H, W] (H, W % 32 == 0)."""
        tile, margin = self.config.tile, self.config.tile_margin
        stride = x.shape[-1] // features.shape[-1]  # pixels per feature cell (16 for patch 16)
        h, w = x.shape[-2:]
        out = x.new_zeros(x.shape[0], 1, h, w)
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
                cy0, cx0 = max(0, y0 - margin), max(0, x0 - margin)
                cy1, cx1 = min(h, y1 + margin), min(w, x1 + margin)
                feat = features[..., cy0 // stride: -(-cy1 // stride), cx0 // stride: -(-cx1 // stride)]
                a = self.decoder(feat, x[..., cy0:cy1, cx0:cx1])
                out[..., y0:y1, x0:x1] = a[..., y0 - cy0: y1 - cy0, x0 - cx0: x1 - cx0]
        return out
