"""The MAM2 network on top of the `sam2` package (imports torch and sam2 only when a submodule is used).

* `config`: MAM2Config / PDDConfig / LoRAConfig / MatterConfig / TrackerConfig and presets
  (`tiny` for tests, `hiera_t`, `hiera_s`, `hiera_b+`, `hiera_l`);
* `pdd`: Promptable Dual-mode Decoder (sam2 `MaskDecoder` subclass with a trimap head);
* `mss`: `MAM2Base` (sam2 `SAM2Base` subclass): PDD heads + Memory-Separable Siamese pass;
* `lora`: mergeable LoRA for the image encoder's attention;
* `matter_vit`, `matter`: MEMatte-style trimap-based matter (routed ViT + detail capture, tiled);
* `build`: `build_mam2(config)` -> `MAM2Model` (sam + matter);
* `checkpoint`: official SAM2.1 `.pt` loading, MAM2 safetensors save/load, `make-tiny`;
* `tracker`: `StreamingTracker` with typed, bounded per-shot state;
* `runtime`, `cuda_graphs`: how the tracker runs on CUDA (speed options, the encoder's side stream,
  pinned host copies, CUDA graphs of the small stages), all off on the CPU.
"""
