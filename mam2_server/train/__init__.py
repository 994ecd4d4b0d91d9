"""Two-stage MAM2 training with the paper's selective supervision (sec. 3.2, A.2, A.5).

* `losses`: L_mask, L_trimap (Normalized Focal Loss), L_alpha, the router keep-ratio
  regulariser and `stage_loss` (eq. 1 / 2);
* `data`: synthetic IM / VM / VOS samples from `mam2_server.synth` clips;
* `forward`: training forwards (video path for stage 1, matter for stage 2);
* `loop`: `freeze_for_stage`, `train_step`, `train`, training checkpoints.

`mam2 train` (mam2_server.cli.train) is the command-line entry point.
"""
