"""Streaming tracker and checkpoints on the tiny random-weight config (CPU)."""
import numpy as np
import pytest
import torch

from mam2_server.model.build import build_mam2
from mam2_server.model.checkpoint import (CheckpointError, load_mam2, load_model, load_official_sam2,
                                          save_mam2)
from mam2_server.model.config import LoRAConfig, PDDConfig, preset
from mam2_server.model.tracker import StreamingTracker
from mam2_server.prompts import Point, Prompt

S = 128  # tiny config's image_size


def _frames(n, h=S, w=S, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        img = 0.3 + 0.2 * rng.random((h, w, 3))
        img[(xx - 0.3 * w - 4 * i) ** 2 + (yy - 0.45 * h) ** 2 < (0.15 * min(h, w)) ** 2] = (0.9, 0.2, 0.1)
        out.append(img.astype(np.float32))
    return out


@pytest.fixture(scope="module")
def sam2_only():
    cfg = preset("tiny").replace(pdd=PDDConfig(enabled=False), lora=LoRAConfig(rank=0))
    return build_mam2(cfg, seed=0)


@pytest.fixture(scope="module")
def tiny():
    return build_mam2("tiny", seed=1)


def test_parity_with_sam2_video_predictor(sam2_only, tmp_path):
    """MAM2 parts off: the streaming tracker's masks equal SAM2VideoPredictor's (tolerance 1e-5 on logits)."""
    from PIL import Image
    from sam2.build_sam import build_sam2_video_predictor

    cfg = sam2_only.config
    pred = build_sam2_video_predictor(cfg.sam2_config, device="cpu",
                                      hydra_overrides_extra=[f"++model.image_size={S}", *cfg.sam2_overrides])
    pred.load_state_dict(sam2_only.sam.state_dict(), strict=True)
    pred.fill_hole_area = 0
    n = 5
    frames = []
    for i, img in enumerate(_frames(n)):
        Image.fromarray((img * 255).astype(np.uint8)).save(tmp_path / f"{i}.jpg", quality=95)
        frames.append(np.asarray(Image.open(tmp_path / f"{i}.jpg").convert("RGB"), np.float32) / 255)
    state = pred.init_state(str(tmp_path))
    pred.add_new_points_or_box(state, 0, 1, points=[[38, 58], [100, 20]], labels=[1, 0], box=[20, 40, 60, 80])
    ref = {f: masks[0, 0] for f, _, masks in pred.propagate_in_video(state)}

    tracker = StreamingTracker(sam2_only, run_matter=False)
    shot = tracker.new_shot(S, S, num_frames=n)
    # prompt pixels have their centres at i + 0.5; sam2's at i
    prompt = Prompt(frame=0, box=(20.5, 40.5, 60.5, 80.5), points=(Point(38.5, 58.5, 1), Point(100.5, 20.5, 0)))
    outs = [tracker.add_keyframe(shot, 0, frames[0], prompt)] + [tracker.track(shot, i, frames[i])
                                                               for i in range(1, n)]
    for i, out in enumerate(outs):
        mine = torch.nn.functional.interpolate(out.mask_logits, size=(S, S), mode="bilinear", align_corners=False)
        torch.testing.assert_close(mine[0, 0], ref[i], rtol=0, atol=1e-5)
        assert ((mine[0, 0] > 0) == (ref[i] > 0)).all()


def test_memory_bank_is_bounded(tiny):
    tracker = StreamingTracker(tiny, run_matter=False)
    frames = _frames(2)
    shot = tracker.new_shot(S, S)
    tracker.add_keyframe(shot, 0, frames[0], Prompt(frame=0, box=(20, 40, 60, 80)))
    sizes = []
    for i in range(1, 25):
        tracker.track(shot, i, frames[i % 2])
        sizes.append((shot.bank_size(), shot.nbytes()))
    assert sizes[-1] == sizes[-5] == sizes[18]  # flat once the window is full
    n_cond, n_recent = shot.bank_size()
    assert n_cond == 1 and n_recent == tracker.max_recent
    assert max(shot.recent) == 24 and min(shot.recent) == 24 - tracker.max_recent + 1


def test_corrected_keyframe_stays_conditioning_and_retracks(tiny):
    tracker = StreamingTracker(tiny, run_matter=False)
    frames = _frames(8)
    shot = tracker.new_shot(S, S, num_frames=8)
    tracker.add_keyframe(shot, 0, frames[0], Prompt(frame=0, box=(20, 40, 60, 80)))
    for i in range(1, 8):
        tracker.track(shot, i, frames[i])
    tracker.add_keyframe(shot, 4, frames[4], Prompt(frame=4, points=(Point(40, 60),)))
    assert sorted(shot.cond) == [0, 4]
    assert max(shot.recent) < 4  # memory after the corrected keyframe was dropped
    for i in range(5, 8):
        tracker.track(shot, i, frames[i])
    assert sorted(shot.cond) == [0, 4]


@pytest.mark.parametrize("hw", [(37, 53), (61, 45)])
def test_odd_sizes_one_frame_and_last_frame_prompts(tiny, hw):
    h, w = hw
    tracker = StreamingTracker(tiny)
    frames = _frames(3, h, w)
    # one-frame shot, mask prompt
    shot = tracker.new_shot(w, h, num_frames=1)
    mask = np.zeros((h, w), np.float32)
    mask[h // 4: h // 2, w // 4: w // 2] = 1
    out = tracker.add_keyframe(shot, 0, frames[0], Prompt(frame=0, mask=mask))
    assert out.mask.shape == out.trimap.shape == out.alpha.shape == (h, w)
    assert set(np.unique(out.trimap)) <= {0.0, 0.5, 1.0}
    assert np.isfinite(out.alpha).all() and out.alpha.min() >= 0 and out.alpha.max() <= 1
    # prompt on the last frame, tracked backwards
    shot = tracker.new_shot(w, h, num_frames=3)
    tracker.add_keyframe(shot, 2, frames[2], Prompt(frame=2, points=(Point(w * 0.3, h * 0.45),)), reverse=True)
    for i in (1, 0):
        out = tracker.track(shot, i, frames[i])
        assert out.alpha.shape == (h, w)


def test_official_checkpoint_round_trip(tmp_path):
    from sam2.build_sam import build_sam2

    cfg = preset("tiny")
    torch.manual_seed(5)
    ref = build_sam2(cfg.sam2_config, device="cpu",
                     hydra_overrides_extra=[f"++model.image_size={S}", *cfg.sam2_overrides])
    path = tmp_path / "official.pt"
    torch.save({"model": ref.state_dict()}, path)

    model = build_mam2(cfg.replace(pdd=PDDConfig(enabled=False)), seed=9)  # LoRA on (B = 0)
    report = load_official_sam2(model, path)
    assert report.new_initialised and all(".lora_" in k for k in report.new_initialised)
    x = torch.randn(1, 3, S, S)
    with torch.no_grad():
        a, b = ref.forward_image(x), model.sam.forward_image(x)
    for u, v in zip(a["backbone_fpn"], b["backbone_fpn"]):
        torch.testing.assert_close(u, v, rtol=0, atol=0)
    # with the PDD on, its new parts are the only other missing keys
    full = build_mam2(cfg, seed=9)
    rep = load_official_sam2(full, path)
    assert any(k.startswith("sam_mask_decoder.trimap_") for k in rep.new_initialised)

    sd = dict(ref.state_dict())
    bad = tmp_path / "bad.pt"
    torch.save({"model": {**sd, "some.extra.weight": torch.zeros(1)}}, bad)
    with pytest.raises(CheckpointError, match="unexpected key.*some.extra.weight"):
        load_official_sam2(full, bad)
    sd.pop("memory_encoder.fuser.layers.0.gamma")
    torch.save({"model": sd}, bad)
    with pytest.raises(CheckpointError, match="missing SAM2 key"):
        load_official_sam2(full, bad)
    with pytest.raises(CheckpointError, match="sam2.1_hiera_tiny.pt"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="--checkpoint"):
        load_model(None)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(tmp_path / "junk.pt", config=cfg)


def test_mam2_safetensors_round_trip(tiny, tmp_path):
    path = save_mam2(tiny, tmp_path / "m.safetensors")
    again = load_mam2(path)
    assert again.config == tiny.config
    frames = _frames(3, 40, 56)
    outs = []
    for m in (tiny, again):
        tr = StreamingTracker(m)
        shot = tr.new_shot(56, 40, num_frames=3)
        o = [tr.add_keyframe(shot, 0, frames[0], Prompt(frame=0, box=(10, 10, 30, 30)))]
        o += [tr.track(shot, i, frames[i]) for i in (1, 2)]
        outs.append(o)
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.trimap, b.trimap)
        np.testing.assert_array_equal(a.alpha, b.alpha)
