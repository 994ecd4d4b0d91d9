"""MEMatte-style ViT backbone for the matter: window attention + routed global attention.

Plain PyTorch re-implementation of the ideas in MEMatte (Lin et al., AAAI 2025): a
ViT over 4-channel patches (RGB + trimap) where most blocks attend inside windows,
and each global-attention block is preceded by a *router* that decides, per token,
whether it goes through global self-attention (uncertain tokens) or through a cheap
*lightweight token refinement module* (LTRM: expand -> depthwise conv -> project, ECA).

* training: Gumbel-softmax hard decisions, attention masked by the policy, output =
  policy * attention + (1 - policy) * LTRM; keep fractions are returned so the caller
  can add MEMatte's ratio loss towards `keep_ratio`;
* inference: argmax decisions, capped to `max_tokens` by the router's margin, and
  global attention is computed among the kept tokens only (batch 1 per image).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
import torch.nn.functional as F

from mam2_server.model.config import MatterConfig

__all__ = ["MatterViT", "ViTOutput", "Router", "LTRM"]


class ViTOutput(NamedTuple):
    features: torch.Tensor  # [B, D, H/16, W/16]
    keep_fractions: list[torch.Tensor]  # per routed block, [B] fraction of tokens through global attention


class Mlp(nn.Module):
    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention over [B, N, D] with an optional key bias [B, 1, 1, N] (additive, or a
    boolean mask of the keys that take part)."""

    def __init__(self, *, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, nh, N, hd)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


def _window_partition(x: torch.Tensor, w: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """[B, H, W, D] -> [B * nW, w*w, D] (zero-padded to multiples of w)."""
    b, h, wd, d = x.shape
    ph, pw = (w - h % w) % w, (w - wd % w) % w
    x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, wd + pw
    x = x.view(b, hp // w, w, wp // w, w, d).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, d), (hp, wp)


def _window_unpartition(x: torch.Tensor, w: int, padded: tuple[int, int], size: tuple[int, int], b: int) -> torch.Tensor:
    hp, wp = padded
    x = x.view(b, hp // w, wp // w, w, w, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, : size[0], : size[1]].contiguous()


class Router(nn.Module):
    """Per-token keep/skip log-probabilities [B, N, 2] from tokens [B, N, D] (index 0 = keep)."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.inp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
        self.out = nn.Sequential(nn.Linear(dim, dim // 2), nn.GELU(), nn.Linear(dim // 2, dim // 4), nn.GELU(),
                                 nn.Linear(dim // 4, 2), nn.LogSoftmax(dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        half = x.size(-1) // 2
        local, glob = x[..., :half], x[..., half:].mean(dim=1, keepdim=True).expand(-1, x.size(1), -1)
        return self.out(torch.cat([local, glob], dim=-1))


class LTRM(nn.Module):
    """Lightweight token refinement: [B, H, W, D] -> [B, H, W, D] (expand, dw 5x5, project, ECA)."""

    def __init__(self, *, dim: int, expand: int = 2) -> None:
        super().__init__()
        hidden = dim * expand
        self.fc1 = nn.Linear(dim, hidden)
        self.dw = nn.Conv2d(hidden, hidden, 5, padding=2, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)
        k = int(abs((math.log2(dim) + 1) / 2)) | 1  # ECA kernel size (odd)
        self.eca = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.fc1(x))
        y = F.gelu(self.dw(y.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)  # (B, H, W, C) conv in (B, C, H, W)
        y = self.fc2(y)
        gate = torch.sigmoid(self.eca(y.mean(dim=(1, 2)).unsqueeze(1))).squeeze(1)  # (B, D)
        return y * gate[:, None, None, :]


class Block(nn.Module):
    """Pre-norm transformer block on [B, H, W, D]; window attention, or routed global attention."""

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float, window_size: int, routed: bool) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim=dim, num_heads=num_heads)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio))
        self.window_size = window_size  # 0 = global
        self.router = Router(dim=dim) if routed else None
        self.ltrm = LTRM(dim=dim) if routed else None

    def forward(self, x: torch.Tensor, *, keep_ratio: float, max_tokens: int,
                static_routing: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, h, w, d = x.shape
        if self.router is None:
            y = self._attend(self.norm1(x))
            x = x + y
            return x + self.mlp(self.norm2(x)), None
        tokens = x.reshape(b, h * w, d)  # (B, H, W, D) -> (B, N, D)
        logp = self.router(tokens)  # (B, N, 2)
        refined = self.ltrm(self.norm1(x)).reshape(b, h * w, d)
        if self.training:
            policy = F.gumbel_softmax(logp, hard=True, dim=-1)[..., 0:1]  # (B, N, 1), straight-through
            bias = torch.log(policy.detach().transpose(1, 2)[:, None].clamp_min(1e-6))  # (B, 1, 1, N)
            att = self.attn(self.norm1(tokens), key_bias=bias.to(tokens.dtype))
            tokens = tokens + policy * att + (1 - policy) * refined
            keep = policy.squeeze(-1).mean(dim=1)
        elif static_routing:
            tokens, keep = self._route_static(tokens, logp, refined, max_tokens)
        else:
            out = tokens + refined
            keeps = []
            for i in range(b):  # kept tokens differ per image
                margin = logp[i, :, 0] - logp[i, :, 1]
                idx = torch.nonzero(margin > 0).squeeze(1)
                if idx.numel() > max_tokens:
                    idx = idx[torch.topk(margin[idx], max_tokens).indices]
                keeps.append(torch.tensor(idx.numel() / (h * w), device=x.device))
                if idx.numel():
                    sel = tokens[i:i + 1, idx]
                    out[i, idx] = (sel + self.attn(self.norm1(sel)))[0]
            tokens, keep = out, torch.stack(keeps)
        x = tokens.reshape(b, h, w, d)
        return x + self.mlp(self.norm2(x)), keep

    def _route_static(self, tokens: torch.Tensor, logp: torch.Tensor, refined: torch.Tensor,
                      max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference routing with fixed shapes (no host sync): the same kept tokens as the loop above
        (margin > 0, at most `max_tokens` by margin), found as the top min(max_tokens, N) margins, of
        which those <= 0 are masked out of the attention and left with LTRM. Global attention has no
        positional term, so attending among the kept tokens in margin order equals the index order
        up to float summation order. tokens, refined [B, N, D], logp [B, N, 2]."""
        b, n, d = tokens.shape
        margin = logp[..., 0] - logp[..., 1]  # (B, N)
        top = torch.topk(margin, min(max_tokens, n), dim=1)
        kept = top.values > 0  # (B, k)
        idx = top.indices[..., None].expand(-1, -1, d)  # (B, k, D)
        sel = torch.gather(tokens, 1, idx)
        key_mask = kept[:, None, None, :]  # (B, 1, 1, k): a slot attends to kept slots only
        attended = sel + self.attn(self.norm1(sel), key_bias=key_mask)
        out = tokens + refined
        out = out.scatter(1, idx, torch.where(kept[..., None], attended, torch.gather(out, 1, idx)))
        return out, kept.sum(dim=1) / n

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, d = x.shape
        if self.window_size <= 0:
            return self.attn(x.reshape(b, h * w, d)).reshape(b, h, w, d)
        win, padded = _window_partition(x, self.window_size)
        return _window_unpartition(self.attn(win), self.window_size, padded, (h, w), b)


class ResBottleneck(nn.Module):
    """ViTMatte's conv residual after global blocks: [B, D, H, W] -> same."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        mid = dim // 2
        self.body = nn.Sequential(nn.Conv2d(dim, mid, 1, bias=False), nn.GroupNorm(1, mid), nn.GELU(),
                                  nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.GroupNorm(1, mid), nn.GELU(),
                                  nn.Conv2d(mid, dim, 1, bias=False), nn.GroupNorm(1, dim))
        nn.init.zeros_(self.body[-1].weight)  # starts as identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MatterViT(nn.Module):
    """ViT over RGB + trimap patches. Input [B, 4, H, W] with H, W multiples of the patch size."""

    def __init__(self, *, config: MatterConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        if c.embed_dim % c.num_heads:
            raise ValueError("matter embed_dim must be divisible by num_heads")
        self.patch_embed = nn.Conv2d(4, c.embed_dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, c.embed_dim, c.pretrain_grid, c.pretrain_grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            Block(dim=c.embed_dim, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio,
                  window_size=0 if i in c.global_blocks else c.window_size, routed=i in c.global_blocks and i > 0)
            for i in range(c.depth))
        self.residuals = nn.ModuleDict({str(i): ResBottleneck(dim=c.embed_dim) for i in c.global_blocks})
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and (".router." in f".{name}." or ".ltrm." in f".{name}."):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, *, static_routing: bool = False) -> ViTOutput:
        """x [B, 4, H, W]: ImageNet-normalised RGB + trimap in {0, 0.5, 1}; returns [B, D, H/p, W/p].
        static_routing: inference routing without host syncs (`Block._route_static`; for CUDA)."""
        x = self.patch_embed(x)  # (B, D, h, w)
        pos = F.interpolate(self.pos_embed, size=x.shape[-2:], mode="bicubic", align_corners=False)
        x = (x + pos).permute(0, 2, 3, 1)  # (B, D, h, w) -> (B, h, w, D)
        keeps = []
        for i, blk in enumerate(self.blocks):
            x, keep = blk(x, keep_ratio=self.config.keep_ratio, max_tokens=self.config.max_tokens,
                          static_routing=static_routing)
            if keep is not None:
                keeps.append(keep)
            if str(i) in self.residuals:
                x = self.residuals[str(i)](x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return ViTOutput(x.permute(0, 3, 1, 2).contiguous(), keeps)
