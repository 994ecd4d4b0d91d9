"""Training forward passes: the model's own modules, with autograd (the tracker runs under inference_mode).

* `video_forward` (stage 1): the clip goes through the image encoder (+ LoRA) as one
  batch, then frame by frame through `MAM2Base._track_step` exactly as the tracker
  drives it: frame 0 is the initial conditioning frame prompted with the GT box,
  later frames are decoded from the memory bank (pass 1) and get their trimap from the
  MSS second pass; every frame's mask memory is encoded and kept (the clip is short),
  so gradients flow through the memory path too.
* `matter_forward` (stage 2): the matter on the display-referred frame and the GT
  trimap, in training mode (Gumbel routing, keep fractions returned).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

from mam2_server.model.build import MAM2Model
from mam2_server.model.tracker import IMAGENET_MEAN, IMAGENET_STD
from mam2_server.train.data import TrainSample

__all__ = ["box_prompt", "matter_forward", "video_forward"]


def box_prompt(box: torch.Tensor) -> dict[str, torch.Tensor]:
    """sam2 point inputs for a box [4] (x0, y0, x1, y1 pixel edges in model pixels), labels 2 / 3.
    Pixel edges -> sam2's pixel centres (-0.5), as `StreamingTracker._prompt_inputs` converts."""
    coords = box.float().view(1, 2, 2) - 0.5
    labels = torch.tensor([[2, 3]], dtype=torch.int32, device=box.device)
    return {"point_coords": coords, "point_labels": labels}


Autocast = Callable[[], contextlib.AbstractContextManager]


def video_forward(model: MAM2Model, sample: TrainSample, autocast: Autocast | None = None) -> list[dict[str, Any]]:
    """Per-frame outputs of a clip [T, 3, S, S]: "mask_logits" [1, M, S, S] (M = 1 or 3 candidates),
    "iou_pred" [1, M], "object_score_logits" [1, 1], "trimap_logits" [1, 3, S/4, S/4] (or None).
    `autocast` (default: the model config's) is entered around the network's own modules."""
    sam = model.sam
    autocast = autocast or model.autocast
    x = (sample.images - IMAGENET_MEAN.to(sample.images.device)) / IMAGENET_STD.to(sample.images.device)
    with autocast():
        backbone_out = sam.forward_image(x)
    _, feats, pos, sizes = sam._prepare_backbone_features(backbone_out)  # lists of (HW, T, C)
    num_frames = x.shape[0]
    bank: dict[str, dict[int, dict]] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    frames = []
    for t in range(num_frames):
        f_t = [v[:, t:t + 1] for v in feats]
        p_t = [v[:, t:t + 1] for v in pos]
        points = box_prompt(sample.box) if t == 0 else None
        with autocast():
            current, heads, _, _ = sam._track_step(t, t == 0, f_t, p_t, sizes, points, None, bank, num_frames,
                                                   False, None)
            # what MAM2Base.track_step does with the heads, keeping the HeadsOutput for the losses
            current.update(pred_masks=heads.low_res_masks, pred_masks_high_res=heads.high_res_masks,
                           obj_ptr=heads.obj_ptr, trimap_logits=heads.trimap_logits,
                           object_score_logits=heads.object_score_logits)
            sam._encode_memory_in_output(f_t, sizes, points, True, heads.high_res_masks,
                                         heads.object_score_logits, current)
        bank["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = current
        frames.append({"mask_logits": heads.high_res_multimasks.float(), "iou_pred": heads.ious.float(),
                       "object_score_logits": heads.object_score_logits.float(),
                       "trimap_logits": None if heads.trimap_logits is None else heads.trimap_logits.float()})
    return frames


def matter_forward(model: MAM2Model, sample: TrainSample, autocast: Autocast | None = None) -> list[dict[str, Any]]:
    """Per-frame matter outputs: "alpha" [1, 1, S, S] and "keep_fractions" (list of [1]).
    The trimap input is the GT trimap as {0, 0.5, 1}, the matter's input convention."""
    if sample.trimap is None:
        raise ValueError(f"a {sample.kind} sample has no trimap; the matter trains on matting samples")
    matter = model.matter
    autocast = autocast or model.autocast
    out = []
    for t in range(sample.images.shape[0]):
        image = matter.normalise(sample.images[t:t + 1])
        trimap = sample.trimap[t:t + 1, None].float() * 0.5  # classes 0 / 1 / 2 -> 0 / 0.5 / 1
        with autocast():
            alpha, keeps = matter.forward_with_routing(image, trimap, tiled=False)
        out.append({"alpha": alpha.float(), "keep_fractions": [k.float() for k in keeps]})
    return out
