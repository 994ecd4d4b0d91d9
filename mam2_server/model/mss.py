"""MAM2Base: SAM2Base with the PDD as its decoder and the Memory-Separable Siamese pass.

Per frame (paper eq. 6-7):

* pass 1: the PDD decodes the mask from the memory-conditioned feature (sam2's usual
  path: `_prepare_memory_conditioned_features` + prompt);
* pass 2 (MSS, every frame whose pass 1 saw memory): the *same* PDD runs on the
  memory-free top-level feature `current_vision_feats[-1]` (+ `no_mem_embed`, as an
  initial conditioning frame sees it) with the same high-res features and pass 1's
  low-res mask logits as the dense prompt; its trimap is the frame's trimap.

Initial conditioning frames prompted with points/box decode on memory-free features
already, so pass 1's trimap is used. Mask-prompted frames are short-circuited by
sam2's `_use_mask_as_output`; their trimap comes from an explicit PDD call with the
given mask (as ±10 logits) as the dense prompt.

`track_step` keeps sam2's contract (a `current_out` dict) and adds the keys
`trimap_logits` [B, 3, h, w] (h = w = image_size / 4; None when the PDD is disabled)
and `trimap_from` ("pass1", "mss" or "mask").
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Mapping, NamedTuple, Optional

import torch
import torch.nn.functional as F

from sam2.modeling.sam2_base import NO_OBJ_SCORE, SAM2Base

from mam2_server.model.config import PDDConfig
from mam2_server.model.pdd import PromptableDualDecoder

if TYPE_CHECKING:
    from mam2_server.model.cuda_graphs import StageGraphs

__all__ = ["MAM2Base", "HeadsOutput"]


class HeadsOutput(NamedTuple):
    """sam2's 7 head outputs (see `SAM2Base._forward_sam_heads`) plus the trimap."""

    low_res_multimasks: torch.Tensor  # [B, M, h, w] logits, h = image_size / 4
    high_res_multimasks: torch.Tensor  # [B, M, image_size, image_size]
    ious: torch.Tensor  # [B, M]
    low_res_masks: torch.Tensor  # [B, 1, h, w] best mask
    high_res_masks: torch.Tensor  # [B, 1, image_size, image_size]
    obj_ptr: torch.Tensor  # [B, C]
    object_score_logits: torch.Tensor  # [B, 1]
    trimap_logits: Optional[torch.Tensor]  # [B, 3, h, w] or None

    def sam2_tuple(self) -> tuple:
        return tuple(self)[:7]


class MAM2Base(SAM2Base):
    """SAM2Base + PDD + MSS. `mam2_pdd` is a PDDConfig or its dict form (from a Hydra override)."""

    def __init__(self, *args: Any, mam2_pdd: PDDConfig | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if mam2_pdd is None:
            mam2_pdd = PDDConfig()
        elif not isinstance(mam2_pdd, PDDConfig):
            mam2_pdd = PDDConfig(**{str(k): v for k, v in dict(mam2_pdd).items()})
        self.pdd_config = mam2_pdd  # read by _build_sam_heads during super().__init__
        super().__init__(*args, **kwargs)

    def _build_sam_heads(self) -> None:
        super()._build_sam_heads()
        old = self.sam_mask_decoder
        extra = dict(self.sam_mask_decoder_extra_args or {})
        self.sam_mask_decoder = PromptableDualDecoder(
            pdd=self.pdd_config,
            num_multimask_outputs=old.num_multimask_outputs,
            transformer=old.transformer,
            transformer_dim=old.transformer_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            use_high_res_features=self.use_high_res_features_in_sam,
            iou_prediction_use_sigmoid=self.iou_prediction_use_sigmoid,
            pred_obj_scores=self.pred_obj_scores,
            pred_obj_scores_mlp=self.pred_obj_scores_mlp,
            use_multimask_token_for_obj_ptr=self.use_multimask_token_for_obj_ptr,
            **extra,
        )
        # keep sam2's initialisation of the shared parts (the PDD only adds modules)
        self.sam_mask_decoder.load_state_dict(old.state_dict(), strict=False)

    # -- heads ----------------------------------------------------------------------------------
    def _forward_pdd_heads(self, backbone_features: torch.Tensor, point_inputs: Optional[dict] = None,
                           mask_inputs: Optional[torch.Tensor] = None,
                           high_res_features: Optional[List[torch.Tensor]] = None,
                           multimask_output: bool = False, with_trimap: bool = True) -> HeadsOutput:
        """Prompt encoder + PDD + sam2's post-processing. Shapes as `SAM2Base._forward_sam_heads`:
        backbone_features [B, C, H, W]; points {"point_coords" [B, P, 2], "point_labels" [B, P]} in
        image_size pixels; mask_inputs [B, 1, *, *] logits (resized to image_size / 4)."""
        b = backbone_features.size(0)
        device = backbone_features.device
        if point_inputs is not None:
            coords, labels = point_inputs["point_coords"], point_inputs["point_labels"]
        else:  # sam2 always pads with one dummy point (label -1)
            coords = torch.zeros(b, 1, 2, device=device)
            labels = -torch.ones(b, 1, dtype=torch.int32, device=device)
        mask_prompt = None
        if mask_inputs is not None:
            size = self.sam_prompt_encoder.mask_input_size
            mask_prompt = mask_inputs if mask_inputs.shape[-2:] == size else F.interpolate(
                mask_inputs.float(), size=size, align_corners=False, mode="bilinear", antialias=True)
        sparse, dense = self.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=mask_prompt)
        dec = self.sam_mask_decoder.forward_dual(
            backbone_features, self.sam_prompt_encoder.get_dense_pe(), sparse, dense,
            multimask_output=multimask_output, repeat_image=False, high_res_features=high_res_features,
            with_trimap=with_trimap)
        low_res_multimasks, ious, tokens, object_score_logits = (dec.masks, dec.iou_pred, dec.sam_tokens_out,
                                                                 dec.object_score_logits)
        if self.pred_obj_scores:
            is_obj_appearing = object_score_logits > 0
            low_res_multimasks = torch.where(is_obj_appearing[:, None, None], low_res_multimasks, NO_OBJ_SCORE)
        low_res_multimasks = low_res_multimasks.float()
        high_res_multimasks = F.interpolate(low_res_multimasks, size=(self.image_size, self.image_size),
                                            mode="bilinear", align_corners=False)
        token = tokens[:, 0]
        if multimask_output:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(b, device=device)
            low_res_masks = low_res_multimasks[rows, best].unsqueeze(1)
            high_res_masks = high_res_multimasks[rows, best].unsqueeze(1)
            if tokens.size(1) > 1:
                token = tokens[rows, best]
        else:
            low_res_masks, high_res_masks = low_res_multimasks, high_res_multimasks
        obj_ptr = self.obj_ptr_proj(token)
        if self.pred_obj_scores:
            lam = object_score_logits.sigmoid() if self.soft_no_obj_ptr else is_obj_appearing.float()
            if self.fixed_no_obj_ptr:
                obj_ptr = lam * obj_ptr
            obj_ptr = obj_ptr + (1 - lam) * self.no_obj_ptr
        trimap = None if dec.trimap_logits is None else dec.trimap_logits.float()
        return HeadsOutput(low_res_multimasks, high_res_multimasks, ious, low_res_masks, high_res_masks,
                           obj_ptr, object_score_logits, trimap)

    def _forward_sam_heads(self, backbone_features, point_inputs=None, mask_inputs=None,
                           high_res_features=None, multimask_output=False):
        """sam2's 7-tuple contract (used by sam2's `_use_mask_as_output`); no trimap computed."""
        return self._forward_pdd_heads(backbone_features, point_inputs, mask_inputs, high_res_features,
                                       multimask_output, with_trimap=False).sam2_tuple()

    # -- MSS ------------------------------------------------------------------------------------
    def memory_free_features(self, current_vision_feats: List[torch.Tensor],
                             feat_sizes: List[tuple[int, int]]) -> torch.Tensor:
        """Top-level feature without memory, [B, C, H, W] (+ no_mem_embed when configured)."""
        x = current_vision_feats[-1]  # (HW, B, C)
        if self.pdd_config.mss_add_no_mem_embed:
            x = x + self.no_mem_embed
        b = x.size(1)
        return x.permute(1, 2, 0).reshape(b, self.hidden_dim, *feat_sizes[-1])  # (HW, B, C) -> (B, C, H, W)

    def mss_second_pass(self, current_vision_feats: List[torch.Tensor], feat_sizes: List[tuple[int, int]],
                        high_res_features: Optional[List[torch.Tensor]], mask_logits: torch.Tensor) -> HeadsOutput:
        """PDD on memory-free features with `mask_logits` [B, 1, h, w] (low-res) as the dense prompt."""
        pix = self.memory_free_features(current_vision_feats, feat_sizes)
        return self._forward_pdd_heads(pix, None, mask_logits, high_res_features, multimask_output=False)

    def _track_step(self, frame_idx, is_init_cond_frame, current_vision_feats, current_vision_pos_embeds,
                    feat_sizes, point_inputs, mask_inputs, output_dict, num_frames, track_in_reverse,
                    prev_sam_mask_logits, graphs: Optional["StageGraphs"] = None):
        """sam2's contract (current_out, sam_outputs, high_res_features, pix_feat); sam_outputs is a
        HeadsOutput whose trimap is the frame's final trimap (see module docstring). With `graphs`
        (CUDA), a tracked frame's decode (PDD pass 1 + MSS) replays a captured CUDA graph."""
        current_out: dict[str, Any] = {"point_inputs": point_inputs, "mask_inputs": mask_inputs}
        high_res_features = None
        if len(current_vision_feats) > 1:
            high_res_features = [x.permute(1, 2, 0).reshape(x.size(1), x.size(2), *s)  # (HW, B, C) -> (B, C, H, W)
                                 for x, s in zip(current_vision_feats[:-1], feat_sizes[:-1])]
        trimap_enabled = self.pdd_config.enabled
        if mask_inputs is not None and self.use_mask_input_as_output_without_sam:
            pix_feat = current_vision_feats[-1].permute(1, 2, 0).reshape(-1, self.hidden_dim, *feat_sizes[-1])
            outs = HeadsOutput(*self._use_mask_as_output(pix_feat, high_res_features, mask_inputs), None)
            trimap_from = "mask"
            if trimap_enabled:  # explicit PDD call: the given mask (as logits) is the dense prompt
                second = self.mss_second_pass(current_vision_feats, feat_sizes, high_res_features, outs.low_res_masks)
                outs = outs._replace(trimap_logits=second.trimap_logits)
        else:
            pix_feat = self._prepare_memory_conditioned_features(
                frame_idx=frame_idx, is_init_cond_frame=is_init_cond_frame,
                current_vision_feats=current_vision_feats[-1:], current_vision_pos_embeds=current_vision_pos_embeds[-1:],
                feat_sizes=feat_sizes[-1:], output_dict=output_dict, num_frames=num_frames,
                track_in_reverse=track_in_reverse)
            if prev_sam_mask_logits is not None:
                if point_inputs is None or mask_inputs is not None:
                    raise ValueError("prev_sam_mask_logits needs point inputs and no mask input")
                mask_inputs = prev_sam_mask_logits
            multimask = self._use_multimask(is_init_cond_frame, point_inputs)
            use_mss = trimap_enabled and self.pdd_config.mss and not is_init_cond_frame
            top, size = current_vision_feats[-1], feat_sizes[-1]
            if graphs is not None and point_inputs is None and mask_inputs is None:  # a tracked frame
                def decode(pix: torch.Tensor, free: torch.Tensor, *high_res: torch.Tensor) -> HeadsOutput:
                    return self._decode(pix, free, size, list(high_res) or None, None, None, multimask, use_mss)
                outs = graphs.run("decode", (multimask, use_mss, tuple(size)), decode,
                                  (pix_feat, top, *(high_res_features or ())))
            else:
                outs = self._decode(pix_feat, top, size, high_res_features, point_inputs, mask_inputs, multimask,
                                    use_mss)
            trimap_from = "mss" if use_mss else "pass1"
        current_out["trimap_from"] = trimap_from if trimap_enabled else None
        return current_out, outs, high_res_features, pix_feat

    def _decode(self, pix_feat: torch.Tensor, top_feat: torch.Tensor, feat_size: tuple[int, int],
                high_res_features: Optional[List[torch.Tensor]], point_inputs: Optional[dict],
                mask_inputs: Optional[torch.Tensor], multimask: bool, use_mss: bool) -> HeadsOutput:
        """PDD pass 1 on the memory-conditioned feature pix_feat [B, C, H, W], then (use_mss) the MSS
        pass on the memory-free top_feat [HW, B, C], whose trimap replaces pass 1's."""
        outs = self._forward_pdd_heads(pix_feat, point_inputs, mask_inputs, high_res_features, multimask,
                                       with_trimap=self.pdd_config.enabled and not use_mss)
        if use_mss:
            second = self.mss_second_pass([top_feat], [feat_size], high_res_features, outs.low_res_masks)
            outs = outs._replace(trimap_logits=second.trimap_logits)
        return outs

    def track_step(self, frame_idx, is_init_cond_frame, current_vision_feats, current_vision_pos_embeds,
                   feat_sizes, point_inputs, mask_inputs, output_dict, num_frames, track_in_reverse=False,
                   run_mem_encoder=True, prev_sam_mask_logits=None, graphs: Optional["StageGraphs"] = None):
        """As `SAM2Base.track_step`, plus `trimap_logits` / `trimap_from` in the returned dict. `graphs`
        (a `StageGraphs`, CUDA only): the decode and the memory encoder replay captured CUDA graphs."""
        current_out, outs, _, _ = self._track_step(
            frame_idx, is_init_cond_frame, current_vision_feats, current_vision_pos_embeds, feat_sizes,
            point_inputs, mask_inputs, output_dict, num_frames, track_in_reverse, prev_sam_mask_logits, graphs)
        current_out["pred_masks"] = outs.low_res_masks
        current_out["pred_masks_high_res"] = outs.high_res_masks
        current_out["obj_ptr"] = outs.obj_ptr
        current_out["trimap_logits"] = outs.trimap_logits
        current_out["object_score_logits"] = outs.object_score_logits  # (sam2 adds it in eval only)
        if graphs is not None and run_mem_encoder and self.num_maskmem > 0:
            from_points, size = point_inputs is not None, feat_sizes[-1]

            def encode(top: torch.Tensor, masks: torch.Tensor, scores: torch.Tensor):
                return self._encode_new_memory([top], [size], masks, scores, from_points)
            current_out["maskmem_features"], current_out["maskmem_pos_enc"] = graphs.run(
                "memory_encoder", (from_points, tuple(size)), encode,
                (current_vision_feats[-1], outs.high_res_masks, outs.object_score_logits))
        else:
            self._encode_memory_in_output(current_vision_feats, feat_sizes, point_inputs, run_mem_encoder,
                                          outs.high_res_masks, outs.object_score_logits, current_out)
        return current_out
