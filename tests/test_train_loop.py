"""Two-stage training on the tiny config (CPU): freezing, overfitting a fixed batch, the CLI."""
import csv

import pytest
import torch

from mam2_server.cli import main
from mam2_server.model.build import build_mam2
from mam2_server.model.checkpoint import load_model
from mam2_server.train.data import SyntheticMattingData
from mam2_server.train.loop import evaluate_loss, freeze_for_stage, train_step
from mam2_server.train.run import TrainSettings, lr_factor
from mam2_server.train.state import load_training_checkpoint

S = 128  # tiny config's image_size


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _snapshot(model, prefix):
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith(prefix)}


def _changed(model, before):
    params = dict(model.named_parameters())
    return {n for n, v in before.items() if not torch.equal(params[n].detach(), v)}


def test_freeze_for_stage_parameter_groups():
    model = build_mam2("tiny", seed=0)
    names = {n for n, _ in model.named_parameters()}
    lora = {n for n in names if n.endswith((".lora_A", ".lora_B"))}
    assert lora and all(n.startswith("sam.image_encoder.") for n in lora)

    params = freeze_for_stage(model, 1)
    main_names = _trainable(model)
    assert {id(p) for p in params} == {id(p) for p in model.parameters() if p.requires_grad}
    assert not any(n.startswith("matter.") for n in main_names)
    assert {n for n in main_names if n.startswith("sam.image_encoder.")} == lora  # base weights frozen
    expected_main = {n for n in names if n.startswith("sam.") and (not n.startswith("sam.image_encoder.") or n in lora)}
    assert main_names == expected_main
    for group in ("sam.sam_mask_decoder.trimap_tokens.", "sam.sam_mask_decoder.iou_prediction_head.",
                  "sam.memory_attention.", "sam.memory_encoder.", "sam.sam_prompt_encoder.", "sam.obj_ptr_proj."):
        assert any(n.startswith(group) for n in main_names), group
    assert model.sam.training and not model.matter.training

    freeze_for_stage(model, 2)
    assert _trainable(model) == {n for n in names if n.startswith("matter.")}
    assert model.matter.training and not model.sam.training
    with pytest.raises(ValueError, match="stage"):
        freeze_for_stage(model, 3)


def _one_of_each(frames=2):
    out = []
    for kind in ("VOS", "VM", "IM"):
        out.append(SyntheticMattingData(image_size=S, frames=frames, ratios={kind: 1.0}, seed=3)[0])
    return out


def test_stage1_overfits_a_fixed_batch_and_only_moves_main_parameters():
    torch.manual_seed(0)
    model = build_mam2("tiny", seed=0)
    batch = _one_of_each()
    assert [s.kind for s in batch] == ["VOS", "VM", "IM"] and batch[2].images.shape == (1, 3, S, S)
    optimizer = torch.optim.AdamW(freeze_for_stage(model, 1), lr=1e-3)
    frozen = {**_snapshot(model, "matter."), **_snapshot(model, "sam.image_encoder.trunk.blocks.0.attn.qkv.weight")}
    lora = _snapshot(model, "sam.image_encoder.trunk.blocks.0.attn.qkv.lora_B")
    initial = evaluate_loss(model, batch, 1)
    for _ in range(12):
        result = train_step(model, batch, 1, optimizer)
        assert result.active == 3 and {"trimap", "mask/mask"} <= set(result.parts)
    final = evaluate_loss(model, batch, 1)
    assert final < 0.8 * initial, (initial, final)
    assert not _changed(model, frozen)
    assert _changed(model, lora)  # the encoder adapts through LoRA


def test_stage2_overfits_image_matting_and_skips_other_kinds():
    torch.manual_seed(0)
    model = build_mam2("tiny", seed=0)
    data = SyntheticMattingData(image_size=S, ratios={"IM": 1.0}, seed=5)
    batch = [data[0], data[1]]
    optimizer = torch.optim.AdamW(freeze_for_stage(model, 2), lr=2e-3)
    sam = _snapshot(model, "sam.")
    initial = evaluate_loss(model, batch, 2)
    for _ in range(15):
        result = train_step(model, batch, 2, optimizer)
        assert result.active == 2 and "alpha/l1_unknown" in result.parts and "keep_ratio" in result.parts
    final = evaluate_loss(model, batch, 2)
    assert final < 0.8 * initial, (initial, final)
    assert not _changed(model, sam)
    # eq. (2): a batch without image matting samples is skipped, nothing moves
    matter = _snapshot(model, "matter.")
    vos = SyntheticMattingData(image_size=S, frames=2, ratios={"VOS": 1.0, "VM": 1.0}, seed=5)
    result = train_step(model, [vos[0], vos[1]], 2, optimizer)
    assert result.active == 0 and not _changed(model, matter)


SMALL = ["--data", "synthetic", "--batch", "image_seg=1", "--batch", "image_matting=1", "--frames", "video_seg=2",
         "--frames", "video_matting=2", "--quiet"]


def _csv_steps(path):
    with open(path, newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_cli_train_writes_loadable_checkpoints_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--stage", "1", "--steps", "2", "--out", str(out), *SMALL]) == 0
    assert "stage 1 steps 1-2" in capsys.readouterr().out
    model, report = load_model(out / "stage1_last.safetensors", device="cpu")
    assert report is None and model.config.name == "tiny"
    _, meta, optim = load_training_checkpoint(out / "stage1_last.safetensors")
    assert meta["train_step"] == "2" and meta["train_stage"] == "1" and optim is not None

    resume = ["train", "--stage", "1", "--steps", "3", "--out", str(out), *SMALL,
              "--resume", str(out / "stage1_last.safetensors")]
    assert main(resume) == 0
    assert "steps 3-3" in capsys.readouterr().out
    _, meta, _ = load_training_checkpoint(out / "stage1_last.safetensors")
    assert meta["train_step"] == "3" and (out / "stage1_step_000003.safetensors").is_file()
    assert _csv_steps(out / "train_log.csv") == [1, 2, 3]

    # stage 2 starts from the stage 1 weights with --init, in the same folder without touching them
    assert main(["train", "--stage", "2", "--steps", "1", "--out", str(out), *SMALL,
                 "--init", str(out / "stage1_last.safetensors")]) == 0
    assert load_training_checkpoint(out / "stage1_last.safetensors")[1]["train_stage"] == "1"
    assert load_training_checkpoint(out / "stage2_last.safetensors")[1]["train_stage"] == "2"
    capsys.readouterr()
    assert main(["train", "--stage", "3", "--steps", "1", "--out", str(tmp_path / "x")]) == 2
    assert "--stage must be 1 or 2" in capsys.readouterr().err
    assert main(["train", "--stage", "1", "--steps", "1", "--out", str(tmp_path / "x"),
                 "--resume", str(tmp_path / "missing.safetensors")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert main(["train", "--stage", "2", "--steps", "9", "--out", str(tmp_path / "x"),
                 "--resume", str(out / "stage1_last.safetensors")]) == 1  # stage mismatch (CheckpointError)
    assert "cannot resume stage 2" in capsys.readouterr().err
    assert main(["train", "--stage", "1", "--steps", "1", "--out", str(tmp_path / "x"), "--data", "depth=/x"]) == 2
    assert "KIND" in capsys.readouterr().err
    (out / "stage1_step_000002.optim.pt").unlink()
    assert main(["train", "--stage", "1", "--steps", "5", "--out", str(out), "--quiet",
                 "--resume", str(out / "stage1_step_000002.safetensors")]) == 1
    assert "optimizer state" in capsys.readouterr().err


def test_learning_rate_schedule():
    s = TrainSettings(stage=1, steps=101, lr=4e-4, warmup_steps=10, min_lr_ratio=0.01)
    factors = [lr_factor(s, i) for i in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0) and factors[10] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(0.01) and all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert lr_factor(TrainSettings(stage=2, steps=5, lr=1e-3, schedule="constant"), 4) == 1.0
