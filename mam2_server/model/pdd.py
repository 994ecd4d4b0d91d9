"""Promptable Dual-mode Decoder (PDD): sam2's mask decoder plus a mask-guided trimap head.

On top of sam2's `MaskDecoder` the PDD adds (paper sec. 3.4):

* one trimap output token per class (bg / unknown / fg = 0 / 1 / 2), run through the
  same two-way transformer as the mask tokens;
* a *trimap feature*: a second upscaling branch of the transformer's image output
  (same shape as the 32-channel *segmentation feature*, the mask upscaled embedding);
* a *mask augment feature*: sigmoid(selected mask logits) -> conv;
* a light fusion module over concat(mask augment, segmentation, trimap feature);
* trimap logits = per-class hypernetwork(trimap token) . fused feature, at the mask's
  resolution (image_size / 4, i.e. 256 x 256 for a 1024 input).

With `PDDConfig.enabled = False` none of these exist and `forward` is exactly
`MaskDecoder.forward` (tested against sam2's class on the same weights).
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional

import torch
from torch import nn

from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam2_utils import MLP, LayerNorm2d

from mam2_server.model.config import PDDConfig

__all__ = ["PromptableDualDecoder", "DualDecoderOutput", "MaskGuidedFusion"]

# name prefixes (inside the decoder) of every parameter the PDD adds to sam2's decoder
PDD_NEW_PREFIXES = ("trimap_tokens.", "trimap_upscaling.", "mask_augment.", "trimap_fusion.",
                    "trimap_hypernetworks_mlps.")


class DualDecoderOutput(NamedTuple):
    masks: torch.Tensor  # [B, M, h, w] mask logits (M = 3 multimask, else 1), h = w = image_size / 4
    iou_pred: torch.Tensor  # [B, M]
    sam_tokens_out: torch.Tensor  # [B, 1 or 3, C] tokens for the object pointer (as sam2)
    object_score_logits: torch.Tensor  # [B, 1]
    best_masks: torch.Tensor  # [B, 1, h, w] the mask the trimap is guided by (highest IoU of `masks`)
    trimap_logits: Optional[torch.Tensor]  # [B, num_classes, h, w] or None when the PDD is disabled


class MaskGuidedFusion(nn.Module):
    """concat(mask augment, segmentation feature, trimap feature) -> fused trimap feature.

    Input three maps [B, Ca, h, w], [B, C, h, w], [B, C, h, w]; output [B, C, h, w]. The
    trimap feature is kept as a residual so a freshly initialised fusion starts close to
    a plain parallel trimap branch.
    """

    def __init__(self, *, aug_channels: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(aug_channels + 2 * channels, hidden, kernel_size=3, padding=1),
            LayerNorm2d(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )

    def forward(self, mask_aug: torch.Tensor, seg_feat: torch.Tensor, trimap_feat: torch.Tensor) -> torch.Tensor:
        return trimap_feat + self.body(torch.cat([mask_aug, seg_feat, trimap_feat], dim=1))


class PromptableDualDecoder(MaskDecoder):
    """sam2 `MaskDecoder` that also predicts a 3-class trimap (see module docstring).

    Keyword arguments are `MaskDecoder`'s plus `pdd`, the PDDConfig.
    """

    def __init__(self, *, pdd: PDDConfig = PDDConfig(), **mask_decoder_kwargs) -> None:
        super().__init__(**mask_decoder_kwargs)
        self.pdd = pdd
        self.num_trimap_tokens = pdd.num_classes if pdd.enabled else 0
        if not pdd.enabled:
            return
        dim = self.transformer_dim
        c = dim // 8  # channels of the upscaled embedding
        self.trimap_tokens = nn.Embedding(pdd.num_classes, dim)
        act = type(self.output_upscaling[2])
        self.trimap_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            act(),
            nn.ConvTranspose2d(dim // 4, c, kernel_size=2, stride=2),
            act(),
        )
        self.mask_augment = nn.Sequential(nn.Conv2d(1, pdd.mask_aug_channels, kernel_size=3, padding=1), act())
        self.trimap_fusion = MaskGuidedFusion(aug_channels=pdd.mask_aug_channels, channels=c, hidden=pdd.fusion_hidden)
        self.trimap_hypernetworks_mlps = nn.ModuleList([MLP(dim, dim, c, 3) for _ in range(pdd.num_classes)])

    # -- sam2-compatible entry point ------------------------------------------------------------
    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
                multimask_output: bool, repeat_image: bool,
                high_res_features: Optional[List[torch.Tensor]] = None):
        """sam2's contract: (masks, iou_pred, sam_tokens_out, object_score_logits); the trimap is dropped."""
        out = self.forward_dual(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                                multimask_output=multimask_output, repeat_image=repeat_image,
                                high_res_features=high_res_features, with_trimap=False)
        return out.masks, out.iou_pred, out.sam_tokens_out, out.object_score_logits

    def forward_dual(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                     sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor, *,
                     multimask_output: bool, repeat_image: bool = False,
                     high_res_features: Optional[List[torch.Tensor]] = None,
                     with_trimap: bool = True) -> DualDecoderOutput:
        """Mask and trimap in one decoder pass.

        image_embeddings [B, C, H, W] (C = 256, H = W = image_size / 16), image_pe [1, C, H, W],
        sparse prompts [B, P, C], dense prompts [B, C, H, W], high_res_features
        [[B, C/8, 4H, 4W], [B, C/4, 2H, 2W]]. Logits are before sigmoid / softmax.
        """
        b = sparse_prompt_embeddings.size(0)
        s = 1 if self.pred_obj_scores else 0
        parts = ([self.obj_score_token.weight] if self.pred_obj_scores else []) + [
            self.iou_token.weight, self.mask_tokens.weight]
        if self.num_trimap_tokens:
            parts.append(self.trimap_tokens.weight)
        output_tokens = torch.cat(parts, dim=0).unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)  # (B, T, C)

        if repeat_image:
            src = torch.repeat_interleave(image_embeddings, tokens.shape[0], dim=0)
        else:
            if image_embeddings.shape[0] != b:
                raise ValueError(f"batch mismatch: {image_embeddings.shape[0]} images, {b} prompts")
            src = image_embeddings
        src = src + dense_prompt_embeddings
        pos_src = torch.repeat_interleave(image_pe, b, dim=0)
        _, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)  # hs (B, T, C); src (B, HW, C)
        iou_token_out = hs[:, s, :]
        mask_tokens_out = hs[:, s + 1: s + 1 + self.num_mask_tokens, :]
        src = src.transpose(1, 2).reshape(b, c, h, w)  # (B, HW, C) -> (B, C, H, W)
        seg_feat = self._upscale(self.output_upscaling, src, high_res_features)  # (B, C/8, 4H, 4W)

        hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
                               dim=1)  # (B, num_mask_tokens, C/8)
        bb, cc, hh, ww = seg_feat.shape
        all_masks = (hyper_in @ seg_feat.view(bb, cc, hh * ww)).view(bb, -1, hh, ww)
        all_iou = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0, :])
        else:
            object_score_logits = 10.0 * all_iou.new_ones(all_iou.shape[0], 1)

        # output selection, as MaskDecoder.forward
        if multimask_output:
            masks, iou_pred = all_masks[:, 1:], all_iou[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._dynamic_multimask_via_stability(all_masks, all_iou)
        else:
            masks, iou_pred = all_masks[:, 0:1], all_iou[:, 0:1]
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]
        else:
            sam_tokens_out = mask_tokens_out[:, 0:1]
        best = torch.argmax(iou_pred, dim=-1)
        best_masks = masks[torch.arange(b, device=masks.device), best].unsqueeze(1)

        trimap_logits = None
        if with_trimap and self.num_trimap_tokens:
            trimap_tokens_out = hs[:, s + 1 + self.num_mask_tokens: s + 1 + self.num_mask_tokens
                                   + self.num_trimap_tokens, :]
            trimap_logits = self.predict_trimap(src, high_res_features, seg_feat, best_masks, trimap_tokens_out)
        return DualDecoderOutput(masks, iou_pred, sam_tokens_out, object_score_logits, best_masks, trimap_logits)

    def predict_trimap(self, src: torch.Tensor, high_res_features: Optional[List[torch.Tensor]],
                       seg_feat: torch.Tensor, mask_logits: torch.Tensor,
                       trimap_tokens_out: torch.Tensor) -> torch.Tensor:
        """Trimap logits [B, K, 4H, 4W] from the transformer image output src [B, C, H, W],
        the segmentation feature [B, C/8, 4H, 4W], the guiding mask logits [B, 1, 4H, 4W]
        and the K trimap output tokens [B, K, C]."""
        trimap_feat = self._upscale(self.trimap_upscaling, src, high_res_features)
        mask_aug = self.mask_augment(torch.sigmoid(mask_logits.to(seg_feat.dtype)))
        fused = self.trimap_fusion(mask_aug, seg_feat, trimap_feat)  # (B, C/8, 4H, 4W)
        hyper = torch.stack([mlp(trimap_tokens_out[:, i, :]) for i, mlp in enumerate(self.trimap_hypernetworks_mlps)],
                            dim=1)  # (B, K, C/8)
        b, c, h, w = fused.shape
        return (hyper @ fused.view(b, c, h * w)).view(b, -1, h, w)

    def _upscale(self, branch: nn.Sequential, src: torch.Tensor,
                 high_res_features: Optional[List[torch.Tensor]]) -> torch.Tensor:
        if not self.use_high_res_features:
            return branch(src)
        dc1, ln1, act1, dc2, act2 = branch
        feat_s0, feat_s1 = high_res_features
        x = act1(ln1(dc1(src) + feat_s1))
        return act2(dc2(x) + feat_s0)

    def new_parameter_names(self) -> list[str]:
        """Names (relative to this module) of the parameters the PDD adds to sam2's decoder."""
        return [n for n, _ in self.named_parameters() if n.startswith(PDD_NEW_PREFIXES)]
