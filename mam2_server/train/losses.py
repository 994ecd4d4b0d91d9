"""MAM2 training losses (paper sec. 3.2 and A.5) and the selective supervision scheme.

* `mask_loss`: SAM2's L_mask (sigmoid focal + dice on mask logits, L1 on the predicted
  IoU, BCE on the object score), weights in `LossWeights`;
* `trimap_loss`: the Normalized Focal Loss of eq. (8) on the 3-class trimap softmax;
  `trimap_from_alpha` makes its ground truth (classes 0 bg / 1 unknown / 2 fg, the
  PDD's order, see `PDDConfig.num_classes`);
* `alpha_loss`: separate L1 + L2 + Laplacian + gradient penalty (ViTMatte's criterion
  plus L2); `keep_ratio_loss` is MEMatte's router regulariser;
* `stage_loss(stage, sample_kind, outputs, targets)`: eq. (1) / (2), which term is
  active for which data kind in which stage.

All losses return a scalar tensor. Shapes: N is a batch of frames (or of images).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "SAMPLE_KINDS",
    "LossBreakdown",
    "LossWeights",
    "alpha_loss",
    "dice_loss",
    "gradient_penalty_loss",
    "keep_ratio_loss",
    "laplacian_loss",
    "mask_loss",
    "normalized_focal_loss",
    "separate_l1_loss",
    "sigmoid_focal_loss",
    "stage_loss",
    "supervised_terms",
    "trimap_from_alpha",
    "trimap_loss",
]

SAMPLE_KINDS = ("IM", "VM", "VOS", "IS")  # image / video matting, video object / image segmentation
TRIMAP_BG, TRIMAP_UNKNOWN, TRIMAP_FG = 0, 1, 2

# eq. (1) / (2): (stage, sample kind) -> the loss terms that supervise it; anything else is skipped
_SUPERVISION: dict[tuple[int, str], tuple[str, ...]] = {
    (1, "VOS"): ("mask",), (1, "IS"): ("mask",), (1, "VM"): ("trimap",), (1, "IM"): ("trimap",),
    (2, "IM"): ("alpha",)}


def supervised_terms(stage: int, sample_kind: str) -> tuple[str, ...]:
    """Loss terms active for a sample kind in a stage; () means the sample is skipped."""
    if stage not in (1, 2):
        raise ValueError(f"training stage must be 1 or 2, got {stage!r}")
    if sample_kind not in SAMPLE_KINDS:
        raise ValueError(f"unknown sample kind {sample_kind!r}; known: {', '.join(SAMPLE_KINDS)}")
    return _SUPERVISION.get((stage, sample_kind), ())


@dataclass(frozen=True)
class LossWeights:
    """Loss weights: SAM2's fine-tune weights (MOSE config) for L_mask, and the stage-2 router regulariser."""

    mask: float = 20.0  # sigmoid focal
    dice: float = 1.0
    iou: float = 1.0  # L1 between predicted and actual IoU
    cls: float = 1.0  # BCE on the object score
    keep_ratio: float = 1.0  # MEMatte router keep-fraction MSE (stage 2 only)


@dataclass
class LossBreakdown:
    """The total (a scalar tensor; 0 and no grad when skipped) and its named parts as floats."""

    total: torch.Tensor
    parts: dict[str, float]
    active: bool


# -- L_mask ----------------------------------------------------------------------------------
def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Per-mask focal loss, logits / target [N, M, H, W] -> [N, M] (mean over pixels)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(2).mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, *, eps: float = 1.0) -> torch.Tensor:
    """Per-mask dice loss, logits / target [N, M, H, W] -> [N, M]; eps smooths empty masks (as SAM2)."""
    p = torch.sigmoid(logits).flatten(2)
    t = target.flatten(2)
    return 1 - (2 * (p * t).sum(-1) + eps) / (p.sum(-1) + t.sum(-1) + eps)


def mask_loss(mask_logits: torch.Tensor, iou_pred: torch.Tensor, object_score_logits: torch.Tensor,
              target_mask: torch.Tensor, weights: LossWeights = LossWeights()
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SAM2's L_mask. mask_logits [N, M, H, W] (M candidate masks), iou_pred [N, M],
    object_score_logits [N, 1], target_mask [N, 1, H, W] in {0, 1}.

    With M > 1 the focal / dice / IoU terms use the candidate with the lowest focal + dice (SAM2).
    The mask terms are zeroed for frames whose object is absent; the object score learns presence.
    """
    target = target_mask.to(mask_logits.dtype).expand_as(mask_logits)
    focal = sigmoid_focal_loss(mask_logits, target)  # (N, M)
    dice = dice_loss(mask_logits, target)
    best = torch.argmin(weights.mask * focal + weights.dice * dice, dim=1)  # (N,)
    rows = torch.arange(mask_logits.shape[0], device=mask_logits.device)
    with torch.no_grad():  # the IoU the head should have predicted
        pred = mask_logits[rows, best] > 0
        gt = target[rows, best] > 0.5
        inter = (pred & gt).flatten(1).sum(-1).float()
        union = (pred | gt).flatten(1).sum(-1).float()
        actual_iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))
    present = (target_mask.flatten(1).amax(-1) > 0.5).to(mask_logits.dtype)  # (N,)
    n = present.sum().clamp_min(1)
    parts = {
        "mask": (focal[rows, best] * present).sum() / n,
        "dice": (dice[rows, best] * present).sum() / n,
        "iou": ((iou_pred[rows, best] - actual_iou).abs() * present).sum() / n,
        "cls": F.binary_cross_entropy_with_logits(object_score_logits.flatten(), present),
    }
    total = sum(getattr(weights, k) * v for k, v in parts.items())
    return total, parts


# -- L_trimap --------------------------------------------------------------------------------
def normalized_focal_loss(logits: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0,
                          eps: float = 1e-8) -> torch.Tensor:
    """Eq. (8): per image, sum_ij (1 - p_ij)^g (-log p_ij) / sum_ij (1 - p_ij)^g, then the batch mean.

    logits [N, K, H, W] (softmax over K), target [N, H, W] class indices. p is the softmax
    probability of the true class; the normaliser is detached (RITM / MattePro).
    """
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None].long())[:, 0]  # (N, H, W)
    factor = (1 - log_p.exp()) ** gamma
    norm = factor.detach().flatten(1).sum(-1) + eps  # (N,)
    return ((factor * -log_p).flatten(1).sum(-1) / norm).mean()


def trimap_loss(trimap_logits: torch.Tensor, target_trimap: torch.Tensor, *, gamma: float = 2.0) -> torch.Tensor:
    """NFL of trimap logits [N, 3, h, w] against classes [N, H, W]; logits are upsampled to H x W."""
    if trimap_logits.shape[-2:] != target_trimap.shape[-2:]:
        trimap_logits = F.interpolate(trimap_logits, size=target_trimap.shape[-2:], mode="bilinear",
                                      align_corners=False)
    return normalized_focal_loss(trimap_logits, target_trimap, gamma=gamma)


def trimap_from_alpha(alpha: torch.Tensor, kernel: int | tuple[int, int] = 9, *,
                      generator: torch.Generator | None = None, eps: float = 1 / 255) -> torch.Tensor:
    """GT trimap classes [N, H, W] (0 bg / 1 unknown / 2 fg) from alpha [N, 1, H, W] in [0, 1].

    Quantise (fg: alpha >= 1 - eps, bg: alpha <= eps, the rest unknown), then erode fg and bg
    with a square `kernel` px wide (an int, or an inclusive (min, max) range drawn per call),
    which widens the unknown band into both sides of every edge.
    """
    if isinstance(kernel, tuple):
        kernel = int(torch.randint(kernel[0], kernel[1] + 1, (1,), generator=generator))
    fg = (alpha >= 1 - eps).float()
    bg = (alpha <= eps).float()
    if kernel > 1:
        pad = (kernel // 2, kernel - 1 - kernel // 2) * 2  # left, right, top, bottom

        def erode(x: torch.Tensor) -> torch.Tensor:  # min filter; outside the image counts as "in"
            return -F.max_pool2d(F.pad(-x, pad, value=-1.0), kernel, stride=1)

        fg, bg = erode(fg), erode(bg)
    out = torch.full_like(alpha[:, 0], TRIMAP_UNKNOWN, dtype=torch.long)
    out[fg[:, 0] > 0.5] = TRIMAP_FG
    out[bg[:, 0] > 0.5] = TRIMAP_BG
    return out


# -- L_alpha ---------------------------------------------------------------------------------
def separate_l1_loss(pred: torch.Tensor, target: torch.Tensor, unknown: torch.Tensor,
                     eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1 inside the unknown region, L1 outside it), each normalised by its own area.
    pred / target / unknown [N, 1, H, W]; unknown in {0, 1}."""
    err = (pred - target).abs()
    known = 1 - unknown
    return (err * unknown).sum() / (unknown.sum() + eps), (err * known).sum() / (known.sum() + eps)


def _gauss_kernel(channels: int, device, dtype) -> torch.Tensor:
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device, dtype=dtype)
    k2 = torch.outer(k1, k1) / 256.0  # 5x5 binomial approximation of a Gaussian
    return k2.expand(channels, 1, 5, 5)


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    # reflect padding keeps zero-inserted upsampling exact at the borders (a constant image has
    # an all-zero pyramid); maps under 3 px (the top levels of tiny crops) can only replicate
    mode = "reflect" if min(x.shape[-2:]) > 2 else "replicate"
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode=mode), kernel, groups=x.shape[1])


def laplacian_pyramid(x: torch.Tensor, levels: int = 5) -> list[torch.Tensor]:
    """Band-pass levels of x [N, C, H, W]: level i = current - upsample(downsample(current))."""
    kernel = _gauss_kernel(x.shape[1], x.device, x.dtype)
    out, current = [], x
    for _ in range(levels):
        current = current[..., : current.shape[-2] // 2 * 2 or 1, : current.shape[-1] // 2 * 2 or 1]
        down = _blur(current, kernel)[..., ::2, ::2]
        up = torch.zeros_like(current)
        up[..., ::2, ::2] = down * 4  # zero insertion; x4 restores the mean after blurring
        out.append(current - _blur(up, kernel))
        current = down
    return out


def laplacian_loss(pred: torch.Tensor, target: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """sum_i 2^i * L1(level i) / levels over 5x5-Gaussian Laplacian pyramids of [N, 1, H, W] maps."""
    pairs = zip(laplacian_pyramid(pred, levels), laplacian_pyramid(target, levels))
    return sum((2 ** i) * F.l1_loss(p, t) for i, (p, t) in enumerate(pairs)) / levels


def _sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype)
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(xp, kx.view(1, 1, 3, 3)), F.conv2d(xp, kx.t().reshape(1, 1, 3, 3))


def gradient_penalty_loss(pred: torch.Tensor, target: torch.Tensor, unknown: torch.Tensor,
                          eps: float = 1e-6) -> torch.Tensor:
    """Sobel-gradient L1 inside the unknown region (normalised by its area) + 0.01 * mean |grad pred|.
    pred / target / unknown [N, 1, H, W]."""
    pgx, pgy = _sobel(pred)
    tgx, tgy = _sobel(target)
    area = unknown.sum() + eps
    match = (((pgx - tgx).abs() + (pgy - tgy).abs()) * unknown).sum() / area
    return match + 0.01 * (pgx.abs().mean() + pgy.abs().mean())


def alpha_loss(pred: torch.Tensor, target: torch.Tensor, unknown: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A.5's L_alpha = separate L1 + L2 + Laplacian + gradient; pred / target / unknown [N, 1, H, W]."""
    l1_unknown, l1_known = separate_l1_loss(pred, target, unknown)
    parts = {"l1_unknown": l1_unknown, "l1_known": l1_known, "l2": F.mse_loss(pred, target),
             "laplacian": laplacian_loss(pred, target), "gradient": gradient_penalty_loss(pred, target, unknown)}
    return sum(parts.values()), parts


def keep_ratio_loss(keep_fractions: Sequence[torch.Tensor], target: float = 0.25) -> torch.Tensor:
    """MEMatte's router regulariser: MSE between each routed block's mean keep fraction ([N] each)
    and `target`, averaged over blocks. 0 when there are no routed blocks."""
    if not keep_fractions:
        return torch.zeros(())
    return torch.stack([(k.float().mean() - target) ** 2 for k in keep_fractions]).mean()


# -- selective supervision -------------------------------------------------------------------
def stage_loss(stage: int, sample_kind: str, outputs: Mapping[str, object], targets: Mapping[str, torch.Tensor],
               weights: LossWeights = LossWeights(), keep_ratio_target: float = 0.25) -> LossBreakdown:
    """Eq. (1) (stage 1) and eq. (2) (stage 2) for one sample.

    outputs (only those the active term reads): "mask_logits" [N, M, H, W], "iou_pred" [N, M],
    "object_score_logits" [N, 1], "trimap_logits" [N, 3, h, w], "alpha" [N, 1, H, W],
    "keep_fractions" list of [N] (optional). targets: "mask" [N, 1, H, W] in {0, 1},
    "trimap" [N, H, W] classes, "alpha" [N, 1, H, W]. Inactive combinations (stage 2 with
    VOS / VM data) give a zero total with `active=False`.
    """
    terms = supervised_terms(stage, sample_kind)
    if not terms:
        return LossBreakdown(torch.zeros(()), {}, active=False)
    parts: dict[str, torch.Tensor] = {}
    if "mask" in terms:
        total, sub = mask_loss(outputs["mask_logits"], outputs["iou_pred"], outputs["object_score_logits"],
                               targets["mask"], weights)
        parts.update({f"mask/{k}": v for k, v in sub.items()})
    elif "trimap" in terms:
        total = trimap_loss(outputs["trimap_logits"], targets["trimap"])
        parts["trimap"] = total
    else:
        unknown = (targets["trimap"] == TRIMAP_UNKNOWN)[:, None].to(outputs["alpha"].dtype)
        total, sub = alpha_loss(outputs["alpha"], targets["alpha"], unknown)
        parts.update({f"alpha/{k}": v for k, v in sub.items()})
        keeps = outputs.get("keep_fractions") or []
        if keeps:
            ratio = keep_ratio_loss(keeps, keep_ratio_target)
            parts["keep_ratio"] = ratio
            total = total + weights.keep_ratio * ratio
    return LossBreakdown(total, {k: float(v.detach()) for k, v in parts.items()}, active=True)
