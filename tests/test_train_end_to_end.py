"""Both stages on fixtures of all four data types (from SAM2.1 and DINO files), resumed once; the result mattes."""
import csv

import numpy as np
import pytest

import dataset_layouts as L
from mam2_server.cli import main
from mam2_server.io.image import read_image, write_image
from mam2_server.train.state import load_training_checkpoint
from test_train_init import write_dino, write_sam21

pytestmark = pytest.mark.slow


def test_two_stages_on_all_four_kinds_resume_and_matte(tmp_path, capsys):
    paths = L.write_all_kinds(tmp_path / "data")
    data = [arg for k in ("image_seg", "image_matting", "video_seg", "video_matting")
            for arg in ("--data", f"{k}={paths[k]}")]
    small = ["--batch", "image_seg=2", "--batch", "image_matting=2", "--frames", "video_seg=2", "--frames",
             "video_matting=2", "--backgrounds", str(paths["backgrounds"]), "--quiet", "--seed", "1"]
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    sam21 = write_sam21(tmp_path / "sam2.1_test.pt")
    write_dino(tmp_path / "dino_vits16.pth")

    assert main(["train", "--stage", "1", "--steps", "4", "--save-every", "2", "--out", str(s1), "--init", str(sam21),
                 "--config", "tiny", *data, *small]) == 0
    out = capsys.readouterr().out
    for kind in ("image_seg", "image_matting", "video_seg", "video_matting"):
        assert f"{kind}: p=0.250" in out and str(paths[kind]) in out
    # resume from the middle of the run into a second folder: it ends on the same weights
    assert main(["train", "--stage", "1", "--steps", "4", "--out", str(tmp_path / "s1b"), *data, *small,
                 "--resume", str(s1 / "stage1_step_000002.safetensors")]) == 0
    a = load_training_checkpoint(s1 / "stage1_last.safetensors")[0].state_dict()
    b = load_training_checkpoint(tmp_path / "s1b" / "stage1_last.safetensors")[0].state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    with open(s1 / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    kinds = {k for r in rows for k in ("image_seg", "image_matting", "video_seg", "video_matting") if r[f"loss_{k}"]}
    assert kinds and all(np.isfinite(float(r["loss"])) for r in rows)

    assert main(["train", "--stage", "2", "--steps", "2", "--out", str(s2), "--init",
                 str(s1 / "stage1_last.safetensors"), "--init-matter", str(tmp_path / "dino_vits16.pth"),
                 "--data", f"image_matting={paths['image_matting']}", *small]) == 0
    assert "DINO ViT" in capsys.readouterr().out

    # the stage 2 checkpoint is what `mam2 matte --engine mam2` loads
    (tmp_path / "shot").mkdir()
    for t in range(3):
        img, _ = L.photo(t, 0)
        linear = (img.astype(np.float32) / 255.0) ** 2.2
        write_image(tmp_path / "shot" / f"plate.{1001 + t:04d}.exr", linear, channels=("R", "G", "B"))
    assert main(["matte", str(tmp_path / "shot" / "plate.####.exr"), "-o", str(tmp_path / "out" / "alpha.####.exr"),
                 "--engine", "mam2", "--checkpoint", str(s2 / "stage2_last.safetensors"), "--device", "cpu",
                 "--box", "10,10,70,60", "--quiet"]) == 0
    for t in range(3):
        alpha = read_image(tmp_path / "out" / f"alpha.{1001 + t:04d}.exr").pixels
        assert alpha.shape[:2] == (L.H, L.W) and np.isfinite(alpha).all()
