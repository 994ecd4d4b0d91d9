"""Streaming MAM2 tracker: one frame in, mask + trimap + alpha out, with a bounded memory bank.

Unlike `SAM2VideoPredictor` (which preloads every frame and keeps every frame's memory),
the tracker holds explicit typed per-shot state (`ShotState`):

* `cond`: conditioning frames (keyframes). They stay in the bank for the rest of the
  shot, also when a keyframe is a later correction (sam2 issues #719 / #731);
* `recent`: the last `TrackerConfig.max_recent_frames` (>= 15) tracked frames. sam2
  reads mask memories of the last `num_maskmem - 1` (6) frames and object pointers of
  the last `max_obj_ptrs_in_encoder - 1` (15), so results equal sam2's while memory
  stays flat over a 10,000-frame shot (about 0.8 MiB per frame at 1024, bf16).

Frame indices are 0-based positions in the shot (sam2 uses them for temporal
encodings). `add_keyframe` drops every memory at or beyond the keyframe in the
tracking direction (re-tracking from a corrected keyframe), then decodes the prompt.
The first keyframe of a state is decoded memory-free (sam2's initial conditioning
frame); later keyframes are decoded with the bank as context. Images are (H, W, 3)
display-referred float RGB in [0, 1]; any size (squashed to the model's square input).

On a CUDA device the tracker also runs as `model.runtime.CudaOptions` says (all ignored on the
CPU, whose path is the plain eager one): plates go up from pinned memory and a frame's outputs
come down with one host wait; `encode` enqueues a frame's upload and image encoder on a side
stream, so `prefetch` can start frame i + 1's encoder before frame i decodes (the engine's
one-frame lookahead); the decode and memory encoder replay CUDA graphs (`model.cuda_graphs`);
and the matter routes tokens with fixed shapes. Nothing in `track` waits for the device except
the copy of its outputs.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from mam2_server.model.build import MAM2Model
from mam2_server.model.cuda_graphs import StageGraphs
from mam2_server.model.runtime import CudaOptions, HostCopy, InlineStream, SideStream, Submitted, upload
from mam2_server.prompts import BACKGROUND, FOREGROUND, Prompt

__all__ = ["StreamingTracker", "ShotState", "FrameMemory", "FrameOutput", "EncodedFrame", "trimap_from_mask"]

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
INLINE = InlineStream()

# A frame's plate on the device and its image-encoder features, maybe still being computed on the
# encoder's side stream (`StreamingTracker.encode`); one add_keyframe/track call uses it.
EncodedFrame = Submitted
Image = Union[np.ndarray, EncodedFrame]


@dataclass
class FrameMemory:
    """What a tracked frame leaves in the bank (batch of one object)."""

    index: int
    obj_ptr: torch.Tensor  # [1, C]
    object_score_logits: torch.Tensor  # [1, 1]
    pred_masks: torch.Tensor  # [1, 1, S/4, S/4] low-res mask logits
    maskmem_features: torch.Tensor  # [1, mem_dim, S/16, S/16] in the storage dtype

    def nbytes(self) -> int:
        ts = [self.obj_ptr, self.object_score_logits, self.pred_masks, self.maskmem_features]
        return sum(t.numel() * t.element_size() for t in ts if t is not None)


@dataclass
class ShotState:
    """Per-shot tracking state. Create with `StreamingTracker.new_shot`."""

    width: int
    height: int
    num_frames: Optional[int]  # shot length when known (sam2 normalises pointer encodings with it)
    reverse: bool = False  # tracking direction of the current pass
    cond: dict[int, FrameMemory] = field(default_factory=dict)
    recent: "OrderedDict[int, FrameMemory]" = field(default_factory=OrderedDict)
    maskmem_pos_enc: Optional[list[torch.Tensor]] = None  # shared constant, [1, mem_dim, S/16, S/16]
    last_index: Optional[int] = None  # the last frame processed

    def bank_size(self) -> tuple[int, int]:
        """(cond frames, recent frames) held."""
        return len(self.cond), len(self.recent)

    def nbytes(self) -> int:
        return sum(m.nbytes() for m in (*self.cond.values(), *self.recent.values()))


@dataclass
class FrameOutput:
    index: int
    mask: np.ndarray  # (H, W) float32 object probability
    trimap: np.ndarray  # (H, W) float32: 0 bg / 0.5 unknown / 1 fg
    alpha: Optional[np.ndarray]  # (H, W) float32 in [0, 1], None when the matter is skipped
    mask_logits: torch.Tensor  # [1, 1, S/4, S/4] low-res logits (model space)
    trimap_logits: Optional[torch.Tensor]  # [1, 3, S/4, S/4] or None (PDD disabled)
    object_score: float  # logit; <= 0 means the object is absent


def trimap_from_mask(mask: torch.Tensor, band: int) -> torch.Tensor:
    """Fallback trimap for a [1, 1, H, W] probability: unknown band of `band` px around the edge."""
    fg = (mask > 0.5).float()
    k = 2 * band + 1
    dil = F.max_pool2d(fg, k, stride=1, padding=band)
    ero = -F.max_pool2d(-fg, k, stride=1, padding=band)
    return torch.where(ero > 0.5, 1.0, torch.where(dil > 0.5, 0.5, 0.0))


class StreamingTracker:
    """Runs a MAM2Model frame by frame over shots. All shot state is in ShotState; the tracker holds
    only what runs the device (its side stream, captured CUDA graphs).

    cuda: speed options on a CUDA device (default `CudaOptions()`: all on, graphs with autocast).
    encoder_stream: where `encode` runs (default a `SideStream` on CUDA with `overlap`, else none: no
    lookahead); tests pass an `InlineStream` to run the lookahead protocol on the CPU.
    """

    def __init__(self, model: MAM2Model, *, run_matter: bool = True, cuda: Optional[CudaOptions] = None,
                 encoder_stream: Optional[InlineStream] = None) -> None:
        self.model = model
        self.sam = model.sam
        self.cfg = model.config.tracker
        self.run_matter = run_matter
        self.storage_dtype = getattr(torch, self.cfg.memory_dtype)
        self.keep_maskmem = max(self.sam.num_maskmem - 1, 0)
        self.keep_ptrs = max(self.sam.max_obj_ptrs_in_encoder - 1, 0)
        self.max_recent = max(self.cfg.max_recent_frames, self.keep_maskmem, self.keep_ptrs)
        self.options = cuda or CudaOptions()
        device = model.device
        on_cuda = device.type == "cuda"
        self.async_io = on_cuda and self.options.async_io
        self.static_routing = on_cuda and self.options.static_routing
        self.graphs: Optional[StageGraphs] = None
        if on_cuda and self.options.graphs_on(model.config.autocast):
            cast = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(model.config.autocast or "")
            self.graphs = StageGraphs(device, autocast_dtype=cast)
        if encoder_stream is None and on_cuda and self.options.overlap:
            encoder_stream = SideStream(device)
        self.encoder_stream = encoder_stream
        self._imagenet = {}  # device -> (mean, std): uploaded once, not per frame (a blocking copy)

    @property
    def lookahead(self) -> bool:
        """Whether `prefetch` encodes the next frame ahead (a side stream to overlap it on)."""
        return self.encoder_stream is not None

    @property
    def device(self) -> torch.device:
        return self.model.device

    def new_shot(self, width: int, height: int, num_frames: Optional[int] = None) -> ShotState:
        return ShotState(width=int(width), height=int(height), num_frames=num_frames)

    # -- public steps -------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> EncodedFrame:
        """Upload `image` and run the image encoder; with a side stream this only enqueues the work
        there (returns at once), and the add_keyframe/track call that takes the frame waits for it
        on the device."""
        def work():
            plate = self._upload(image)
            return plate, self._features(plate)
        return (self.encoder_stream or INLINE).submit(work)

    def prefetch(self, frames: Iterable[int], read: Callable[[int], np.ndarray]) -> Iterator[tuple[int, Image]]:
        """(frame, image) for `frames` in order, `read(frame)` giving the pixels. With `lookahead`,
        frame i + 1 is read and its encoder enqueued before frame i is handed over, so the encoder
        runs while frame i decodes; an error reading frame i + 1 is raised only after frame i was
        handed over (its result is not lost). Without, each frame is read when it is due."""
        if not self.lookahead:
            for frame in frames:
                yield frame, read(frame)
            return
        it = iter(frames)

        def ahead() -> Optional[tuple[int, EncodedFrame]]:
            frame = next(it, None)
            return None if frame is None else (frame, self.encode(read(frame)))

        pending = ahead()
        while pending is not None:
            try:
                following = ahead()
            except Exception:
                yield pending
                raise
            yield pending
            pending = following

    @torch.inference_mode()
    def add_keyframe(self, state: ShotState, index: int, image: Image, prompt: Prompt, *,
                     reverse: bool = False) -> FrameOutput:
        """Decode `prompt` on frame `index` and make it a conditioning frame (re-track from here)."""
        state.reverse = reverse
        self.drop_from(state, index)
        plate, feats = self._encoded(image)
        points, mask_inputs, prev_logits = self._prompt_inputs(state, prompt)
        is_init = not state.cond
        out = self._step(state, index, feats, is_init=is_init, points=points, mask_inputs=mask_inputs,
                         prev_logits=prev_logits, run_mem_encoder=False)
        # sam2 encodes an interacted frame's memory from its low-res mask, upsampled and binarised
        high = F.interpolate(out["pred_masks"], size=(self.sam.image_size,) * 2, mode="bilinear", align_corners=False)
        mem, pos = self.sam._encode_new_memory(feats[2], feats[4], high, out["object_score_logits"], True)
        memory = self._memory(state, index, out, mem, pos)
        state.cond[index] = memory
        state.recent.pop(index, None)
        state.last_index = index
        return self._frame_output(state, index, plate, out)

    @torch.inference_mode()
    def track(self, state: ShotState, index: int, image: Image) -> FrameOutput:
        """Track frame `index` (no prompt) from the bank, in the state's direction."""
        if not state.cond:
            raise RuntimeError("no keyframe yet: call add_keyframe before tracking")
        if index in state.cond:
            raise ValueError(f"frame {index} is a keyframe; use add_keyframe to change it")
        plate, feats = self._encoded(image)
        out = self._step(state, index, feats, is_init=False, points=None, mask_inputs=None, prev_logits=None,
                         run_mem_encoder=True)
        memory = self._memory(state, index, out, out["maskmem_features"], out["maskmem_pos_enc"])
        state.recent.pop(index, None)
        state.recent[index] = memory
        self._evict(state)
        state.last_index = index
        return self._frame_output(state, index, plate, out)

    def drop_from(self, state: ShotState, index: int) -> None:
        """Forget every memory at or beyond `index` in the state's direction (cond frames too)."""
        beyond = (lambda i: i <= index) if state.reverse else (lambda i: i >= index)
        for bank in (state.cond, state.recent):
            for i in [i for i in bank if beyond(i)]:
                del bank[i]

    # -- internals ----------------------------------------------------------------------------
    def _encoded(self, image: Image):
        """(plate, features) of a frame given as pixels or as `encode`'s result."""
        if isinstance(image, Submitted):
            return (self.encoder_stream or INLINE).join(image)
        plate = self._upload(image)
        return plate, self._features(plate)

    def _upload(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) image -> (1, 3, H, W) float32 on the model's device: uploaded once per frame for
        both the encoder and the matter (on the CPU it stays a view of the array; on CUDA with
        async_io it goes through pinned memory without a host wait)."""
        img = np.asarray(image, dtype=np.float32)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) image, got {img.shape}")
        if self.async_io:
            return upload(img, self.device)
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].to(self.device)

    def _features(self, image: np.ndarray | torch.Tensor):
        x = image if isinstance(image, torch.Tensor) else self._upload(image)  # (1, 3, H, W)
        s = self.sam.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        if x.device not in self._imagenet:
            self._imagenet[x.device] = IMAGENET_MEAN.to(x.device), IMAGENET_STD.to(x.device)
        mean, std = self._imagenet[x.device]
        x = (x - mean) / std
        with self.model.autocast():
            backbone_out = self.sam.forward_image(x)
        _, vision_feats, vision_pos, feat_sizes = self.sam._prepare_backbone_features(backbone_out)
        return x, backbone_out, vision_feats, vision_pos, feat_sizes

    def _prompt_inputs(self, state: ShotState, prompt: Prompt):
        s, w, h = self.sam.image_size, state.width, state.height
        coords, labels = [], []
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            coords += [(x0, y0), (x1, y1)]
            labels += [2, 3]
        for p in prompt.points:
            coords.append((p.x, p.y))
            labels.append(1 if p.label == FOREGROUND else 0 if p.label == BACKGROUND else -1)
        mask_inputs = prev_logits = None
        if prompt.mask is not None:
            m = torch.from_numpy(np.asarray(prompt.mask, np.float32))[None, None].to(self.device)
            m = F.interpolate(m, size=(s, s), mode="bilinear", align_corners=False, antialias=True) >= 0.5
            if coords:  # points/box win; the mask goes in as the previous-logits hint
                low = F.interpolate(m.float() * 20 - 10, size=(s // 4, s // 4), mode="bilinear",
                                    align_corners=False, antialias=True)
                prev_logits = low
            else:
                mask_inputs = m
        points = None
        if coords:
            # prompt pixels (centre of pixel i at i + 0.5) -> sam2's model pixels (centre at integer)
            xy = torch.tensor(coords, dtype=torch.float32) * torch.tensor([s / w, s / h]) - 0.5
            points = {"point_coords": xy[None].to(self.device),
                      "point_labels": torch.tensor(labels, dtype=torch.int32)[None].to(self.device)}
        return points, mask_inputs, prev_logits

    def _output_dict(self, state: ShotState) -> dict:
        """sam2's memory-bank view of the typed state (built per frame, nothing copied)."""
        def view(m: FrameMemory) -> dict:
            return {"maskmem_features": m.maskmem_features, "maskmem_pos_enc": state.maskmem_pos_enc,
                    "obj_ptr": m.obj_ptr, "pred_masks": m.pred_masks}
        return {"cond_frame_outputs": {i: view(m) for i, m in state.cond.items()},
                "non_cond_frame_outputs": {i: view(m) for i, m in state.recent.items()}}

    def _step(self, state, index, feats, *, is_init, points, mask_inputs, prev_logits, run_mem_encoder) -> dict:
        _, _, vision_feats, vision_pos, feat_sizes = feats
        num_frames = state.num_frames if state.num_frames is not None else self.sam.max_obj_ptrs_in_encoder
        with self.model.autocast():
            return self.sam.track_step(
                frame_idx=index, is_init_cond_frame=is_init, current_vision_feats=vision_feats,
                current_vision_pos_embeds=vision_pos, feat_sizes=feat_sizes, point_inputs=points,
                mask_inputs=mask_inputs, output_dict=self._output_dict(state), num_frames=max(num_frames, 1),
                track_in_reverse=state.reverse, run_mem_encoder=run_mem_encoder,
                prev_sam_mask_logits=prev_logits, graphs=self.graphs)

    def _memory(self, state: ShotState, index: int, out: dict, mem: torch.Tensor, pos) -> FrameMemory:
        store = torch.device("cpu") if self.cfg.offload_memory_to_cpu else self.device
        if state.maskmem_pos_enc is None and pos is not None:
            state.maskmem_pos_enc = [p[0:1].clone() for p in pos]
        # an offloaded memory goes down without a host wait (into pinned memory): only the device reads
        # it again, through a copy enqueued after this one on the same stream
        down = self.async_io and store.type == "cpu"
        return FrameMemory(index=index, obj_ptr=out["obj_ptr"].float(),
                           object_score_logits=out["object_score_logits"].float(),
                           pred_masks=out["pred_masks"].float().to(store, non_blocking=down),
                           maskmem_features=mem.to(self.storage_dtype).to(store, non_blocking=down))

    def _evict(self, state: ShotState) -> None:
        """Keep the bank bounded: the newest `max_recent` non-cond frames (all with mask memory, so a
        re-track from a recent keyframe still finds the frames sam2 would read)."""
        while len(state.recent) > self.max_recent:
            state.recent.popitem(last=False)

    def _frame_output(self, state: ShotState, index: int, plate: torch.Tensor, out: dict) -> FrameOutput:
        h, w = state.height, state.width
        low = out["pred_masks"].float()  # (1, 1, S/4, S/4)
        mask = torch.sigmoid(F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False))
        tri_logits = out.get("trimap_logits")
        if tri_logits is not None:
            up = F.interpolate(tri_logits.float(), size=(h, w), mode="bilinear", align_corners=False)
            trimap = up.argmax(dim=1, keepdim=True).float() * 0.5  # classes 0/1/2 -> 0/0.5/1
        else:
            trimap = trimap_from_mask(mask, band=max(1, round(0.01 * (h * h + w * w) ** 0.5)))
        alpha_t = None
        if self.run_matter:
            with self.model.autocast():
                alpha_t = self.model.matter(self.model.matter.normalise(plate), trimap,
                                            static_routing=self.static_routing)
        if self.async_io:  # one host wait for everything the frame hands out
            planes = [mask[0, 0], trimap[0, 0]] + ([] if alpha_t is None else [alpha_t.float()[0, 0].clamp(0, 1)])
            (mask_np, trimap_np, *alpha_np), (score,) = HostCopy(planes, [out["object_score_logits"]]).result()
            alpha = alpha_np[0] if alpha_np else None
        else:
            alpha = None if alpha_t is None else alpha_t.float()[0, 0].clamp(0, 1).cpu().numpy()
            mask_np = mask[0, 0].cpu().numpy().astype(np.float32)
            trimap_np = trimap[0, 0].cpu().numpy().astype(np.float32)
            score = float(out["object_score_logits"].flatten()[0])
        return FrameOutput(index=index, mask=mask_np, trimap=trimap_np, alpha=alpha, mask_logits=low,
                           trimap_logits=tri_logits, object_score=score)
